"""The real worker (worker.celery_app, prefork) serves its own metrics: a scrape task
through the API shows up as an execution, pages fetched and a fetch error."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from svc_helpers import Account, WorkerProcess, wait_for_task
from svc_site import LocalSite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_scrape_task_shows_in_the_worker_metrics(
    client: Any, account: Account, site: LocalSite, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("worker-metrics")
    worker = WorkerProcess(
        workdir,
        "metrics",
        concurrency=2,
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(workdir / "prom"), "WORKER_METRICS_PORT": str(port)},
    ).start()
    try:
        created = client.post(
            "/api/v1/tasks",
            headers=account.headers,
            json={
                "urls": [site.url + "/products", site.url + "/products/1", site.url + "/status/404"],
                "extract": {"title": "h1::text"},
                "options": {"retries": 0, "timeout": 10},
            },
        )
        assert created.status_code == 201, created.text
        task = wait_for_task(created.json()["id"], timeout=90)
        assert (task.succeeded_count, task.failed_count) == (2, 1)

        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:  # the success signal follows the task's last database write
            text = httpx.get(url, timeout=5).text
            if _value(text, "selextract_worker_tasks_total", task="selextract.scrape", outcome="succeeded") >= 1:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.3)
        assert _value(text, "selextract_worker_pages_fetched_total", mode="http") == 2
        assert _value(text, "selextract_worker_fetch_errors_total", code="http_error") == 1
        assert _value(text, "selextract_worker_task_duration_seconds_count", task="selextract.scrape") >= 1
        assert _value(text, "selextract_worker_tasks_total", outcome="failed") == 0
        assert _value(text, "selextract_worker_tasks_in_progress", task="selextract.scrape") == 0
    finally:
        worker.stop()
