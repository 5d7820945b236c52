"""Lemon Squeezy webhooks: signature checked, idempotent on event id, plans follow the
subscription; a bad signature changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from svc_helpers import LS_SECRET, Account, make_account

from common.db import session_scope
from common.models import User, WebhookEvent


def event(
    name: str, account: Account, variant: int | str = 1001, status: str = "active", **attrs: Any
) -> dict[str, Any]:
    return {
        "meta": {"event_name": name, "event_id": str(uuid.uuid4()), "custom_data": {"user_id": str(account.user_id)}},
        "data": {
            "type": "subscriptions",
            "id": "sub-42",
            "attributes": {"variant_id": variant, "status": status, "user_email": account.email, **attrs},
        },
    }


def send(client: Any, payload: dict[str, Any] | bytes, secret: str = LS_SECRET, signature: str | None = None) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sig = signature if signature is not None else hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        "/api/v1/billing/lemonsqueezy", content=raw, headers={"X-Signature": sig, "Content-Type": "application/json"}
    )


def plan_of(client: Any, account: Account) -> dict[str, Any]:
    return client.get("/api/v1/account", headers=account.headers).json()


def test_subscription_lifecycle_changes_the_plan(client: Any) -> None:
    account = make_account(plan="free")
    assert plan_of(client, account)["credits"]["included"] == 100

    created = event("subscription_created", account, variant=1001)
    answer = send(client, created)
    assert answer.status_code == 200 and answer.json()["status"] == "processed"
    me = plan_of(client, account)
    assert me["plan"]["name"] == "starter" and me["credits"]["included"] == 5000
    assert me["subscription_status"] == "active"

    duplicate = send(client, created)
    assert duplicate.json()["status"] == "duplicate"

    send(client, event("subscription_updated", account, variant=1002))
    assert plan_of(client, account)["plan"]["name"] == "professional"

    ends = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    send(client, event("subscription_cancelled", account, variant=1002, status="cancelled", ends_at=ends))
    me = plan_of(client, account)
    assert me["plan"]["name"] == "professional" and me["plan_expires_at"] is not None  # paid until ends_at

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    send(client, event("subscription_cancelled", account, variant=1002, status="cancelled", ends_at=past))
    assert plan_of(client, account)["credits"]["included"] == 100  # period over: the free plan applies

    send(client, event("subscription_resumed", account, variant=1001))
    assert plan_of(client, account)["plan"]["name"] == "starter"
    send(client, event("subscription_expired", account, variant=1001, status="expired"))
    assert plan_of(client, account)["plan"]["name"] == "free"


def test_bad_or_missing_signature_changes_nothing(client: Any) -> None:
    account = make_account(plan="free")
    payload = event("subscription_created", account, variant=1002)
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(WebhookEvent))
    assert send(client, payload, secret="not-the-secret").status_code == 401
    assert send(client, payload, signature="").status_code == 401
    tampered = json.dumps(payload).encode()
    good_sig = hmac.new(LS_SECRET.encode(), tampered, hashlib.sha256).hexdigest()
    assert send(client, tampered.replace(b"1002", b"1003"), signature=good_sig).status_code == 401
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == before
        user = session.get(User, account.user_id)
        assert user is not None and user.plan.name == "free"


def test_odd_events_are_answered_clearly(client: Any) -> None:
    account = make_account(plan="free")
    assert send(client, b"not json").status_code == 400
    assert send(client, b"[1, 2]").status_code == 400
    missing = send(client, {"data": {}})
    assert missing.status_code == 400 and "event_name" in missing.json()["detail"]
    other = send(client, {"meta": {"event_name": "order_created", "event_id": str(uuid.uuid4())}})
    assert other.json()["status"] == "ignored"
    unknown_variant = send(client, event("subscription_created", account, variant=999))
    assert unknown_variant.json()["status"] == "ignored" and "999" in unknown_variant.json()["detail"]
    stranger = event("subscription_created", account)
    stranger["meta"]["custom_data"] = {}
    stranger["data"]["attributes"]["user_email"] = "nobody@example.com"
    assert send(client, stranger).json()["status"] == "ignored"
    by_email = event("subscription_created", account, variant=1002)
    by_email["meta"]["custom_data"] = {"user_id": "not-a-uuid"}
    assert send(client, by_email).json()["status"] == "processed"  # found through user_email
    assert plan_of(client, account)["plan"]["name"] == "professional"
    # events without an id are deduplicated on their body
    anonymous = event("subscription_updated", account, variant=1001)
    del anonymous["meta"]["event_id"]
    raw = json.dumps(anonymous).encode()
    assert send(client, raw).json()["status"] == "processed"
    assert send(client, raw).json()["status"] == "duplicate"
