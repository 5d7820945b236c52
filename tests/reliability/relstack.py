"""Machinery shared by the reliability tests: a throwaway local stack per phase, deployed
with the real Pulumi CLI through `tests/e2e/stack.py`, plus the probes the fault tests
need (SQL through `docker exec … psql`, Python inside the API container, bulk task
submission, waiting) and the report table printed at the end of the session.

Traffic goes only to 127.0.0.1 (the stack's published entry) or between the stack's own
containers (the test site runs on the stack network)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.stack import (
    ROOT,
    TESTSITE_IMAGE,
    LocalStack,
    docker,
    pulumi_bin,
    remove_leftovers,
    stack_resources,
)

# the test site lives on the stack's own Docker network (a private range); loopback and
# link-local stay refused even so (the SSRF guard's defaults)
ALLOW_PRIVATE = ["172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8"]
# phase -> published (http, https, monitoring) ports: never 8080/8443/9090 nor the e2e ones
PORTS = {1: (17080, 17443, 17090), 4: (27081, 27444, 27091)}
# A plan row only the test accounts use: the 500-task batch must not hit the sold plans'
# concurrency caps (enterprise: 100 queued or running). Inserted into the throwaway stack.
TEST_PLAN_ID = 90
DB_USER = DB_NAME = "selextract"


# --- the report ------------------------------------------------------------------------------

REPORT: list[dict[str, str]] = []


def report(layout: str, fault: str, happened: str, lost: str) -> None:
    """One row of the table printed at the end of the session (see conftest.py)."""
    REPORT.append({"layout": layout, "fault": fault, "happened": happened, "lost": lost})


def report_table() -> str:
    lines = ["| layout | fault or input | what happened | data lost |", "| --- | --- | --- | --- |"]
    for row in REPORT:
        cells = [row[k].replace("|", "/").replace("\n", " ") for k in ("layout", "fault", "happened", "lost")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- processes -------------------------------------------------------------------------------


def overrides(phase: int, **extra: Any) -> dict[str, Any]:
    http, https, prom = PORTS[phase]
    config: dict[str, Any] = {
        "selextract:phase": phase,
        "selextract:local": {"httpPort": http, "httpsPort": https, "monitoringPort": prom},
        "selextract:api": {"servers": 2, "containersPerServer": 1, "uvicornWorkers": 2 if phase < 3 else 1},
        "selextract:workers": {
            "servers": 2,
            "containersPerServer": 2 if phase < 2 else 1,
            "concurrency": 4,
            "cpus": 1,
            "memoryMb": 768,
        },
        "selextract:scraper": {"allowedNetworks": ALLOW_PRIVATE, "domainDelayMs": 0, "domainConcurrency": 64},
    }
    config.update(extra)
    return config


# What the Pulumi program, the images and the ops CLI are made of (infra/images.py hashes
# common/ app/ worker/ requirements/ into the image tag).
SNAPSHOT = ("stacks", "infra", "configs", "app", "worker", "common", "requirements", "ops")


_snapshot_lock = threading.Lock()
_snapshot: list[Path] = []


def snapshot_tree(parent: Path) -> Path:
    """One copy of the tree per test session, shared by every stack of the session."""
    with _snapshot_lock:
        if not _snapshot:
            src = parent / "src"
            for top in SNAPSHOT:
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
                shutil.copytree(ROOT / top, src / top, ignore=ignore)
            _snapshot.append(src)
        return _snapshot[0]


@dataclass
class SnapshotStack(LocalStack):
    """A LocalStack whose Pulumi program, image sources and ops CLI are a copy of the tree
    taken once per session, so a run converges on one version of the code even while the
    working tree changes under it (a shared development machine)."""

    src: Path = ROOT

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["PYTHONPATH"] = str(self.src)
        return env


def create_stack(name: str, workdir: Path, config: dict[str, Any]) -> SnapshotStack:
    src = snapshot_tree(workdir.parent)
    stack = SnapshotStack.create(name, workdir, config)
    assert isinstance(stack, SnapshotStack)
    stack.src = src
    project = yaml.safe_load((workdir / "Pulumi.yaml").read_text())
    project["main"] = str(src / "stacks")
    (workdir / "Pulumi.yaml").write_text(yaml.safe_dump(project))
    return stack


@dataclass
class Deployed:
    """A deployed throwaway stack and the probes the tests use on it."""

    stack: LocalStack
    phase: int
    outputs_log: list[str] = field(default_factory=list)  # pulumi stdout/stderr, grepped for secrets

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def layout(self) -> str:
        return f"phase {self.phase}"

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{PORTS[self.phase][1]}"

    @property
    def site(self) -> str:
        return f"http://{self.name}-testsite:8080"

    @property
    def postgres(self) -> str:
        return f"{self.name}-db-01-postgres-1"

    @property
    def redis(self) -> str:
        return f"{self.name}-redis-01-redis-1"

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.base, verify=False, timeout=timeout)

    def pulumi(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = self.stack.pulumi(*args, check=check, timeout=timeout)
        self.outputs_log.append(proc.stdout + proc.stderr)
        return proc

    def up(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("up", "--yes", "--stack", self.name, "--suppress-progress")

    # --- containers --------------------------------------------------------------------------
    def containers(self, role: str | None = None, *, running: bool = True) -> list[str]:
        args = ["ps", "--format", "{{.Names}}", "--filter", f"label=selextract.stack={self.name}"]
        if role:
            args += ["--filter", f"label=selextract.role={role}"]
        if not running:
            args.insert(1, "-a")
        return sorted(docker(*args).stdout.split())

    def api(self) -> str:
        running = self.containers("api")
        assert running, f"{self.name}: no running API container"
        return running[0]

    def start_testsite(self) -> None:
        docker("rm", "-f", f"{self.name}-testsite", check=False)
        docker(
            "run", "-d", "--name", f"{self.name}-testsite", "--network", f"{self.name}-net",
            "--label", f"selextract.stack={self.name}", TESTSITE_IMAGE,
        )  # fmt: skip

    def stop_testsite(self) -> None:
        docker("rm", "-f", f"{self.name}-testsite", check=False)

    # --- probes ------------------------------------------------------------------------------
    def sql(self, query: str, timeout: float = 60) -> list[list[str]]:
        out = docker(
            "exec", "-i", self.postgres, "psql", "-U", DB_USER, "-d", DB_NAME, "-At", "-F", "\t",
            "-v", "ON_ERROR_STOP=1", "-c", query, timeout=timeout,
        ).stdout  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def api_python(self, code: str, *args: str, stdin: str = "", timeout: float = 120) -> str:
        """Run `code` with the app's own settings inside a running API container."""
        proc = subprocess.run(
            ["docker", "exec", "-i", self.api(), "python", "-c", code, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"python in {self.api()} failed:\n{proc.stderr[-3000:]}"
        return proc.stdout

    def account(self, email: str) -> dict[str, str]:
        """A new API key for `email` (account created if needed) on the test plan."""
        out = docker("exec", self.api(), "python", "-m", "app.admin", "create-key", "--email", email, "--name", "rel")
        key = out.stdout.strip()
        assert key.startswith("sx_"), out.stdout + out.stderr
        self.sql(
            "INSERT INTO plans (id, name, monthly_credits, rate_limit_per_minute, max_concurrent_tasks) "
            f"VALUES ({TEST_PLAN_ID}, 'reliability-test', 10000000, 100000, 100000) ON CONFLICT (id) DO NOTHING; "
            f"UPDATE users SET plan_id = {TEST_PLAN_ID} WHERE email = '{email}'"
        )
        return {"Authorization": f"Bearer {key}"}

    def task_states(self, email: str) -> dict[str, int]:
        rows = self.sql(
            "SELECT t.state, count(*) FROM tasks t JOIN users u ON u.id = t.user_id "
            f"WHERE u.email = '{email}' GROUP BY t.state"
        )
        return {state: int(n) for state, n in rows}

    def wait_tasks_done(self, email: str, expected: int, timeout: float) -> tuple[dict[str, int], float]:
        """Wait until `expected` tasks of `email` are terminal; (states, seconds waited)."""
        start = time.monotonic()
        while True:
            states = self.task_states(email)
            done = sum(n for s, n in states.items() if s in ("completed", "failed", "cancelled"))
            if done >= expected or time.monotonic() - start > timeout:
                return states, time.monotonic() - start
            time.sleep(2)

    def wait_ready(self, timeout: float = 180) -> float:
        start = time.monotonic()
        last: object = None
        with self.client(timeout=10) as client:
            while time.monotonic() - start < timeout:
                try:
                    last = client.get("/health/ready")
                    if last.status_code == 200:  # type: ignore[attr-defined]
                        return time.monotonic() - start
                except httpx.HTTPError as exc:
                    last = exc
                time.sleep(1)
        raise AssertionError(f"{self.name}: API not ready after {timeout} s: {last!r} {getattr(last, 'text', '')}")

    def ledger(self, email: str) -> dict[str, dict[str, int]]:
        """task id -> {kind: sum of credits, kind+'_rows': rows} for `email`'s tasks."""
        rows = self.sql(
            "SELECT l.task_id, l.kind, count(*), sum(l.credits) FROM usage_ledger l JOIN users u ON u.id = l.user_id "
            f"WHERE u.email = '{email}' GROUP BY l.task_id, l.kind"
        )
        out: dict[str, dict[str, int]] = {}
        for task_id, kind, n, credits in rows:
            out.setdefault(task_id, {})[kind] = int(credits)
            out[task_id][kind + "_rows"] = int(n)
        return out


def wait_healthy(container: str, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status = docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
                        container, check=False).stdout.strip()  # fmt: skip
        if status in ("healthy", "running"):
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"{container} not healthy after {timeout} s")


WARM_UP = """
from common.storage import get_storage
get_storage().put("reliability/warm-up.json", b"{}", "application/json")
"""


def warm_up_results(deployed: Deployed) -> None:
    """Write one result object right after a deploy of phase 2+. Works around the object
    store's slot exhaustion (see test_phase4_faults.py::test_every_bucket_accepts_writes):
    whichever collection writes first takes every volume slot, and SeaweedFS's own filer log
    does so ~60 s after start, after which the results bucket can never be written."""
    if deployed.phase >= 2:
        deployed.api_python(WARM_UP)


def not_running(stack: str) -> str:
    """Each container of `stack` that is not running, with its state and last log lines."""
    out = []
    label = f"label=selextract.stack={stack}"
    for name in docker("ps", "-a", "--format", "{{.Names}}", "--filter", label).stdout.split():
        state = docker("inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}} "
                       "oom={{.State.OOMKilled}} {{.State.Error}}", name, check=False).stdout.strip()  # fmt: skip
        if not state.startswith("running"):
            logs = docker("logs", "--tail", "15", name, check=False)
            out.append(f"{name}: {state}\n{(logs.stdout + logs.stderr)[-2000:]}")
    return "\n".join(out) or "(all running)"


def first_up(deployed: Deployed) -> None:
    """The fresh stack's `pulumi up`; a failure names the containers that are not running
    and why (a Docker start error such as a taken port otherwise surfaces only as a later
    step failing in that container)."""
    try:
        deployed.up()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncontainers not running:\n{not_running(deployed.name)}") from None


def deploy_stack(
    phase: int, workdir: Path, then: Callable[[Deployed], Any] | None = None
) -> tuple[Deployed | None, float, BaseException | None, Any]:
    """A plain deploy of rel-p<phase> (leftovers of a dead run removed first), the test
    site started, the API ready, then `then(deployed)`; (deployed, seconds, error, what
    `then` returned or raised). Used in a background thread, so errors are returned, not
    raised; a returned Deployed must be destroyed."""
    name = f"rel-p{phase}"
    deployed: Deployed | None = None
    started = time.monotonic()
    try:
        remove_leftovers(name)
        deployed = Deployed(create_stack(name, workdir, overrides(phase)), phase)
        first_up(deployed)
        warm_up_results(deployed)
        deployed.start_testsite()
        deployed.wait_ready()
    except BaseException as exc:  # handed to the fixture, which raises it
        return deployed, round(time.monotonic() - started, 1), exc, None
    seconds = round(time.monotonic() - started, 1)
    try:
        extra = then(deployed) if then else None
    except BaseException as exc:  # handed to whoever uses `then`'s result
        extra = exc
    return deployed, seconds, None, extra


# --- submitting tasks --------------------------------------------------------------------------


@dataclass
class Submission:
    key: str  # Idempotency-Key
    started: float  # monotonic
    status: int | None  # None: no HTTP answer (connection error, timeout)
    task_id: str | None
    detail: str = ""


def submit(client: httpx.Client, headers: dict[str, str], key: str, body: dict[str, Any]) -> Submission:
    started = time.monotonic()
    try:
        response = client.post("/api/v1/tasks", headers={**headers, "Idempotency-Key": key}, json=body)
    except httpx.HTTPError as exc:
        return Submission(key, started, None, None, f"{type(exc).__name__}: {exc}")
    task_id = response.json().get("id") if response.status_code in (200, 201) else None
    return Submission(key, started, response.status_code, task_id, "" if task_id else response.text[:300])


def submit_until_accepted(
    client: httpx.Client, headers: dict[str, str], key: str, body: dict[str, Any], timeout: float = 120
) -> Submission:
    """A well-behaved client: retries with the same Idempotency-Key until accepted."""
    deadline = time.monotonic() + timeout
    while True:
        sub = submit(client, headers, key, body)
        if sub.task_id or time.monotonic() > deadline:
            return sub
        time.sleep(1.0)


def submit_many(
    deployed: Deployed, headers: dict[str, str], bodies: dict[str, dict[str, Any]], threads: int = 6
) -> dict[str, Submission]:
    def one(item: tuple[str, dict[str, Any]]) -> Submission:
        with deployed.client() as client:
            return submit_until_accepted(client, headers, *item)

    with ThreadPoolExecutor(threads) as pool:
        return {s.key: s for s in pool.map(one, bodies.items())}


LOAD_TIMEOUT_S = 5.0  # the steady-load client gives up on a request after this long


class SubmitLoad:
    """Steady background submissions from `clients` independent clients (each: one 1-URL
    task every `interval` s, each with its own Idempotency-Key, and a GET of the account's
    task list in between); every answer is kept with its start time so it can be matched
    to the fault window it fell into. Two clients keep sampling while one waits on a
    request that hangs."""

    def __init__(
        self, deployed: Deployed, headers: dict[str, str], prefix: str, interval: float = 0.25, clients: int = 2
    ) -> None:
        self.deployed, self.headers, self.prefix, self.interval = deployed, headers, prefix, interval
        self.submissions: list[Submission] = []
        self.reads: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(f"{prefix}-c{i}",), daemon=True) for i in range(clients)
        ]

    def body(self, n: int) -> dict[str, Any]:
        return {
            "urls": [f"{self.deployed.site}/pages/page-{n % 5 + 1}.html?load={self.prefix}-{n}"],
            "extract": {"title": "h1::text"},
            "options": {"retries": 2, "timeout": 15},
        }

    def __enter__(self) -> SubmitLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, prefix: str) -> None:
        n = 0
        deadline = time.monotonic() + 600  # bounded whatever happens
        with self.deployed.client(timeout=LOAD_TIMEOUT_S) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.submissions.append(submit(client, self.headers, f"{prefix}-{n}", self.body(n)))
                started = time.monotonic()
                try:
                    status: int | None = client.get("/api/v1/tasks?limit=1", headers=self.headers).status_code
                except httpx.HTTPError:
                    status = None
                self.reads.append((started, status))
                n += 1
                self._stop.wait(self.interval)


