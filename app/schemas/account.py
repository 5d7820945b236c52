"""Account, plan and credit bodies."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    monthly_credits: int
    rate_limit_per_minute: int
    max_concurrent_tasks: int


class CreditsOut(BaseModel):
    period: str = Field(description="Calendar month (UTC) the numbers are for, YYYY-MM")
    included: int
    used: int
    remaining: int
    resets_at: datetime


class AccountOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str | None
    plan: PlanOut
    plan_expires_at: datetime | None
    subscription_status: str | None
    credits: CreditsOut
    webhook_secret: str = Field(description="Key of the HMAC signature on completion webhooks")


class BillingEventResult(BaseModel):
    status: str = Field(description="processed, duplicate or ignored")
    detail: str | None = None
