"""Helpers shared by the service tests (kept out of conftest.py, whose module name other
test directories share): settings/caches, accounts, worker processes, sign-in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from svc_oidc import FakeIssuer

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = Path(os.environ.get("SELEXTRACT_SERVICES_DIR", "/tmp/selextract-services"))
CLIENT_ID = "selextract-test-client"
CLIENT_SECRET = "test-client-secret"
LS_SECRET = "ls-signing-secret"


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def reset_caches() -> None:
    """Drop every process-wide cache that captured settings."""
    from app.core.redis import get_redis
    from app.web.auth import _oauth
    from common.config import get_settings
    from common.db import dispose_engines
    from common.queue import get_celery
    from common.storage import get_storage

    for cached in (get_settings, get_storage, get_redis, get_celery, _oauth):
        cached.cache_clear()
    dispose_engines()


class Account:
    def __init__(self, user_id: uuid.UUID, email: str, key: str) -> None:
        self.user_id = user_id
        self.email = email
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}


def make_account(plan: str = "professional", email: str | None = None) -> Account:
    """A user with an API key, created directly (the sign-in flow has its own tests)."""
    from sqlalchemy import select

    from app.crud import api_keys
    from app.crud.users import upsert_oidc_user
    from common.config import get_settings
    from common.db import session_scope
    from common.models import Plan

    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    with session_scope() as session:
        user = upsert_oidc_user(session, get_settings().oidc_issuer, {"sub": email, "email": email, "name": "T"})
        user.plan_id = session.scalar(select(Plan.id).where(Plan.name == plan))
        _key, secret = api_keys.create(session, user, "test")
        return Account(user.id, email, secret)


class WorkerProcess:
    """A real ``celery worker`` subprocess, in its own process group (so kill -9 takes all)."""

    def __init__(self, log_dir: Path, name: str, concurrency: int = 2, extra_env: dict[str, str] | None = None):
        self.log_path = log_dir / f"worker-{name}.log"
        self.name = name
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 40) -> WorkerProcess:
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-l",
                "INFO",
                "-P",
                "prefork",
                "-c",
                str(self.concurrency),
                "-n",
                f"{self.name}-{uuid.uuid4().hex[:6]}@%h",
                "-Q",
                env["CELERY_QUEUE"],
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def wait_for_task(task_id: uuid.UUID | str, timeout: float = 60, states: tuple[str, ...] = ()) -> Any:
    """Poll the database until the task is terminal (or in one of ``states``)."""
    from common.db import session_scope
    from common.models import Task

    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            task = session.get(Task, uuid.UUID(str(task_id)))
            assert task is not None
            if task.state.terminal or task.state.value in states:
                return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task.state.value} after {timeout}s")
        time.sleep(0.2)


def sign_in(client: Any, issuer: FakeIssuer, email: str, **claims: Any) -> Any:
    """Walk the OIDC code flow: app -> issuer -> app callback. Returns the final response."""
    issuer.sign_in_as(email, **claims)
    login = client.get("/auth/login?next=/console/keys", follow_redirects=False)
    assert login.status_code in (302, 303, 307), login.text
    authorize = httpx.get(login.headers["location"], follow_redirects=False)
    assert authorize.status_code == 302, authorize.text
    callback = authorize.headers["location"]
    assert callback.startswith("http://testserver/auth/callback?"), callback
    return client.get(callback.removeprefix("http://testserver"), follow_redirects=False)


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def create_key_in_console(client: Any, name: str = "laptop") -> str:
    page = client.get("/console/keys")
    assert page.status_code == 200
    created = client.post("/console/keys", data={"csrf_token": csrf(page.text), "name": name})
    assert created.status_code == 200
    match = re.search(r'<pre id="new-key">(sx_[^<]+)</pre>', created.text)
    assert match, created.text
    return match.group(1)