# --- Pulumi: an interrupted `pulumi up` and the repair ------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the Pulumi CLI starts its language host and
    provider plugins in process groups of their own, so killing its group misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything it started, like a crashed CI runner."""
    for victim in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def interrupted_up(deployed: Deployed, trigger: Callable[[], bool], timeout: float = 600) -> dict[str, Any]:
    """Start `pulumi up` and SIGKILL it (with its language host and plugins, like a crashed
    CI runner) as soon as `trigger()` holds."""
    stack = deployed.stack
    log = stack.workdir / "interrupted-up.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(pulumi_bin()), "up", "--yes", "--stack", stack.name, "--suppress-progress", "--non-interactive"],
            cwd=stack.workdir,
            env=stack.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        killed = False
        try:
            while time.monotonic() - started < timeout:
                if proc.poll() is not None:
                    break
                if trigger():
                    kill_tree(proc.pid)
                    killed = True
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait(timeout=60)
    deployed.outputs_log.append(log.read_text())
    return {
        "killed": killed,
        "after_s": round(time.monotonic() - started, 1),
        "containers": deployed.containers(running=False),
    }


def pending_operations(deployed: Deployed) -> list[dict[str, Any]]:
    state = json.loads(deployed.stack.export_state())
    return list(state["deployment"].get("pending_operations") or [])


# --- tear-down ---------------------------------------------------------------------------------


def destroy(deployed: Deployed) -> dict[str, list[str]]:
    deployed.stop_testsite()
    deployed.pulumi("destroy", "--yes", "--stack", deployed.name, "--suppress-progress")
    left = stack_resources(deployed.name)
    remove_leftovers(deployed.name)
    return left


# --- results disk: a size-limited backing store for one named volume ---------------------------


def volume_mountpoint(volume: str) -> str:
    return docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).stdout.strip()


def mounted(path: str) -> bool:
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == path for line in fh)


def release_small_disk(volume: str) -> None:
    """Unmount the tmpfs laid over `volume` (containers keep their own reference)."""
    path = f"{docker_root()}/volumes/{volume}/_data"
    while mounted(path):
        subprocess.run(["umount", "-l", path], check=False)


def make_small_disk(volume: str, stack: str, size_mb: int, uid: int = 10001) -> str:
    """Create the named volume the stack will declare (Docker's `volume create` of an
    existing local volume returns it, so Pulumi adopts it unchanged: no options, same
    labels, no diff) and lay a `size_mb` tmpfs over its data directory: the deployed,
    unmodified containers then write to a disk that really fills up, without filling the
    host disk."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs over a Docker volume: run as root (as CI does)")
    docker("volume", "create", "--label", f"selextract.stack={stack}", volume)
    path = volume_mountpoint(volume)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,uid={uid},gid={uid},mode=0755", "tmpfs", path], check=True
    )
    return path


