"""worker/metrics.py through a real prefork Celery worker (several pool processes,
multiprocess mode): run tasks, then read the worker's metrics endpoint."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def worker(tmp_path: Path):  # type: ignore[no-untyped-def]
    broker = tmp_path / "broker"
    broker.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "TEST_BROKER_DIR": str(broker),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "WORKER_METRICS_PORT": str(port),
        "PYTHONPATH": str(REPO),
    }
    # a stale sample of a process of an earlier run in the same directory is swept at start
    (tmp_path / "metrics").mkdir()
    stale = tmp_path / "metrics" / "counter_999999.db"
    stale.write_bytes(b"\0" * 16)
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.worker.metrics_app", "worker", "-P", "prefork", "-c", "2",
         "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 40
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("worker metrics endpoint never answered:\n" + (tmp_path / "worker.log").read_text()[-3000:])
        time.sleep(0.3)
    os.environ["TEST_BROKER_DIR"] = str(broker)
    try:
        yield url, stale, tmp_path / "worker.log"
    finally:
        os.environ.pop("TEST_BROKER_DIR", None)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_tasks_through_a_prefork_worker_show_in_its_metrics(worker) -> None:  # type: ignore[no-untyped-def]
    url, stale, log = worker
    assert not stale.exists(), "samples of a dead process of an earlier run are swept at start"
    from tests.worker import metrics_app as m

    for _ in range(3):
        m.ok.delay()
    m.boom.delay()
    m.again.delay()
    m.fetch.delay(False)
    m.fetch.delay(False)
    m.fetch.delay(True)
    m.die.delay()

    expected = {
        ("selextract_worker_tasks_total", (("outcome", "succeeded"), ("task", "t.ok"))): 3,
        ("selextract_worker_tasks_total", (("outcome", "failed"), ("task", "t.boom"))): 1,
        ("selextract_worker_tasks_total", (("outcome", "retried"), ("task", "t.again"))): 1,
        ("selextract_worker_tasks_total", (("outcome", "succeeded"), ("task", "t.again"))): 1,
        ("selextract_worker_tasks_total", (("outcome", "failed"), ("task", "t.fetch"))): 1,
        # the pool process died: the main process reports the failure (WorkerLostError)
        ("selextract_worker_tasks_total", (("outcome", "failed"), ("task", "t.die"))): 1,
        ("selextract_worker_pages_fetched_total", (("mode", "http"),)): 2,
        ("selextract_worker_fetch_errors_total", (("code", "timeout"),)): 1,
    }
    deadline = time.monotonic() + 60
    while True:
        samples = _samples(httpx.get(url, timeout=5).text)
        got = {k: samples.get(k, 0.0) for k in expected}
        if got == expected:
            break
        assert time.monotonic() < deadline, f"{got} != {expected}\n{log.read_text()[-3000:]}"
        time.sleep(0.5)

    # runtime histogram: one observation per execution (the retried task ran twice)
    assert _value(samples, "selextract_worker_task_duration_seconds_count", task="t.ok") == 3
    assert _value(samples, "selextract_worker_task_duration_seconds_count", task="t.again") == 2
    assert _value(samples, "selextract_worker_task_duration_seconds_count", task="t.boom") == 1
    assert _value(samples, "selextract_worker_task_duration_seconds_sum", task="t.ok") > 0
    assert _value(samples, "selextract_worker_task_duration_seconds_bucket", task="t.ok", le="+Inf") == 3
    # nothing is running any more, including the task whose process was killed mid-run
    in_progress = {k: v for k, v in samples.items() if k[0] == "selextract_worker_tasks_in_progress"}
    assert in_progress and set(in_progress.values()) == {0.0}, in_progress


def test_in_process_registry_without_multiproc_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """A solo pool in development (no PROMETHEUS_MULTIPROC_DIR) serves the process registry."""
    from prometheus_client import REGISTRY

    from worker import metrics

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics.registry() is REGISTRY
    monkeypatch.setenv("WORKER_METRICS_PORT", "0")
    assert metrics.start_server() is None, "port 0 turns the endpoint off"
    monkeypatch.delenv("WORKER_METRICS_PORT")
    assert metrics.metrics_port() == 9808
