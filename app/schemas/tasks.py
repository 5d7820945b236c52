"""Request and response bodies of the task endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_validator

from common.extraction import ExtractionRules
from common.models import TaskState, UrlState

MAX_URLS_PER_TASK = 100
MAX_URL_LENGTH = 2048


def _without_credentials(url: HttpUrl) -> HttpUrl:
    """Credentials in a target or webhook URL would be stored with the task and appear in logs,
    results and its detail."""
    if url.username is not None or url.password is not None:
        raise ValueError(
            "URLs with a user name or password (user:password@host) are not accepted: "
            "they would be stored and logged with the task"
        )
    return url


TargetUrl = Annotated[
    HttpUrl,
    Field(max_length=MAX_URL_LENGTH, examples=["https://example.com/products"]),
    AfterValidator(_without_credentials),
]


class TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    render_js: bool = Field(
        default=False, description="Render pages in a browser first (needs a renderer in this deployment)"
    )
    use_proxy: bool | None = Field(
        default=None, description="Fetch through the proxy pool; default: when the deployment has proxies"
    )
    respect_robots: bool = Field(default=True, description="Skip URLs that robots.txt disallows")
    timeout: float = Field(default=30.0, ge=1, le=120, description="Seconds per request")
    retries: int = Field(default=2, ge=0, le=5, description="Retries per URL on network errors, 429 and 5xx")


class TaskCreate(BaseModel):
    """A scrape task: the same extraction rules applied to every URL."""

    model_config = ConfigDict(extra="forbid")

    urls: list[TargetUrl] = Field(min_length=1, max_length=MAX_URLS_PER_TASK, json_schema_extra={"uniqueItems": True})
    extract: ExtractionRules
    options: TaskOptions = Field(default_factory=TaskOptions)
    webhook_url: Annotated[HttpUrl, Field(max_length=MAX_URL_LENGTH), AfterValidator(_without_credentials)] | None = (
        Field(
            default=None,
            description="POSTed a signed notice (X-Selextract-Signature) when the task finishes; "
            "no user:password@ (authenticate the notice by its signature)",
        )
    )

    @field_validator("urls")
    @classmethod
    def _distinct(cls, urls: list[HttpUrl]) -> list[HttpUrl]:
        seen: set[str] = set()
        for url in urls:
            if str(url) in seen:
                raise ValueError(f"{url} is listed twice")
            seen.add(str(url))
        return urls


class TaskLinks(BaseModel):
    self: str
    results_json: str
    results_csv: str


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    state: TaskState
    url_count: int
    succeeded_count: int
    failed_count: int
    credits_charged: int
    error: str | None = Field(description="Summary of failures, if any")
    webhook_url: str | None
    webhook_status: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: TaskLinks


class TaskUrlOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    position: int
    url: str
    state: UrlState
    attempts: int
    status_code: int | None
    final_url: str | None
    error_code: str | None = Field(
        description="robots_disallowed, forbidden_address, http_error, timeout, network_error, too_large, "
        "url_budget_exceeded, extraction_timeout, result_too_large, selector_error, …"
    )
    error: str | None
    item_count: int | None
    elapsed_ms: int | None


class TaskDetail(TaskOut):
    extract: ExtractionRules
    options: TaskOptions
    urls: list[TaskUrlOut]


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int
