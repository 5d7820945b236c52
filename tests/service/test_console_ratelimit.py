"""The console's task form counts against the same per-account rate limit as the API
(issue 17, item 3: without it a signed-in browser could submit without limit)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from sqlalchemy import func, select
from svc_helpers import csrf, sign_in
from svc_oidc import FakeIssuer

from common.db import session_scope
from common.models import Task, User


def test_the_task_form_is_rate_limited_like_the_api(
    client: Any, issuer: FakeIssuer, service_env: dict[str, str]
) -> None:
    email = f"limit-{uuid.uuid4().hex[:6]}@example.com"
    sign_in(client, issuer, email)
    with session_scope() as session:
        user_id = session.scalar(select(User.id).where(User.email == email))
    # this minute's (and the next minute's) budget already used, as through the API
    rds = redis.Redis.from_url(service_env["REDIS_URL"])
    bucket = int(time.time() // 60)
    for minute in (bucket, bucket + 1):
        rds.set(f"selextract:ratelimit:user:{user_id}:{minute}", 10_000, ex=180)
    page = client.get("/console")
    form = {
        "csrf_token": csrf(page.text),
        "urls": "https://example.com/",
        "extract": '{"title": "h1::text"}',
        "timeout": "30",
        "retries": "2",
    }
    response = client.post("/console/tasks", data=form, follow_redirects=False)
    assert response.status_code == 429, response.text[:500]
    assert "Rate limit exceeded" in response.text
    assert int(response.headers["Retry-After"]) >= 1
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Task).where(Task.user_id == user_id)) == 0
