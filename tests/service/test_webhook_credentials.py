"""Webhook URLs with ``user:password@`` are refused at submission like target URLs: the URL is
stored with the task and shown in its detail (issue 17, low item)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from svc_helpers import Account
from svc_site import LocalSite

from common.db import session_scope
from common.models import Task

PASSWORD = "hook-" + uuid.uuid4().hex[:8]


@pytest.mark.parametrize(
    "netloc", [f"user:{PASSWORD}@hooks.example", f":{PASSWORD}@hooks.example", "user@hooks.example"]
)
def test_webhook_urls_with_credentials_are_refused(
    client: Any, account: Account, site: LocalSite, caplog: pytest.LogCaptureFixture, netloc: str
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"urls": [f"{site.url}/products"], "extract": {"title": "h1::text"}, "webhook_url": f"https://{netloc}/in"}
    answer = client.post("/api/v1/tasks", json=body, headers=account.headers)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", "webhook_url"]], errors
    assert "user name or password" in errors[0]["msg"] and PASSWORD not in errors[0]["msg"]
    assert PASSWORD not in caplog.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Task).where(Task.user_id == account.user_id)) == 0


def test_webhook_urls_without_credentials_are_accepted(client: Any, account: Account, site: LocalSite) -> None:
    body = {
        "urls": [f"{site.url}/products"],
        "extract": {"title": "h1::text"},
        "webhook_url": "https://hooks.example/in",
    }
    answer = client.post("/api/v1/tasks", json=body, headers=account.headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook_url"] == "https://hooks.example/in"
