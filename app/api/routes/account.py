"""The caller's account: plan, credits left this month, webhook signing secret."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentUser, SessionDep
from app.schemas.account import AccountOut, CreditsOut, PlanOut
from app.schemas.common import error_responses
from common.accounting import credit_status

router = APIRouter(prefix="/account", tags=["account"])


def account_view(session: SessionDep, user: CurrentUser) -> AccountOut:
    status = credit_status(session, user)
    return AccountOut(
        id=user.id,
        email=user.email,
        name=user.name,
        plan=PlanOut.model_validate(status.plan),
        plan_expires_at=user.plan_expires_at,
        subscription_status=user.subscription_status,
        credits=CreditsOut(
            period=status.period,
            included=status.included,
            used=status.used,
            remaining=status.remaining,
            resets_at=status.resets_at,
        ),
        webhook_secret=user.webhook_secret,
    )


@router.get("", response_model=AccountOut, operation_id="get_account", responses=error_responses(401, 429))
def get_account(user: CurrentUser, session: SessionDep) -> AccountOut:
    return account_view(session, user)
