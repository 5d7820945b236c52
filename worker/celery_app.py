"""Celery entry point: ``celery -A worker.celery_app worker``."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown

from common.config import get_settings
from common.db import dispose_engines
from common.queue import get_celery
from worker import metrics

app = get_celery()
app.conf.include = ["worker.tasks"]
metrics.install()  # task runtime/outcomes on WORKER_METRICS_PORT (worker/metrics.py)
# one line per fetched page is the task log's job, not httpx's
logging.getLogger("httpx").setLevel(logging.WARNING)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Pooled DB connections must not be shared with the parent process."""
    dispose_engines()


@worker_process_shutdown.connect
def _close_clients(**_: Any) -> None:
    from worker.tasks import close_fetcher

    close_fetcher()


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from worker.reaper import start_reaper_thread

    logging.getLogger(__name__).info("worker ready (git %s)", get_settings().git_commit)
    start_reaper_thread(get_settings())


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    from worker.reaper import stop_reaper_thread

    stop_reaper_thread()
