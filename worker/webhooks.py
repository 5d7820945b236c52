"""Completion webhooks: signed POSTs to the URL given with the task, at least once.

Receivers verify ``X-Selextract-Signature`` (see common.signing.verify_webhook) with the
account's webhook secret and deduplicate on ``X-Selextract-Delivery``.
"""

from __future__ import annotations

import json
import logging
import uuid

import httpx
from sqlalchemy import select

from common.config import Settings
from common.db import session_scope
from common.models import Task, User
from common.netpolicy import ForbiddenTarget, NetworkPolicy
from common.results import webhook_payload
from common.signing import SIGNATURE_HEADER, sign_webhook
from worker.fetch import GuardedTransport

log = logging.getLogger(__name__)


def _post(settings: Settings, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    policy = NetworkPolicy(tuple(settings.scraper_allowed_networks))
    policy.check_url(url)
    transport = GuardedTransport(policy, httpx.Limits(max_connections=1))
    with httpx.Client(transport=transport, timeout=settings.webhook_timeout, follow_redirects=False) as client:
        return client.post(url, content=body, headers=headers)


def deliver(settings: Settings, task_id: uuid.UUID, attempt: int) -> float | None:
    """Send the webhook of a finished task. Returns a retry countdown, or None when done."""
    with session_scope(settings) as session:
        task = session.get(Task, task_id)
        if task is None or not task.webhook_url or not task.state.terminal:
            return None
        if task.webhook_status == "delivered" or (task.webhook_status or "").startswith("failed"):
            return None
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
        response = _post(settings, url, body, headers)
        problem = None if response.is_success else f"HTTP {response.status_code}"
    except ForbiddenTarget as exc:
        _set_status(settings, task_id, f"failed: {exc}")
        return None
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
