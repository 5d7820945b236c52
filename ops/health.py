"""`selextract health`: the deployment guide's health-check.sh as checks with verdicts.

Each check answers ok / warn / fail. Critical checks (API, database, Redis, workers,
result storage) are what `--critical-only` runs: the service is down without them. Disk
space and the TLS certificate degrade slowly and warn first. The command exits 1 when
any check fails (warnings do not fail it), so cron and CI can act on the exit code.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from ops.access import Container, OpsError, Target, run

Status = Literal["ok", "warn", "fail"]

DISK_WARN, DISK_FAIL = 80.0, 90.0  # percent used (80 % is the storage scaling trigger)
CERT_WARN_DAYS, CERT_FAIL_DAYS = 14, 7  # certbot renews at 30 days left; 14 means it is failing
CONNECTIONS_WARN = 80.0  # percent of max_connections (the phase-1 trigger)
REDIS_MEMORY_WARN = 80.0  # percent of maxmemory (noeviction: full means refused writes)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    critical: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class HealthCheck:
    name: str
    critical: bool
    run: Callable[[], tuple[Status, str]]


@dataclass
class HealthReport:
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    @property
    def failing(self) -> list[str]:
        return [r.name for r in self.results if r.status == "fail"]

    @property
    def warnings(self) -> list[str]:
        return [r.name for r in self.results if r.status == "warn"]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "failing": self.failing,
            "warnings": self.warnings,
            "checks": [asdict(r) for r in self.results],
        }


def _timed(check: HealthCheck) -> CheckResult:
    started = time.monotonic()
    try:
        status, detail = check.run()
    except (OpsError, OSError, httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        status, detail = "fail", f"{type(exc).__name__}: {exc}" if not isinstance(exc, OpsError) else str(exc)
    return CheckResult(check.name, status, check.critical, detail[:500], round(time.monotonic() - started, 3))


def run_checks(checks: Iterable[HealthCheck], *, critical_only: bool = False) -> HealthReport:
    return HealthReport([_timed(c) for c in checks if c.critical or not critical_only])


# --- the checks ------------------------------------------------------------------------------


def check_api(url: str, timeout: float = 10.0) -> tuple[Status, str]:
    with httpx.Client(verify=False, timeout=timeout, follow_redirects=True) as client:
        resp = client.get(f"{url.rstrip('/')}/health")
    if resp.status_code != 200:
        return "fail", f"GET {url}/health → HTTP {resp.status_code}"
    try:
        version = resp.json().get("version", "?")
    except ValueError:
        return "fail", f"GET {url}/health → not JSON"
    return "ok", f"{url}/health answers (version {version}, {resp.elapsed.total_seconds() * 1000:.0f} ms)"


def check_api_ready(url: str, timeout: float = 15.0) -> tuple[Status, str]:
    with httpx.Client(verify=False, timeout=timeout, follow_redirects=True) as client:
        resp = client.get(f"{url.rstrip('/')}/health/ready")
    try:
        body = resp.json()
    except ValueError:
        return "fail", f"GET {url}/health/ready → HTTP {resp.status_code}, not JSON"
    if resp.status_code == 200:
        return "ok", "the API reaches " + ", ".join(sorted(body.get("checks", {})))
    return "fail", f"the API cannot reach: {', '.join(body.get('failing', [])) or resp.status_code}"


def check_database(target: Target) -> tuple[Status, str]:
    target.postgres.ping()
    used, limit = target.postgres.connections()
    percent = used / limit * 100
    size = target.postgres.size_bytes() / 1e9
    detail = f"{used}/{limit} connections ({percent:.0f}%), {size:.2f} GB"
    return ("warn" if percent > CONNECTIONS_WARN else "ok"), detail


def check_redis(target: Target) -> tuple[Status, str]:
    if not target.redis.ping():
        return "fail", "PING did not answer PONG"
    used, maxmemory = target.redis.memory()
    keys = sum(target.redis.keyspace().values())
    if maxmemory:
        percent = used / maxmemory * 100
        status: Status = "warn" if percent > REDIS_MEMORY_WARN else "ok"
        return status, f"PONG, {keys} keys, memory {percent:.0f}% of maxmemory"
    return "ok", f"PONG, {keys} keys, {used / 1e6:.1f} MB used"


def check_workers(target: Target, timeout: float = 3.0) -> tuple[Status, str]:
    replies = target.workers.ping(timeout=timeout)
    expected = target.workers.expected
    if not replies:
        return "fail", "no Celery worker answered the ping" + (f" (expected {expected})" if expected else "")
    if expected and len(replies) < expected:
        return "warn", f"{len(replies)} of {expected} workers answered: {', '.join(replies)}"
    return "ok", f"{len(replies)} worker(s) answered: {', '.join(replies)}"


def check_storage(target: Target) -> tuple[Status, str]:
    info = target.results.check()
    where = info.get("path") or f"bucket {info.get('bucket')}"
    return "ok", f"{info['backend']} storage usable ({where})"


def disk_usage_in(container: Container, path: str) -> tuple[float, float]:
    """(percent used, GB free) of the filesystem holding `path` inside a container."""
    out = run(container.argv(["df", "-P", "-k", path]), what=f"df in {container.name}", timeout=30).decode()
    fields = out.strip().splitlines()[-1].split()
    size_kb, avail_kb = int(fields[1]), int(fields[3])
    used_percent = float(fields[4].rstrip("%"))
    return used_percent, avail_kb / 1e6 if size_kb else 0.0


DATA_PATHS = {"postgres": "/var/lib/postgresql/data", "redis": "/data", "objectstore": "/data"}


def check_disk(target: Target) -> tuple[Status, str]:
    """Data volumes of the containers (docker) or the result directory here (url)."""
    import shutil

    readings: list[tuple[str, float]] = []
    for role, container in target.data_containers.items():
        percent, free = disk_usage_in(container, DATA_PATHS[role])
        readings.append((f"{role} {percent:.0f}% ({free:.1f} GB free)", percent))
    for path in target.local_paths:
        usage = shutil.disk_usage(path)
        percent = usage.used / usage.total * 100
        readings.append((f"{path} {percent:.0f}% ({usage.free / 1e9:.1f} GB free)", percent))
    if not readings:
        return "ok", "no data volumes to check"
    worst = max(p for _, p in readings)
    status: Status = "fail" if worst >= DISK_FAIL else "warn" if worst >= DISK_WARN else "ok"
    return status, ", ".join(text for text, _ in readings)


def certificate_days_left(host: str, port: int, *, server_name: str | None = None, timeout: float = 10.0) -> float:
    """Days until the certificate served on host:port expires (not verified: self-signed ok)."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=server_name or host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OpsError(f"{host}:{port} presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left.total_seconds() / 86400


def check_certificate(url: str) -> tuple[Status, str]:
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "warn", f"{url} is not served over TLS"
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    days = certificate_days_left(host, port)
    detail = f"{host}:{port} certificate expires in {days:.0f} days"
    if days < CERT_FAIL_DAYS:
        return "fail", detail if days >= 0 else f"{host}:{port} certificate EXPIRED {-days:.0f} days ago"
    return ("warn" if days < CERT_WARN_DAYS else "ok"), detail


def standard_checks(target: Target) -> list[HealthCheck]:
    checks: list[HealthCheck] = []
    api = target.api_url
    if api:
        checks.append(HealthCheck("api", True, lambda: check_api(api)))
    checks += [
        HealthCheck("database", True, lambda: check_database(target)),
        HealthCheck("redis", True, lambda: check_redis(target)),
        HealthCheck("workers", True, lambda: check_workers(target)),
        HealthCheck("storage", True, lambda: check_storage(target)),
        HealthCheck("disk", False, lambda: check_disk(target)),
    ]
    if api:
        checks.append(HealthCheck("api-ready", False, lambda: check_api_ready(api)))
        if api.startswith("https://"):
            checks.append(HealthCheck("certificate", False, lambda: check_certificate(api)))
    return checks
