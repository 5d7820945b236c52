"""Shared response bodies (errors), so the OpenAPI schema documents every status we send."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    detail: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationErrorItem]


class HealthOut(BaseModel):
    status: str
    version: str


class ReadinessOut(BaseModel):
    status: str
    version: str
    checks: dict[str, str]
    failing: list[str]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an endpoint can return."""
    text = {
        400: "Malformed request (e.g. a body that is not UTF-8 JSON)",
        401: "Missing, invalid or revoked API key",
        402: "Out of credits for this month",
        403: "Forbidden",
        404: "No such resource (or not yours)",
        409: "Conflicts with the resource's state",
        429: "Rate limit or concurrent-task limit exceeded (see Retry-After)",
        503: "Maintenance or a backing service is unavailable",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
