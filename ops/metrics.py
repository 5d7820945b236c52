"""The numbers the scaling decision, the cost optimizer and the dashboard read.

Three sources, one shape (`Metrics`):
- a file (`--metrics FILE`, JSON or YAML) with the same names, or the names of the
  Prometheus recording rules in configs/alert-rules.yml (`celery_queue_length`, …);
- Prometheus (`--prometheus URL`): instant queries over its HTTP API, each metric with
  fallbacks (recording rule first, then the raw expression it is recorded from);
- the database itself for business numbers Prometheus does not have (active users,
  database size), via `ops.access` (see `business_metrics`).

Units: percentages 0-100, sizes in GB (10^9 bytes), seconds, EUR per month.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

GB = 1e9


class MetricsError(RuntimeError):
    """Metrics could not be read; the message says from where and why."""


class MetricsInputError(MetricsError, ValueError):
    """A metrics file that is not what it should be (a usage error, exit 2)."""


class HostUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu_percent: float | None = Field(None, ge=0, le=100)
    memory_percent: float | None = Field(None, ge=0, le=100)


# File/Prometheus names accepted for each field (recording rules of configs/alert-rules.yml).
ALIASES = {
    "celery_queue_length": "queue_depth",
    "selextract_queue_depth": "queue_depth",
    "api_response_time_95th": "api_p95_seconds",
    "disk_usage_percent": "storage_percent",
    "postgres_cpu_usage_percent": "db_cpu_percent",
    "cpu_percent": "cpu_percent_7d",
    "memory_percent": "memory_percent_7d",
    "revenue_eur": "monthly_revenue_eur",
}


class Metrics(BaseModel):
    """One observation of the service. Every field may be missing (no data)."""

    model_config = ConfigDict(extra="forbid")

    cpu_percent_7d: float | None = Field(None, ge=0, le=100)
    memory_percent_7d: float | None = Field(None, ge=0, le=100)
    active_users: float | None = Field(None, ge=0)
    db_size_gb: float | None = Field(None, ge=0)
    monthly_revenue_eur: float | None = Field(None, ge=0)
    db_cpu_percent: float | None = Field(None, ge=0, le=100)
    db_connections_percent: float | None = Field(None, ge=0)
    queue_depth: float | None = Field(None, ge=0)
    api_p95_seconds: float | None = Field(None, ge=0)
    storage_percent: float | None = Field(None, ge=0, le=100)
    hosts: dict[str, HostUsage] = {}
    source: str = "unknown"
    collected_at: float = Field(default_factory=time.time)

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None  # Prometheus answers NaN for an empty histogram: that is "no data"
        return v

    def get(self, name: str) -> float | None:
        value = getattr(self, name, None)
        return float(value) if isinstance(value, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def merged(self, other: Metrics) -> Metrics:
        """Self, with the gaps filled from `other`."""
        data = self.model_dump()
        for key, value in other.model_dump().items():
            if key in ("source", "collected_at"):
                continue
            if data.get(key) in (None, {}):
                data[key] = value
        data["source"] = f"{self.source}+{other.source}"
        return Metrics.model_validate(data)


def parse_metrics(data: Any, source: str) -> Metrics:
    if not isinstance(data, dict):
        raise MetricsInputError(f"{source}: expected a mapping of metric names to numbers")
    clean: dict[str, Any] = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name in clean:
            raise MetricsInputError(f"{source}: {key} and another name both set {name}")
        clean[name] = value
    clean.setdefault("source", source)
    try:
        return Metrics.model_validate(clean)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown metric" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {key}: {msg}")
        raise MetricsInputError("\n".join(problems)) from None


def load_metrics_file(path: Path) -> Metrics:
    try:
        text = path.read_text()
    except OSError as exc:
        raise MetricsInputError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise MetricsInputError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    return parse_metrics(data, source=f"file:{path}")


# PromQL per metric, tried in order until one answers. The first entry is the recording
# rule of configs/alert-rules.yml where one exists; the rest derive it from raw series.
CPU_RAW = '100 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m])) * 100'
MEM_RAW = "(1 - sum(node_memory_MemAvailable_bytes) / sum(node_memory_MemTotal_bytes)) * 100"
PROMQL: dict[str, tuple[str, ...]] = {
    "cpu_percent_7d": (f"avg_over_time(({CPU_RAW})[7d:5m])", CPU_RAW),
    "memory_percent_7d": (f"avg_over_time(({MEM_RAW})[7d:5m])", MEM_RAW),
    # "consistently": the lowest value of the last 15 minutes is over the line
    "db_cpu_percent": ("max(min_over_time(postgres_cpu_usage_percent[15m]))",),
    "db_connections_percent": ("sum(pg_stat_activity_count) / max(pg_settings_max_connections) * 100",),
    "db_size_gb": ('sum(pg_database_size_bytes{datname="selextract"}) / 1e9',),
    "queue_depth": (
        "max(min_over_time(celery_queue_length[10m]))",
        "max(celery_queue_length)",
        "max(selextract_queue_depth)",
    ),
    "api_p95_seconds": (
        "max(api_response_time_95th)",
        "histogram_quantile(0.95, sum by (le) (rate(selextract_http_request_duration_seconds_bucket[5m])))",
    ),
    "storage_percent": (
        "max(disk_usage_percent)",
        'max((1 - node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"} '
        '/ node_filesystem_size_bytes{fstype!~"tmpfs|overlay"}) * 100)',
    ),
}
HOST_PROMQL = {
    "cpu_percent": '100 - avg by (host) (rate(node_cpu_seconds_total{mode="idle"}[5m])) * 100',
    "memory_percent": "(1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) * 100",
}


class Prometheus:
    """A small client for Prometheus' instant-query HTTP API."""

    def __init__(self, url: str, *, timeout: float = 10.0, auth: tuple[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout, auth=auth, verify=False)

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        try:
            resp = self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        except httpx.HTTPError as exc:
            raise MetricsError(f"prometheus {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            raise MetricsError(f"prometheus {self.url}: HTTP {resp.status_code}, not a JSON answer") from None
        if body.get("status") != "success":
            raise MetricsError(f"prometheus {self.url}: {body.get('errorType')}: {body.get('error')} ({expr})")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise MetricsError(f"prometheus {self.url}: unexpected result type {data['resultType']} for {expr}")
        out = []
        for sample in data["result"]:
            value = float(sample["value"][1])
            if math.isfinite(value):
                out.append((sample["metric"], value))
        return out

    def first(self, exprs: Iterable[str]) -> tuple[float | None, str | None]:
        for expr in exprs:
            result = self.query(expr)
            if result:
                return result[0][1], expr
        return None, None

    def close(self) -> None:
        self.client.close()


def from_prometheus(url: str, *, auth: tuple[str, str] | None = None) -> Metrics:
    prom = Prometheus(url, auth=auth)
    try:
        values: dict[str, Any] = {}
        for name, exprs in PROMQL.items():
            values[name], _ = prom.first(exprs)
        hosts: dict[str, dict[str, float]] = {}
        for field, expr in HOST_PROMQL.items():
            for labels, value in prom.query(f"avg_over_time(({expr})[7d:5m])") or prom.query(expr):
                host = labels.get("host") or labels.get("instance") or "?"
                hosts.setdefault(host, {})[field] = min(max(value, 0.0), 100.0)
        values["hosts"] = hosts
    finally:
        prom.close()
    values["source"] = f"prometheus:{url}"
    return Metrics.model_validate(values)


# Business numbers from the service's own database (not in Prometheus).
ACTIVE_USERS_SQL = (
    "SELECT count(*) FROM users WHERE is_active AND ("
    "last_login_at > now() - interval '30 days' OR EXISTS ("
    "SELECT 1 FROM tasks t WHERE t.user_id = users.id AND t.created_at > now() - interval '30 days'))"
)


def business_metrics(
    query: Callable[[str], list[list[str]]],
    db_size_bytes: int | None,
    connections: tuple[int, int] | None = None,
) -> Metrics:
    """Active users (30 days), database size and connection use, read with `query(sql) -> rows`.

    Revenue is not in the database (Lemon Squeezy keeps it); put `monthly_revenue_eur`
    in a metrics file to have the revenue row of the matrix considered.
    """
    values: dict[str, Any] = {"source": "database"}
    if db_size_bytes is not None:
        values["db_size_gb"] = round(db_size_bytes / GB, 3)
    if connections is not None and connections[1] > 0:
        values["db_connections_percent"] = round(connections[0] / connections[1] * 100, 1)
    try:
        rows = query(ACTIVE_USERS_SQL)
        values["active_users"] = float(rows[0][0])
    except Exception:  # the schema may not be migrated yet: no data, not an error
        pass
    return Metrics.model_validate(values)
