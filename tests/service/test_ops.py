"""Health, readiness, metrics, maintenance mode, migrations."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from svc_helpers import REPO, Account, reset_caches

from app.core import maintenance
from common.db import get_engine
from common.models import Base


def test_health_reports_the_version(client: Any) -> None:
    assert client.get("/health").json() == {"status": "ok", "version": "test-commit"}


def test_readiness_checks_every_dependency(client: Any) -> None:
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


def test_readiness_names_the_failing_part(
    monkeypatch: pytest.MonkeyPatch, service_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The public answer names the failing parts only; the cause (internal addresses, bucket
    names) goes to the API's log."""
    from app.main import create_app

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("S3_BUCKET", "no-such-bucket-here")
    reset_caches()
    try:
        with TestClient(create_app()) as broken, caplog.at_level("WARNING", logger="app.api.routes.health"):
            answer = broken.get("/health/ready")
            assert answer.status_code == 503
            body = answer.json()
            assert body["failing"] == ["redis", "storage"]
            assert body["checks"] == {"database": "ok", "redis": "fail", "storage": "fail"}
            for internal in ("127.0.0.1", ":9", "no-such-bucket-here", "Error"):
                assert internal not in answer.text, internal
            logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "app.api.routes.health")
            assert "redis" in logged and "127.0.0.1" in logged and "no-such-bucket-here" in logged
            assert broken.get("/health").status_code == 200
    finally:
        monkeypatch.undo()
        reset_caches()


def test_metrics_expose_latency_task_counts_and_queue_depth(client: Any, account: Account) -> None:
    client.get("/api/v1/account", headers=account.headers)
    client.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000", headers=account.headers)
    text = client.get("/metrics").text
    assert re.search(r'selextract_http_request_duration_seconds_bucket\{.*route="/api/v1/account".*\}', text)
    assert re.search(r'_count\{method="GET",route="/api/v1/tasks/\{task_id\}",status="404"\} [1-9]', text)
    for state in ("queued", "running", "completed", "failed", "cancelled"):
        assert f'selextract_tasks{{state="{state}"}}' in text
    assert re.search(r'selextract_queue_depth\{queue="scrape-[0-9a-f]+"\} \d', text)
    assert "celery_queue_length{" in text
    client.get("/definitely/not/a/route")
    assert 'route="unmatched"' in client.get("/metrics").text


def test_maintenance_mode_503_everywhere_but_health(client: Any, account: Account, service_env: dict[str, str]) -> None:
    rds = redis.Redis.from_url(service_env["REDIS_URL"])
    env = {**os.environ}
    switch = [sys.executable, "-m", "app.maintenance"]
    out = subprocess.run(
        [*switch, "on", "--retry-after", "120", "--message", "Upgrading"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "maintenance: on" in out.stdout
    try:
        time.sleep(maintenance.CACHE_SECONDS + 0.1)
        for path in ("/api/v1/tasks", "/console", "/docs"):
            answer = client.get(path, headers=account.headers)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "120", path
        assert client.get("/api/v1/tasks", headers=account.headers).json() == {"detail": "Upgrading"}
        assert client.post("/api/v1/billing/lemonsqueezy", content=b"{}").status_code == 503
        assert client.get("/health").status_code == 200
        assert client.get("/health/ready").status_code == 200
        assert client.get("/metrics").status_code == 200
    finally:
        subprocess.run([*switch, "off"], cwd=REPO, env=env, check=True, capture_output=True)
    assert rds.get(maintenance.KEY) is None
    time.sleep(maintenance.CACHE_SECONDS + 0.1)
    assert client.get("/api/v1/tasks", headers=account.headers).status_code == 200


def test_static_maintenance_flag(monkeypatch: pytest.MonkeyPatch, service_env: dict[str, str]) -> None:
    from app.main import create_app

    monkeypatch.setenv("MAINTENANCE_MODE", "true")
    monkeypatch.setenv("MAINTENANCE_RETRY_AFTER", "42")
    reset_caches()
    try:
        with TestClient(create_app()) as down:
            assert down.get("/api/v1/keys").status_code == 503
            assert down.get("/api/v1/keys").headers["retry-after"] == "42"
            assert down.get("/health").status_code == 200
    finally:
        monkeypatch.undo()
        reset_caches()


def test_migrations_match_the_models_and_go_both_ways(service_env: dict[str, str]) -> None:
    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], diff
    run = [sys.executable, "-m", "app.migrate"]
    check = subprocess.run([*run, "--check"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0 and "pending migrations: none" in check.stdout
    again = subprocess.run(run, cwd=REPO, capture_output=True, text=True)
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert again.returncode == 0 and f"database at revision {head}" in again.stdout, again.stderr