def docker_root() -> str:
    return docker("info", "-f", "{{.DockerRootDir}}").stdout.strip() or "/var/lib/docker"


def fill(path: Path) -> int:
    """Write zeros to `path` until the filesystem is full; bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for block in (1 << 20, 1 << 12):
            chunk = b"\0" * block
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError:
                    break
    finally:
        os.close(fd)
    return written


# --- the ops CLI -------------------------------------------------------------------------------


def selextract_cli(deployed: Deployed, backup_dir: Path, *args: str, timeout: float = 600, check: bool = True) -> Any:
    """`selextract --stack <name> … --format json` against the throwaway stack (its stack
    file lives in the stack's work dir, which the CLI reads through SELEXTRACT_PROJECT_DIR)."""
    stack = deployed.stack
    src = stack.src if isinstance(stack, SnapshotStack) else ROOT
    env = {**os.environ, "SELEXTRACT_PROJECT_DIR": str(stack.workdir), "PYTHONPATH": str(src)}
    env.pop("DATABASE_URL", None)  # docker mode, not URL mode
    proc = subprocess.run(
        [sys.executable, "-c", "from ops.cli import app; app()", "--stack", deployed.name,
         "--backup-dir", str(backup_dir), *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=src,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("{")), None)
    failed = f"selextract {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert start is not None and (proc.returncode == 0 or not check), failed
    return json.loads("\n".join(lines[start:]))


# --- fingerprints ------------------------------------------------------------------------------


def table_fingerprint(deployed: Deployed) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row's text, per table of the public schema."""
    tables = [r[0] for r in deployed.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_type = 'BASE TABLE' ORDER BY 1"
    )]  # fmt: skip
    union = " UNION ALL ".join(
        f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{t}\" x"
        for t in tables
    )
    return {name: (int(n), digest) for name, n, digest in deployed.sql(union)}


