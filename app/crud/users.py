"""Accounts: created on first sign-in through the OpenID Connect provider."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.security import new_webhook_secret
from common.accounting import default_plan
from common.models import User


class SignInRefused(Exception):
    """The identity provider's answer cannot be turned into an account."""


def upsert_oidc_user(session: Session, issuer: str, claims: dict[str, object]) -> User:
    subject = str(claims.get("sub") or "")
    email = str(claims.get("email") or "").strip().lower()
    if not subject or not email:
        raise SignInRefused("the identity provider did not return a subject and an e-mail address")
    if claims.get("email_verified") is False:
        raise SignInRefused(f"{email} is not verified with the identity provider")
    user = session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
    if user is None:
        # same verified e-mail from the same provider with a new subject: same person
        user = session.scalar(select(User).where(func.lower(User.email) == email))
        if user is not None and user.oidc_issuer != issuer:
            raise SignInRefused(f"{email} already signs in through another identity provider")
    if user is None:
        user = User(
            email=email,
            oidc_issuer=issuer,
            oidc_subject=subject,
            plan_id=default_plan(session).id,
            webhook_secret=new_webhook_secret(),
            is_active=True,
        )
        session.add(user)
    if not user.is_active:
        raise SignInRefused(f"the account {email} is disabled")
    user.oidc_subject = subject
    user.email = email
    name = claims.get("name")
    user.name = str(name)[:200] if name else user.name
    user.last_login_at = datetime.now(UTC)
    session.flush()
    return user


def get_active_user(session: Session, user_id: uuid.UUID) -> User | None:
    user = session.get(User, user_id)
    return user if user is not None and user.is_active else None
