"""A tiny Celery app for tests/worker/test_metrics.py: a filesystem broker (no Redis
needed, yet shared between processes) and tasks that succeed, fail, retry, fetch and die,
instrumented by worker.metrics exactly as worker.celery_app is."""

from __future__ import annotations

import os

from celery import Celery

from worker import metrics

BROKER_DIR = os.environ["TEST_BROKER_DIR"]

app = Celery("metrics-test")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": BROKER_DIR,
        "data_folder_out": BROKER_DIR,
        "control_folder": os.path.join(BROKER_DIR, "control"),
    },
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
metrics.install()


class FetchFailed(Exception):
    code = "timeout"


@app.task(name="t.ok")
def ok() -> str:
    return "ok"


@app.task(name="t.boom")
def boom() -> None:
    raise ValueError("boom")


@app.task(name="t.again", bind=True, max_retries=1)
def again(self) -> str:  # type: ignore[no-untyped-def]
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "second try"


@app.task(name="t.fetch")
def fetch(fail: bool) -> None:
    with metrics.observe_fetch("http"):
        if fail:
            raise FetchFailed("timed out")


@app.task(name="t.die")
def die() -> None:
    os._exit(1)  # a pool process killed mid-task (OOM killer, segfault)
