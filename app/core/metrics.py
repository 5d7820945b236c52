"""Prometheus metrics: request latency (middleware), task counts by state and queue depth
(read from Postgres/Redis at scrape time, so every API replica reports the same truth)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from http import HTTPStatus

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.config import Settings
from common.db import session_scope
from common.models import Task, TaskState

log = logging.getLogger(__name__)

# Every label value comes from a fixed set: each label set is a series (in multiprocess mode
# a file on the API's small tmpfs), so a value taken from the request as sent (any method
# string) would let one anonymous client fill it. Routes are templates or `unmatched`.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KNOWN_STATUSES = frozenset(str(s.value) for s in HTTPStatus)

REQUEST_LATENCY = Histogram(
    "selextract_http_request_duration_seconds",
    "API request latency by route template",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class MetricsMiddleware:
    """Times every request; labels use the route template, never the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            REQUEST_LATENCY.labels(*request_labels(scope, status)).observe(time.perf_counter() - started)


def request_labels(scope: Scope, status: int) -> tuple[str, str, str]:
    """(method, route, status) for the latency metric, each from a bounded set."""
    method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
    code = str(status) if str(status) in KNOWN_STATUSES else "other"
    return method, route_template(scope), code


def route_template(scope: Scope) -> str:
    """The matched route as a template (``/api/v1/tasks/{task_id}``), or ``unmatched``.

    FastAPI leaves the *original* route in the scope, whose path lacks the prefixes of the
    routers it was included into; those prefixes are literal, so recover them from the
    request path. The recovered prefix is always part of a literal router prefix, so the
    set of labels stays fixed (no router here has a path parameter in its prefix)."""
    route = scope.get("route")
    regex = getattr(route, "path_regex", None)
    template = getattr(route, "path_format", None)
    if regex is None or template is None:
        return "unmatched"
    path: str = scope["path"]
    for cut, char in enumerate(path):
        if char == "/" and regex.match(path[cut:]):
            return path[:cut] + template
    return template


class ServiceCollector(Collector):
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("selextract_tasks", "Tasks by state", labels=["state"])
        try:
            with session_scope(self.settings) as session:
                counts = dict(session.execute(select(Task.state, func.count()).group_by(Task.state)).all())
            for state in TaskState:
                tasks.add_metric([state.value], counts.get(state, 0))
            yield tasks
        except Exception as exc:
            log.warning("metrics: task counts unavailable: %s", exc)
        queue = self.settings.celery_queue
        try:
            # kombu keeps priority levels in sibling lists: name, name\x06\x163, ...
            depth = sum(int(self.client.llen(key)) for key in self._queue_keys(queue))
        except redis.RedisError as exc:
            log.warning("metrics: queue depth unavailable: %s", exc)
            return
        for name, help_text in (
            ("selextract_queue_depth", "Messages waiting in the task queue"),
            ("celery_queue_length", "Messages waiting in the task queue (name used by the scaling alerts)"),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["queue"])
            gauge.add_metric([queue], depth)
            yield gauge

    def _queue_keys(self, queue: str) -> list[str]:
        return [queue] + [f"{queue}\x06\x16{p}" for p in range(1, 10)]


def prepare_multiprocess() -> None:
    """With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR makes /metrics add up all of
    them; the directory must exist before the first sample is written."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)


def render(settings: Settings, client: redis.Redis) -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        process_registry = CollectorRegistry()
        MultiProcessCollector(process_registry)
    else:
        process_registry = REGISTRY
    service_registry = CollectorRegistry(auto_describe=False)
    service_registry.register(ServiceCollector(settings, client))
    return generate_latest(process_registry) + generate_latest(service_registry)
