"""Lemon Squeezy webhooks: signature checked, idempotent on event id, plans follow the
subscription; a bad signature changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select
from svc_helpers import LS_SECRET, Account, make_account, sign_in

from common.db import session_scope
from common.models import User, WebhookEvent

RUN = uuid.uuid4().hex[:8]  # named subscriptions are unique to this run (the database is shared)


def signed_custom(account: Account) -> dict[str, str]:
    """What a checkout link from the console carries for the signed-in account."""
    from app.crud.billing import checkout_custom_data
    from common.config import get_settings

    return checkout_custom_data(get_settings(), account.user_id)


def event(
    name: str,
    account: Account,
    variant: int | str = 1001,
    status: str = "active",
    subscription: str | None = None,
    custom: dict[str, str] | None = None,
    **attrs: Any,
) -> dict[str, Any]:
    return {
        "meta": {
            "event_name": name,
            "event_id": str(uuid.uuid4()),
            "custom_data": signed_custom(account) if custom is None else custom,
        },
        "data": {
            "type": "subscriptions",
            "id": subscription or f"sub-{account.user_id.hex[:12]}",  # one per account unless named
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


def at(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()


def test_an_old_subscription_ending_leaves_the_current_one_alone(client: Any) -> None:
    account = make_account(plan="free")
    old = event("subscription_created", account, variant=1001, subscription=f"sub-old-{RUN}", created_at=at(40))
    assert send(client, old).json()["status"] == "processed"
    new = event("subscription_created", account, variant=1002, subscription=f"sub-new-{RUN}", created_at=at(1))
    assert send(client, new).json()["status"] == "processed"  # a newer signed-in checkout replaces it
    assert plan_of(client, account)["plan"]["name"] == "professional"

    expired = send(client, event("subscription_expired", account, subscription=f"sub-old-{RUN}", status="expired"))
    assert expired.json()["status"] == "ignored" and f"sub-old-{RUN}" in expired.json()["detail"]
    late = event("subscription_updated", account, variant=1001, subscription=f"sub-old-{RUN}", created_at=at(40))
    assert send(client, late).json()["status"] == "ignored"  # out of order: older than sub-new
    me = plan_of(client, account)
    assert me["plan"]["name"] == "professional" and me["subscription_status"] == "active"
    with session_scope() as session:
        user = session.get(User, account.user_id)
        assert user is not None and user.subscription_id == f"sub-new-{RUN}"

    send(client, event("subscription_expired", account, subscription=f"sub-new-{RUN}", status="expired"))
    assert plan_of(client, account)["plan"]["name"] == "free"  # its own subscription still ends it


def test_a_checkout_matched_by_email_never_changes_a_paying_account(client: Any) -> None:
    victim = make_account(plan="free")
    paid = event("subscription_created", victim, variant=1002, subscription=f"sub-victim-{RUN}", created_at=at(5))
    assert send(client, paid).json()["status"] == "processed"
    # someone buys the cheap plan typing the victim's e-mail, with or without a forged user_id
    for custom in (
        {},
        {"user_id": str(victim.user_id)},
        {"user_id": str(victim.user_id), "user_sig": "0" * 64},
        {"user_id": str(victim.user_id), "user_sig": "é"},
    ):
        cheap = event("subscription_created", victim, variant=1001, subscription=f"sub-attacker-{RUN}", custom=custom)
        answer = send(client, cheap).json()
        assert answer["status"] == "ignored" and "e-mail" in answer["detail"], answer
        assert (
            send(
                client,
                {
                    **cheap,
                    "meta": {**cheap["meta"], "event_name": "subscription_expired", "event_id": str(uuid.uuid4())},
                },
            ).json()["status"]
            == "ignored"
        )
    assert plan_of(client, victim)["plan"]["name"] == "professional"

    # a plan given without a subscription is paying too
    granted = make_account(plan="professional")
    cheap = event("subscription_created", granted, variant=1001, subscription=f"sub-x-{RUN}", custom={})
    assert send(client, cheap).json()["status"] == "ignored"
    ended = event("subscription_expired", granted, subscription=f"sub-x-{RUN}", status="expired", custom={})
    assert send(client, ended).json()["status"] == "ignored"
    assert plan_of(client, granted)["plan"]["name"] == "professional"


def test_a_signature_for_another_account_does_not_carry_over(client: Any) -> None:
    mallory, victim = make_account(plan="free"), make_account(plan="professional")
    stolen = {**signed_custom(mallory), "user_id": str(victim.user_id)}  # Mallory's signature, victim's id
    answer = send(
        client, event("subscription_created", victim, variant=1001, subscription=f"sub-m-{RUN}", custom=stolen)
    )
    assert answer.json()["status"] == "ignored"
    assert plan_of(client, victim)["plan"]["name"] == "professional"
    assert plan_of(client, mallory)["plan"]["name"] == "free"


def test_console_checkout_links_carry_the_signed_in_account(
    client: Any, issuer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.config import get_settings

    monkeypatch.setenv("LEMONSQUEEZY_CHECKOUT_URLS", "professional=https://shop.example/checkout/buy/abc?embed=1")
    get_settings.cache_clear()
    try:
        assert sign_in(client, issuer, "buyer@example.com").status_code == 303
        page = client.get("/console/account")
        assert page.status_code == 200
        link = html.unescape(re.search(r'href="(https://shop\.example/[^"]+)"', page.text).group(1))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    query = parse_qs(urlsplit(link).query)
    assert query["embed"] == ["1"] and query["checkout[email]"] == ["buyer@example.com"]
    custom = {k[len("checkout[custom][") : -1]: v[0] for k, v in query.items() if k.startswith("checkout[custom][")}
    with session_scope() as session:
        user = session.scalar(select(User).where(User.email == "buyer@example.com"))
        assert user is not None and custom["user_id"] == str(user.id)
        buyer = Account(user.id, "someone-else@example.com", "")  # the e-mail typed at checkout may differ
    assert set(custom) == {"user_id", "user_sig"}
    unsigned = event(
        "subscription_created", buyer, variant=1002, subscription=f"sub-u-{RUN}", custom=custom | {"user_sig": ""}
    )
    assert send(client, unsigned).json()["status"] == "ignored"  # the id alone names no account
    answer = send(
        client, event("subscription_created", buyer, variant=1002, subscription=f"sub-b-{RUN}", custom=custom)
    )
    assert answer.json()["status"] == "processed", answer.json()
    with session_scope() as session:
        user = session.get(User, buyer.user_id)
        assert user is not None and user.plan.name == "professional" and user.subscription_id == f"sub-b-{RUN}"
