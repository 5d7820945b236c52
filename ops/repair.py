"""Puts a stack back in shape after a `pulumi up` that was killed mid-way (CI runner lost,
laptop closed, SIGKILL), so the next `pulumi up` converges instead of failing.

A killed run leaves two things behind. The file backend's lock: removed only when the
process that took it is gone (same host, pid dead), so a concurrent `pulumi up` keeps its
lock. And pending create operations: Docker objects that exist but that Pulumi never
recorded. Pulumi documents resolving them by hand; this does what an operator would:
volumes and networks are imported (they may already hold data), containers are removed
(they are stateless, and one created but never started cannot be adopted; `pulumi up`
recreates it), anything else (image builds, random values) is cleared and redone.
`scripts/up.sh` and `selextract deploy` run it before every `pulumi up`; it changes
nothing when the last run ended normally.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.access import OpsError

Pulumi = Callable[..., subprocess.CompletedProcess[str]]
Progress = Callable[[str], None]

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
REPORT_PREFIX = "repair report: "
SETTLE_SECONDS = 300


@dataclass
class RepairReport:
    stale_locks: list[str] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.stale_locks or self.imported or self.removed or self.cleared)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def _pulumi_running(pid: int) -> bool:
    """Whether `pid` is still a Pulumi process (a recycled pid is not)."""
    try:
        return b"pulumi" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stale_locks(backend_url: str, stack: str, hostname: str | None = None) -> tuple[list[Path], list[str]]:
    """(locks whose process is dead, descriptions of live or foreign ones) for a file backend."""
    if not backend_url.startswith("file://"):
        return [], []
    root = Path(backend_url.removeprefix("file://")) / ".pulumi" / "locks"
    hostname = hostname or socket.gethostname()
    stale, held = [], []
    for lock in sorted(root.glob(f"**/{stack}/*.json")):
        try:
            content = json.loads(lock.read_text())
        except (OSError, ValueError):
            stale.append(lock)  # a lock file cut off mid-write by the kill itself
            continue
        pid, host = int(content.get("pid", 0)), str(content.get("hostname", ""))
        if host == hostname and not _pulumi_running(pid):
            stale.append(lock)
        else:
            held.append(f"pid {pid} on {host or '?'} since {content.get('timestamp', '?')}")
    return stale, held


def _docker_host(resource: Mapping[str, Any], resources: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The Docker endpoint of the resource's provider (ssh://… on Hetzner hosts; None: local)."""
    ref = str(resource.get("provider") or "")
    provider = resources.get(ref.rsplit("::", 1)[0]) if ref else None
    host = ((provider or {}).get("inputs") or {}).get("host")
    return host if isinstance(host, str) and host else None


def _docker(docker_host: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    prefix = ["docker", "-H", docker_host] if docker_host else ["docker"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, check=False)


def _settle(docker_host: str | None, name: str, progress: Progress, timeout: float = SETTLE_SECONDS) -> None:
    """Let a container the killed run started finish its first start before it goes: a
    database removed while it initialises its data directory leaves a volume the next
    container takes as initialised (no database, no role). Waits while it is running and
    its health check has not decided yet."""
    deadline = time.monotonic() + timeout
    told = False
    while time.monotonic() < deadline:
        state = _docker(
            docker_host, "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", name
        )
        status, _, health = state.stdout.strip().partition(" ")
        if state.returncode != 0 or status != "running" or health in ("", "healthy", "unhealthy"):
            return
        if not told:
            progress(f"repair: waiting for {name} to finish starting before it is removed")
            told = True
        time.sleep(1)


def pending_creates(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [op["resource"] for op in deployment.get("pending_operations") or [] if op.get("type") == "creating"]


def repair(stack: str, pulumi: Pulumi, backend_url: str, progress: Progress = print) -> RepairReport:
    """Make the next `pulumi up` of `stack` converge; raise OpsError if another run holds the lock."""
    report = RepairReport()
    stale, held = stale_locks(backend_url, stack)
    if held:
        raise OpsError(f"stack {stack} is locked by a running update ({'; '.join(held)}); wait for it to finish")
    for lock in stale:
        progress(f"repair: removing the lock of a killed run ({lock.name})")
        lock.unlink(missing_ok=True)
        report.stale_locks.append(lock.name)
    exported = pulumi("stack", "export", "--stack", stack)
    if exported.returncode != 0:
        raise OpsError(f"pulumi stack export --stack {stack}: {exported.stderr.strip()[-500:]}")
    deployment = json.loads(exported.stdout).get("deployment") or {}
    pending = pending_creates(deployment)
    if not pending:
        return report
    resources = {r["urn"]: r for r in deployment.get("resources") or []}
    imports: list[str] = []
    for resource in pending:
        kind, urn = resource["type"], resource["urn"]
        name = (resource.get("inputs") or {}).get("name")
        host = _docker_host(resource, resources)
        label = urn.rsplit("::", 1)[-1]
        if kind == CONTAINER and isinstance(name, str):
            _settle(host, name, progress)
            _docker(host, "stop", "-t", "30", name)
            _docker(host, "rm", "-f", name)
            report.removed.append(name)
        elif kind == VOLUME and isinstance(name, str) and _docker(host, "volume", "inspect", name).returncode == 0:
            imports += ["--import-pending-creates", urn, name]
            report.imported.append(name)
        elif kind == NETWORK and isinstance(name, str):
            found = _docker(host, "network", "inspect", "-f", "{{.Id}}", name)
            if found.returncode == 0 and found.stdout.strip():
                imports += ["--import-pending-creates", urn, found.stdout.strip()]
                report.imported.append(name)
            else:
                report.cleared.append(label)
        else:
            report.cleared.append(label)
    progress(
        f"repair: a killed `pulumi up` left {len(pending)} unfinished creates; "
        f"importing {report.imported or 'nothing'}, removing containers {report.removed or 'none'}, "
        f"clearing {report.cleared or 'nothing'}"
    )
    for flags in (imports, ["--clear-pending-creates"]):
        if flags:
            done = pulumi("refresh", "--yes", "--stack", stack, "--suppress-progress", *flags)
            if done.returncode != 0:
                raise OpsError(f"pulumi refresh --stack {stack} (repair): {done.stdout.strip()[-800:]}")
    return report


def cli_runner(work_dir: Path, env: Mapping[str, str]) -> Pulumi:
    """Runs the Pulumi CLI found on env's PATH in `work_dir`."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=work_dir,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )

    return run


def main(argv: list[str] | None = None) -> int:
    """`python -m ops.repair STACK`: what scripts/up.sh runs before `pulumi up`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ops.repair STACK", file=sys.stderr)
        return 2
    try:
        report = repair(args[0], cli_runner(Path.cwd(), os.environ), os.environ.get("PULUMI_BACKEND_URL", ""))
    except OpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if report.changed:
        print(f"{REPORT_PREFIX}{json.dumps(report.to_dict())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