OBJECTS_CODE = """
import hashlib, json
from common.storage import get_storage, S3Storage
s = get_storage()
out = {}
if isinstance(s, S3Storage):
    for page in s.client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = hashlib.md5(s.get(o["Key"])).hexdigest()
else:
    for p in sorted(s.root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(s.root))] = hashlib.md5(p.read_bytes()).hexdigest()
print(json.dumps(out))
"""


def object_fingerprint(deployed: Deployed) -> dict[str, str]:
    return json.loads(deployed.api_python(OBJECTS_CODE))


# --- small things ------------------------------------------------------------------------------


def new_id() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.monotonic()
    yield lambda: round(time.monotonic() - start, 1)


def generated_passwords(deployed: Deployed) -> dict[str, str]:
    """Every RandomPassword the stack generated (resource name -> value)."""
    state = json.loads(deployed.stack.pulumi("stack", "export", "--show-secrets", "--stack", deployed.name).stdout)
    out = {}
    for res in state["deployment"]["resources"]:
        if res["type"] == "random:index/randomPassword:RandomPassword":
            value = (res.get("outputs") or {}).get("result")
            if isinstance(value, dict):  # a secret envelope that was not decrypted
                value = value.get("plaintext")
            if isinstance(value, str) and value:
                out[res["urn"].rsplit("::", 1)[-1]] = value
    # the private key of the entry's bootstrap TLS certificate (derived in the program, not a
    # resource): one line of its PEM body, as the deployed proxy holds it
    for role in ("entry", "lb"):
        for name in deployed.containers(role):
            pem = docker("exec", name, "cat", "/etc/selextract/tls/key.pem", check=False).stdout.splitlines()
            body = [line for line in pem if line and not line.startswith("-----")]
            if len(body) > 4:
                out["tlsBootstrapKey"] = body[len(body) // 2]
    return out


def grep_secrets(texts: Iterable[tuple[str, str]], secrets: dict[str, str]) -> list[str]:
    """'<where>: <secret name>' for every secret value found in any (where, text)."""
    hits = []
    for where, text in texts:
        for name, value in secrets.items():
            if value in text:
                hits.append(f"{where}: {name}")
    return hits
