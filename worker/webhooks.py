"""Completion webhooks: signed POSTs to the URL given with the task, at least once.

Receivers verify ``X-Selextract-Signature`` (see common.signing.verify_webhook) with the
account's webhook secret and deduplicate on ``X-Selextract-Delivery``.

A receiver is anyone's server, so it gets no hold on the worker: only the status code of its
answer counts (the body is never read, so a gzip bomb stays on the wire), the whole exchange
must end within WEBHOOK_TIMEOUT, and attempts are counted before each POST, so a delivery
that kills its worker process still stops after WEBHOOK_MAX_ATTEMPTS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from common.config import Settings
from common.db import session_scope
from common.models import Task, User
from common.netpolicy import ForbiddenTarget, NetworkPolicy
from common.results import webhook_payload
from common.signing import SIGNATURE_HEADER, sign_webhook
from worker import attempts
from worker.fetch import GuardedTransport

log = logging.getLogger(__name__)


class DeadlineExceeded(Exception):
    """The receiver did not answer (status line and headers) within WEBHOOK_TIMEOUT."""


class _Watchdog:
    """Shuts down the exchange's connections once ``seconds`` have passed: httpx's timeouts
    bound each read, not the whole exchange, so a receiver trickling its answer a byte at a
    time would hold the worker process indefinitely. Fed by httpcore's ``trace`` extension."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._streams.append(info["return_value"])
            if self.expired.is_set():
                self._cut(info["return_value"])

    def _expire(self) -> None:
        self.expired.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            self._cut(stream)

    @staticmethod
    def _cut(stream: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)  # wakes a blocked recv


def _post(settings: Settings, url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST and return the answer's status code, without reading (or inflating) its body."""
    policy = NetworkPolicy(tuple(settings.scraper_allowed_networks))
    policy.check_url(url)
    transport = GuardedTransport(policy, httpx.Limits(max_connections=1))
    headers = {**headers, "Accept-Encoding": "identity"}
    with (
        _Watchdog(settings.webhook_timeout) as watchdog,
        httpx.Client(transport=transport, timeout=settings.webhook_timeout, follow_redirects=False) as client,
    ):
        try:
            request = client.build_request("POST", url, content=body, headers=headers)
            request.extensions["trace"] = watchdog.trace
            # closed unread: the connection (and whatever body is on the way) is dropped
            response = client.send(request, stream=True)
            response.close()
        except httpx.HTTPError as exc:
            if watchdog.expired.is_set():
                raise DeadlineExceeded(f"no answer within {settings.webhook_timeout:g}s") from exc
            raise
        return response.status_code


def deliver(settings: Settings, task_id: uuid.UUID, attempt: int) -> float | None:
    """Send the webhook of a finished task. Returns a retry countdown, or None when done."""
    with session_scope(settings) as session:
        task = session.get(Task, task_id)
        if task is None or not task.webhook_url or not task.state.terminal:
            return None
        previous = task.webhook_status or ""
        if previous == "delivered" or previous.startswith("failed"):
            return None
        # Celery's retry count misses deliveries whose worker process died (their message
        # comes back unchanged); this count, taken before the POST, does not
        attempt = max(attempt, attempts.bump(settings, "webhook", task_id))
        if attempt > settings.webhook_max_attempts:
            lost = "worker_lost: the worker process died while delivering; " if previous.startswith("sending") else ""
            task.webhook_status = f"failed: {lost}gave up after {attempt - 1} attempts"
            log.warning("webhook for task %s: %s", task_id, task.webhook_status)
            return None
        task.webhook_status = f"sending (attempt {attempt})"
        secret = session.scalar(select(User.webhook_secret).where(User.id == task.user_id)) or ""
        payload = webhook_payload(task, settings.public_base_url)
        url = task.webhook_url
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Selextract-Webhooks/1.0",
        "X-Selextract-Event": payload["event"],
        "X-Selextract-Delivery": f"{task_id}.{payload['task']['state']}",
        SIGNATURE_HEADER: sign_webhook(secret, body),
    }
    try:
        status = _post(settings, url, body, headers)
        problem = None if 200 <= status < 300 else f"HTTP {status}"
    except ForbiddenTarget as exc:
        _set_status(settings, task_id, f"failed: {exc}")
        return None
    except DeadlineExceeded as exc:
        problem = str(exc)
    except (httpx.HTTPError, OSError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        _set_status(settings, task_id, "delivered")
        return None
    if attempt >= settings.webhook_max_attempts:
        _set_status(settings, task_id, f"failed: {problem} after {attempt} attempts")
        return None
    _set_status(settings, task_id, f"retrying: {problem} (attempt {attempt})")
    countdown = min(settings.scraper_retry_backoff_max, settings.scraper_retry_backoff * 2 ** (attempt - 1))
    log.info("webhook for task %s failed (%s); retry in %.0fs", task_id, problem, countdown)
    return countdown


def _set_status(settings: Settings, task_id: uuid.UUID, status: str) -> None:
    with session_scope(settings) as session:
        task = session.get(Task, task_id)
        if task is not None:
            task.webhook_status = status[:200]
