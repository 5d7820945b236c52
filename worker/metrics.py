"""Prometheus metrics of the Celery workers themselves: task runtime, outcomes, tasks in
progress, pages fetched and fetch errors, served over HTTP by every worker container.

Celery's prefork pool runs the tasks in child processes, so the samples are written with
prometheus-client's multiprocess mode: each process keeps its values in files under
``PROMETHEUS_MULTIPROC_DIR`` (a tmpfs in the container; the root fs is read-only) and the
main worker process, which never runs a task itself, serves their sum on
``WORKER_METRICS_PORT`` (default 9808, ``0`` turns the endpoint off). Without
``PROMETHEUS_MULTIPROC_DIR`` (a solo/threads pool in development) the process's own
registry is served.

Every metric carries a label, so no sample file is written before a task runs: the main
process can sweep the files of processes that are gone (a previous run in the same
directory) at start without touching live ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

DEFAULT_PORT = 9808
PORT_ENV = "WORKER_METRICS_PORT"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_multiproc_dir = os.environ.get(MULTIPROC_ENV)
if _multiproc_dir:  # the first sample is written into it; it must exist by then
    os.makedirs(_multiproc_dir, exist_ok=True)

TASK_DURATION = Histogram(
    "selextract_worker_task_duration_seconds",
    "Run time of one task execution in a worker process (a retried task is one execution per try)",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
TASKS = Counter(
    "selextract_worker_tasks",
    "Task executions by outcome: succeeded, failed (incl. hard time limit, lost worker) or retried "
    "(incl. a scrape task re-queueing itself while URLs remain)",
    ["task", "outcome"],
)
TASKS_IN_PROGRESS = Gauge(
    "selextract_worker_tasks_in_progress",
    "Tasks running right now",
    ["task"],
    multiprocess_mode="livesum",
)
PAGES_FETCHED = Counter(
    "selextract_worker_pages_fetched",
    "Pages fetched (a final non-error HTTP answer; robots.txt not counted)",
    ["mode"],
)
FETCH_ERRORS = Counter(
    "selextract_worker_fetch_errors",
    "Page fetches that failed, by error code (timeout, http_error, robots_disallowed, ...)",
    ["code"],
)

_started: dict[str, tuple[str, float]] = {}
_started_lock = threading.Lock()
_server: Any = None
_SAMPLE_FILE = re.compile(r"^(?P<kind>[a-z_]+)_(?P<pid>\d+)\.db$")


# --- recording --------------------------------------------------------------------------


def _task_name(task: Any) -> str:
    return str(getattr(task, "name", None) or "unknown")


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    name = _task_name(task)
    with _started_lock:
        _started[str(task_id)] = (name, time.perf_counter())
    TASKS_IN_PROGRESS.labels(name).inc()


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    with _started_lock:
        started = _started.pop(str(task_id), None)
    if started is None:
        return
    name, at = started
    TASK_DURATION.labels(name).observe(time.perf_counter() - at)
    TASKS_IN_PROGRESS.labels(name).dec()


def _on_success(sender: Any = None, **_: Any) -> None:
    TASKS.labels(_task_name(sender), "succeeded").inc()


def _on_failure(sender: Any = None, **_: Any) -> None:
    # Sent in the pool process for an exception, and by the main process for a hard time
    # limit or a lost (killed) pool process: either way counted once.
    TASKS.labels(_task_name(sender), "failed").inc()


def _on_retry(sender: Any = None, **_: Any) -> None:
    TASKS.labels(_task_name(sender), "retried").inc()


def _count(counter: Counter, *labels: str) -> None:
    """Metrics never break the work they describe (a full tmpfs, say): log and go on."""
    try:
        counter.labels(*labels).inc()
    except Exception as exc:
        log.warning("worker metrics: %s not recorded: %s", counter._name, exc)


@contextlib.contextmanager
def observe_fetch(mode: str) -> Iterator[None]:
    """Count one page fetch: a page on success, its error ``code`` when it raises."""
    try:
        yield
    except Exception as exc:
        _count(FETCH_ERRORS, str(getattr(exc, "code", "internal_error")))
        raise
    _count(PAGES_FETCHED, mode)


# --- exposition ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sample_files(path: str) -> Iterable[tuple[Path, str, int]]:
    for file in Path(path).glob("*.db"):
        match = _SAMPLE_FILE.match(file.name)
        if match:
            yield file, match["kind"], int(match["pid"])


def reap_dead_gauges(path: str) -> None:
    """A pool process killed by a hard time limit or the OOM killer never runs
    worker_process_shutdown: drop its live gauges (tasks in progress) all the same.
    Counters and histograms of dead processes stay, so sums never go backwards."""
    for pid in {pid for _f, kind, pid in _sample_files(path) if kind.startswith("gauge_live")}:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)


def sweep_stale_files(path: str) -> None:
    """At worker start: forget the samples of processes of an earlier run in this directory."""
    for file, _kind, pid in _sample_files(path):
        if pid != os.getpid() and not _alive(pid):
            file.unlink(missing_ok=True)


class _WorkerCollector(multiprocess.MultiProcessCollector):
    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)
        self._dir = path

    def collect(self) -> Iterable[Any]:
        reap_dead_gauges(self._dir)
        return super().collect()


def registry() -> Collector:
    """What the endpoint serves: the sum over every process of this worker."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return REGISTRY
    out = CollectorRegistry()
    _WorkerCollector(out, path)
    return out


def metrics_port() -> int:
    raw = os.environ.get(PORT_ENV, "").strip()
    return int(raw) if raw else DEFAULT_PORT


def start_server(port: int | None = None, addr: str = "0.0.0.0") -> Any:
    """Serve /metrics (any path answers) from a daemon thread of this process; idempotent."""
    global _server
    from prometheus_client import start_http_server

    port = metrics_port() if port is None else port
    if _server is not None or port == 0:
        return _server
    try:
        _server, _thread = start_http_server(port, addr=addr, registry=registry())
    except OSError as exc:  # a busy port must not keep the worker from working
        log.error("worker metrics endpoint not started on %s:%s: %s", addr, port, exc)
        return None
    log.info("worker metrics on http://%s:%s/metrics", addr, port)
    return _server


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None


def _on_worker_init(**_: Any) -> None:
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        sweep_stale_files(path)


def _on_worker_ready(**_: Any) -> None:
    start_server()


def _on_worker_shutdown(**_: Any) -> None:
    stop_server()


def _on_process_shutdown(**_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


def install() -> None:
    """Connect the signal handlers (idempotent): what worker.celery_app calls."""
    for signal, handler in (
        (task_prerun, _on_prerun),
        (task_postrun, _on_postrun),
        (task_success, _on_success),
        (task_failure, _on_failure),
        (task_retry, _on_retry),
        (worker_init, _on_worker_init),
        (worker_ready, _on_worker_ready),
        (worker_shutdown, _on_worker_shutdown),
        (worker_process_shutdown, _on_process_shutdown),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"selextract.metrics.{handler.__name__}")
