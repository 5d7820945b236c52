"""Plain data describing the containers a deployment runs (Kamal's lesson: build "what to
run" as data from config, test that data directly; the Pulumi layer only declares it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from infra.topology import Role

SECRET_MARK = re.compile(r"@@secret:([A-Za-z0-9_]+)@@")


def password_sync_name(container: str) -> str:
    """The step that applies a rotated password inside `container` (infra/services/rotation.py)."""
    return f"{container}-password-sync"


def secret(name: str) -> str:
    """A placeholder the Pulumi layer swaps for the secret's value, as a Pulumi secret."""
    return f"@@secret:{name}@@"


def secret_names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(SECRET_MARK.findall(text)))


@dataclass(frozen=True)
class Port:
    internal: int
    external: int
    ip: str  # host address the port is published on; never 0.0.0.0 except the public entry


@dataclass(frozen=True)
class Mount:
    volume: str  # Docker volume name (created by the service layer)
    target: str


@dataclass(frozen=True)
class HostMount:
    """A path of the host bind-mounted into the container (node-exporter reads the host's
    root); `propagation` "rslave" lets mounts the host makes later appear inside too."""

    source: str
    target: str
    read_only: bool = True
    propagation: str | None = None


@dataclass(frozen=True)
class Upload:
    """A file written into the container at creation; content may hold secret placeholders."""

    path: str
    content: str
    executable: bool = False


@dataclass(frozen=True)
class PasswordSync:
    """A script run inside the running container whenever `stdin` changes: it applies a
    rotated credential in place, beside the old one, so the service is not restarted and
    containers of the previous version keep working until they are gone. `stdin` holds
    secret placeholders and is the only way the value reaches the container."""

    script: str
    stdin: str


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_s: int = 5
    timeout_s: int = 3
    retries: int = 10
    start_period_s: int = 5


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    host: str
    role: Role
    image: str  # an image name, or "build:app" / "build:worker" for images Pulumi builds
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    mounts: tuple[Mount, ...] = ()
    host_mounts: tuple[HostMount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    uploads: tuple[Upload, ...] = ()
    extra_hosts: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    user: str | None = None
    pid_host: bool = False  # the host's PID namespace (node-exporter reads /proc/1/mounts)
    read_only: bool = False
    healthcheck: Healthcheck | None = None
    wait_healthy: bool = False
    stop_grace_s: int = 10
    depends_on: tuple[str, ...] = ()  # names of containers that must exist first
    one_shot: bool = False  # runs to completion (migrations, bucket creation), not a service
    # Extra DNS names on the stack network. A container whose `name` carries the image
    # version also answers under stable aliases, and is replaced create-before-delete.
    aliases: tuple[str, ...] = ()
    # The container's host name; Docker maps it to the container's own address in
    # /etc/hosts (a MinIO node finds its own drive by it, infra/specs/objectstore.py).
    hostname: str | None = None
    resource_name: str | None = None  # stable Pulumi name when `name` changes per version
    ignore_env_changes: bool = False  # env only matters at first start (e.g. Postgres init)
    password_sync: PasswordSync | None = None
    # Port the container serves Prometheus metrics on, inside the stack network (not
    # published: the scrape targets come from the plan, see Plan.worker_metrics_endpoints).
    metrics_port: int | None = None

    @property
    def logical_name(self) -> str:
        return self.resource_name or self.name

    @property
    def versioned(self) -> bool:
        return self.resource_name is not None and self.resource_name != self.name

    @property
    def secrets(self) -> tuple[str, ...]:
        texts = [*self.env.values(), *(u.content for u in self.uploads), *self.command]
        return tuple(dict.fromkeys(n for t in texts for n in secret_names(t)))

    @property
    def volumes(self) -> tuple[str, ...]:
        return tuple(m.volume for m in self.mounts)
