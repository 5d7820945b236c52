"""`selextract logs SERVICE`: the container logs of one service of the stack, merged.

SERVICE is a role of the plan (api, worker, postgres, redis, entry, lb, objectstore,
monitoring), a familiar alias (nginx, haproxy, db, minio, prometheus, workers) or one
container name. Containers are found by their labels (`selextract.stack`,
`selextract.role`) on every engine of the stack.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import IO

from infra.topology import Role
from ops.access import OpsError, run

ALIASES = {
    "nginx": Role.ENTRY,
    "proxy": Role.ENTRY,
    "haproxy": Role.LB,
    "loadbalancer": Role.LB,
    "db": Role.POSTGRES,
    "database": Role.POSTGRES,
    "workers": Role.WORKER,
    "minio": Role.OBJECT_STORE,
    "seaweedfs": Role.OBJECT_STORE,
    "s3": Role.OBJECT_STORE,
    "prometheus": Role.MONITORING,
    "backend": Role.API,
}


def resolve_service(service: str) -> Role | None:
    name = service.lower()
    if name in ALIASES:
        return ALIASES[name]
    try:
        return Role(name)
    except ValueError:
        return None


def _docker(docker_host: str | None, *args: str) -> list[str]:
    return ["docker", *(["-H", docker_host] if docker_host else []), *args]


def find_containers(stack: str, service: str, engines: Iterable[str | None] = (None,)) -> list[tuple[str, str | None]]:
    """(container, docker host) of `service` in `stack`, sorted by name."""
    role = resolve_service(service)
    found: list[tuple[str, str | None]] = []
    for engine in dict.fromkeys(engines):
        filters = ["--filter", f"label=selextract.stack={stack}"]
        if role is not None:
            filters += ["--filter", f"label=selextract.role={role.value}"]
        out = run(_docker(engine, "ps", "-a", *filters, "--format", "{{.Names}}"), what="docker ps", timeout=60)
        names = out.decode().split()
        if role is None:
            names = [n for n in names if n == service]
        found += [(n, engine) for n in names]
    if not found:
        roles = ", ".join(r.value for r in Role)
        raise OpsError(f"no containers for {service!r} in stack {stack} (services: {roles}, or a container name)")
    return sorted(found)


def show_logs(
    containers: list[tuple[str, str | None]],
    *,
    tail: int = 100,
    follow: bool = False,
    since: str | None = None,
    out: IO[str] | None = None,
    prefix: bool | None = None,
) -> int:
    """Print the logs; with several containers each line is prefixed with its container
    (and, without --follow, lines are merged in time order)."""
    out = out or sys.stdout
    prefix = len(containers) > 1 if prefix is None else prefix
    width = max(len(name) for name, _ in containers)
    base = ["logs", "--timestamps", "--tail", str(tail), *(["--since", since] if since else [])]
    if not follow:
        lines: list[tuple[str, str]] = []
        for name, engine in containers:
            proc = subprocess.run(_docker(engine, *base, name), capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise OpsError(f"docker logs {name}: {proc.stderr.strip()}")
            for line in (proc.stdout + proc.stderr).splitlines():
                lines.append((line, name))
        for line, name in sorted(lines, key=lambda item: item[0][:35]):
            out.write(_format(line, name, width, prefix))
        out.flush()
        return len(lines)
    lock = threading.Lock()
    procs = [
        (
            name,
            subprocess.Popen(
                _docker(engine, *base, "--follow", name), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ),
        )
        for name, engine in containers
    ]
    count = 0

    def pump(name: str, proc: subprocess.Popen[str]) -> None:
        nonlocal count
        assert proc.stdout is not None
        for line in proc.stdout:
            with lock:
                out.write(_format(line.rstrip("\n"), name, width, prefix))
                out.flush()
                count += 1

    threads = [threading.Thread(target=pump, args=item, daemon=True) for item in procs]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        pass
    finally:
        for _, proc in procs:
            proc.terminate()
    return count


def _format(line: str, name: str, width: int, prefix: bool) -> str:
    return f"{name.ljust(width)} | {line}\n" if prefix else f"{line}\n"


def engines_of(docker_hosts: Mapping[str, str | None]) -> list[str | None]:
    return list(dict.fromkeys(docker_hosts.values())) or [None]
