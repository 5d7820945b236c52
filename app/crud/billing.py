"""Lemon Squeezy subscription webhooks -> the account's plan.

Every event is stored under its id (or the digest of its body when it carries none), so a
redelivered event changes nothing the second time.

An event finds its account by, in order: the checkout's custom data signed by this server
for the signed-in account (`checkout_url`), the account already holding the subscription,
the checkout e-mail. The plan follows the account's current subscription only: an event
for another subscription changes nothing, unless it is a newer one from a signed-in
checkout, or the account pays nothing (no live subscription, default plan). So an old
subscription's end cannot drop a paying account, and a checkout that merely types someone's
e-mail cannot change their plan.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.schemas.account import BillingEventResult
from common.accounting import default_plan, effective_plan
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


def checkout_signature(settings: Settings, user_id: uuid.UUID | str) -> str:
    """HMAC of the account id with SECRET_KEY: only this server can tie a checkout to an
    account, so the webhook can trust the `user_id` the checkout carries back."""
    key = settings.require_secret_key().encode()
    return hmac.new(key, f"lemonsqueezy-checkout:{user_id}".encode(), hashlib.sha256).hexdigest()


def checkout_custom_data(settings: Settings, user_id: uuid.UUID | str) -> dict[str, str]:
    """The custom fields a signed-in checkout passes through to every subscription event."""
    return {"user_id": str(user_id), "user_sig": checkout_signature(settings, user_id)}


def checkout_url(settings: Settings, user: User, url: str) -> str:
    """A plan's checkout link for the signed-in `user` (shown in the console)."""
    fields = {f"checkout[custom][{k}]": v for k, v in checkout_custom_data(settings, user.id).items()}
    query = urlencode({**fields, "checkout[email]": user.email})
    return f"{url}{'&' if '?' in url else '?'}{query}"


@dataclass(frozen=True)
class _Match:
    user: User
    signed: bool  # found through custom data this server signed for the account


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
    subscription_id = str(data.get("id") or "")[:64]
    if not subscription_id:
        raise BadEvent("subscription event without data.id")
    match = _find_user(session, settings, payload, attrs, subscription_id)
    if match is None:
        return BillingEventResult(
            status="ignored",
            detail="no account matches the event (signed checkout data, subscription id or user_email)",
        )
    user = match.user
    status = str(attrs.get("status") or "")
    ended = event_name == "subscription_expired" or status in ENDED_STATUSES
    refusal = _refusal(session, match, subscription_id, ended, _parse_time(attrs.get("created_at")))
    if refusal is not None:
        return BillingEventResult(status="ignored", detail=refusal)
    if ended:
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
    if user.subscription_id != subscription_id or user.subscription_created_at is None:
        user.subscription_created_at = _parse_time(attrs.get("created_at"))
    user.plan_id = plan.id
    user.plan_expires_at = expires
    user.subscription_id = subscription_id
    user.subscription_status = status[:32] or None
    until = f" until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
    return BillingEventResult(status="processed", detail=f"{user.email} is on {plan.name}{until}")


def _refusal(
    session: Session, match: _Match, subscription_id: str, ended: bool, created: datetime | None
) -> str | None:
    """Why an event for `subscription_id` may not change the account's plan (None: it may)."""
    user, current = match.user, match.user.subscription_id
    if current == subscription_id:
        return None
    if ended:
        return (
            f"subscription {subscription_id} is not the account's current one ({current or 'none'}); "
            "its end changes nothing"
        )
    if match.signed:
        if not _has_live_subscription(user):
            return None
        known = user.subscription_created_at
        if created is not None and (known is None or created > known):
            return None
        return f"subscription {subscription_id} is not newer than the account's current one ({current})"
    if not _has_live_subscription(user) and effective_plan(session, user).id == default_plan(session).id:
        return None
    return (
        f"the account with this e-mail has a paid plan (subscription {current or 'none'}); a checkout matched only "
        "by e-mail does not change it: buy through the console's link while signed in"
    )


def _has_live_subscription(user: User) -> bool:
    """A subscription that has neither ended nor run out its cancelled period (paused counts)."""
    if user.subscription_id is None or (user.subscription_status or "") in ENDED_STATUSES:
        return False
    return user.plan_expires_at is None or user.plan_expires_at > datetime.now(UTC)


def _find_user(
    session: Session, settings: Settings, payload: dict[str, Any], attrs: dict[str, Any], subscription_id: str
) -> _Match | None:
    custom = payload.get("meta", {}).get("custom_data")
    if isinstance(custom, dict) and isinstance(custom.get("user_id"), str) and isinstance(custom.get("user_sig"), str):
        expected = checkout_signature(settings, custom["user_id"])
        # bytes: compare_digest refuses non-ASCII str, and the buyer can put anything there
        if hmac.compare_digest(expected.encode(), custom["user_sig"].encode()):
            try:
                user = session.get(User, uuid.UUID(custom["user_id"]))
            except ValueError:
                user = None
            if user is not None:
                return _Match(user, signed=True)
        else:
            log.warning("lemonsqueezy: custom data for %r has a wrong signature", custom["user_id"][:64])
    holder = session.scalar(select(User).where(User.subscription_id == subscription_id))
    if holder is not None:
        return _Match(holder, signed=False)
    email = attrs.get("user_email")
    if isinstance(email, str) and email:
        user = session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
        return _Match(user, signed=False) if user is not None else None
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
