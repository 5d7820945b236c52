"""The worker's log lines about a URL never carry its ``user:password@`` (issue 17, low item):
tasks stored before such URLs were refused at submission still reach the runner."""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from svc_helpers import Account

from common.config import get_settings
from common.db import session_scope
from common.models import Task, TaskState, TaskUrl, UrlState
from common.storage import get_storage
from worker.fetch import FetchError, FetchOptions
from worker.runner import TaskRunner

PASSWORD = "s3cr3t-" + uuid.uuid4().hex[:8]


class FailingFetcher:
    """Fails every URL: one as the fetcher refuses credentials, one with an unexpected error."""

    proxies = SimpleNamespace(proxies=[])

    def fetch(self, url: str, options: FetchOptions) -> Any:
        if url.endswith("/refused"):
            raise FetchError("credentials_in_url", "URLs with a user name or password are not fetched")
        raise RuntimeError("boom")


def test_runner_logs_name_urls_without_their_credentials(account: Account, caplog: pytest.LogCaptureFixture) -> None:
    urls = [f"http://user:{PASSWORD}@127.0.0.1:9/{name}" for name in ("refused", "crash")]
    with session_scope() as session:
        task = Task(
            user_id=account.user_id,
            state=TaskState.queued,
            rules={"title": "h1::text"},
            options={"retries": 0},
            url_count=len(urls),
            urls=[TaskUrl(position=i, url=url, state=UrlState.pending) for i, url in enumerate(urls)],
        )
        session.add(task)
        session.flush()
        task_id = task.id
    caplog.set_level(logging.DEBUG, logger="worker")
    fetcher: Any = FailingFetcher()
    TaskRunner(get_settings(), get_storage(), fetcher, extractor=SimpleNamespace()).run(task_id)  # type: ignore[arg-type]
    assert "127.0.0.1:9/refused failed (credentials_in_url" in caplog.text  # the line is there...
    assert "unexpected error on http://127.0.0.1:9/crash" in caplog.text
    assert PASSWORD not in caplog.text and "user:" not in caplog.text  # ...without the credentials
