"""Lemon Squeezy webhook: subscription events change the account's plan."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from app.crud import billing
from app.schemas.account import BillingEventResult
from app.schemas.common import error_responses
from common.config import get_settings
from common.db import session_scope
from common.signing import verify_lemonsqueezy

router = APIRouter(prefix="/billing", tags=["billing"])


@router.post(
    "/lemonsqueezy",
    response_model=BillingEventResult,
    operation_id="lemonsqueezy_webhook",
    responses=error_responses(400, 401, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "A Lemon Squeezy webhook event, signed with X-Signature",
        },
        "parameters": [
            {
                "name": "X-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "Hex HMAC-SHA256 of the raw body with the signing secret",
            }
        ],
    },
)
async def lemonsqueezy_webhook(request: Request) -> BillingEventResult:
    """Checked with LEMONSQUEEZY_SIGNING_SECRET; a bad signature changes nothing. Events
    are idempotent on their id, so redeliveries answer ``duplicate``."""
    settings = get_settings()
    if settings.lemonsqueezy_signing_secret is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "billing webhooks are not configured on this server")
    raw = await request.body()
    secret = settings.lemonsqueezy_signing_secret.get_secret_value()
    if not verify_lemonsqueezy(secret, raw, request.headers.get("X-Signature")):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or missing X-Signature")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not a JSON object")

    def process() -> BillingEventResult:
        with session_scope(settings) as session:
            return billing.handle(session, settings, payload, raw)

    try:
        return await run_in_threadpool(process)
    except billing.BadEvent as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
