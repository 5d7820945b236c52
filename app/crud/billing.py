"""Lemon Squeezy subscription webhooks -> the account's plan.

Every event is stored under its id (or the digest of its body when it carries none), so a
redelivered event changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.schemas.account import BillingEventResult
from common.accounting import default_plan
from common.config import Settings
from common.models import Plan, User, WebhookEvent

log = logging.getLogger(__name__)
PROVIDER = "lemonsqueezy"
ACTIVE_STATUSES = {"active", "on_trial", "past_due"}
ENDED_STATUSES = {"expired", "unpaid"}
SUBSCRIPTION_EVENTS = {
    "subscription_created",
    "subscription_updated",
    "subscription_cancelled",
    "subscription_resumed",
    "subscription_expired",
    "subscription_paused",
    "subscription_unpaused",
}


class BadEvent(ValueError):
    """The body is not a Lemon Squeezy event."""


def event_identity(payload: dict[str, Any], raw: bytes) -> tuple[str, str]:
    meta = payload.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("event_name"), str):
        raise BadEvent("not a Lemon Squeezy event: meta.event_name is missing")
    event_id = meta.get("event_id") or meta.get("webhook_event_id") or hashlib.sha256(raw).hexdigest()
    return str(event_id)[:128], meta["event_name"][:64]


def handle(session: Session, settings: Settings, payload: dict[str, Any], raw: bytes) -> BillingEventResult:
    event_id, event_name = event_identity(payload, raw)
    inserted = session.execute(
        insert(WebhookEvent)
        .values(provider=PROVIDER, event_id=event_id, event_name=event_name, payload=payload)
        .on_conflict_do_nothing()
        .returning(WebhookEvent.event_id)
    ).first()
    if inserted is None:
        return BillingEventResult(status="duplicate", detail=f"event {event_id} was already processed")
    if event_name in SUBSCRIPTION_EVENTS:
        result = _subscription(session, settings, event_name, payload)
    else:
        result = BillingEventResult(status="ignored", detail=f"{event_name} does not change plans")
    event = session.get(WebhookEvent, (PROVIDER, event_id))
    if event is not None:
        event.outcome = f"{result.status}: {result.detail or ''}"[:1000]
    session.commit()
    log.info("lemonsqueezy %s %s -> %s (%s)", event_name, event_id, result.status, result.detail)
    return result


def _subscription(session: Session, settings: Settings, event_name: str, payload: dict[str, Any]) -> BillingEventResult:
    data = payload.get("data")
    attrs = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(attrs, dict):
        raise BadEvent("subscription event without data.attributes")
    user = _find_user(session, payload, attrs)
    if user is None:
        return BillingEventResult(status="ignored", detail="no account matches the event's user_id or user_email")
    status = str(attrs.get("status") or "")
    if event_name == "subscription_expired" or status in ENDED_STATUSES:
        plan, expires = default_plan(session), None
    else:
        plan_or_none = _plan_for(session, settings, attrs)
        if plan_or_none is None:
            return BillingEventResult(
                status="ignored",
                detail=f"variant {attrs.get('variant_id')} maps to no plan (LEMONSQUEEZY_VARIANT_PLANS)",
            )
        plan = plan_or_none
        expires = None
        if event_name == "subscription_cancelled" or status == "cancelled":
            # paid until the end of the period; then back to the default plan
            expires = _parse_time(attrs.get("ends_at")) or datetime.now(UTC)
        elif status not in ACTIVE_STATUSES and status != "paused":
            return BillingEventResult(status="ignored", detail=f"subscription status {status!r} changes nothing")
        if status == "paused":
            plan = default_plan(session)
    user.plan_id = plan.id
    user.plan_expires_at = expires
    user.subscription_id = str(data.get("id") or "")[:64] or None
    user.subscription_status = status[:32] or None
    until = f" until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
    return BillingEventResult(status="processed", detail=f"{user.email} is on {plan.name}{until}")


def _find_user(session: Session, payload: dict[str, Any], attrs: dict[str, Any]) -> User | None:
    custom = payload.get("meta", {}).get("custom_data")
    if isinstance(custom, dict) and custom.get("user_id"):
        try:
            user = session.get(User, uuid.UUID(str(custom["user_id"])))
        except ValueError:
            user = None
        if user is not None:
            return user
    email = attrs.get("user_email")
    if isinstance(email, str) and email:
        return session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    return None


def _plan_for(session: Session, settings: Settings, attrs: dict[str, Any]) -> Plan | None:
    name = settings.lemonsqueezy_variant_plans.get(str(attrs.get("variant_id")))
    candidates = [name] if name else [str(attrs.get(k) or "").strip().lower() for k in ("variant_name", "product_name")]
    for candidate in candidates:
        if candidate:
            plan = session.scalar(select(Plan).where(Plan.name == candidate))
            if plan is not None:
                return plan
    return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
