"""Pure placement plan: which hosts exist in a phase and which services run where.

No Pulumi here. This is where the phases of the Selextract guide live; the host and
service layers, the cost calculator and the migration planner all execute or read
the same `Plan`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from infra.config import ConfigError, Settings

SPREAD_GROUP_MAX = 10  # Hetzner allows at most 10 servers in one spread placement group


class Role(StrEnum):
    ENTRY = "entry"  # nginx: TLS + reverse proxy in front of the API (phases 0-2)
    LB = "lb"  # HAProxy: TLS + load balancing over API servers (phase 3+)
    API = "api"
    WORKER = "worker"
    POSTGRES = "postgres"
    REDIS = "redis"
    OBJECT_STORE = "objectstore"
    MONITORING = "monitoring"


PORTS: dict[Role, int] = {
    Role.API: 8000,
    Role.POSTGRES: 5432,
    Role.REDIS: 6379,
    Role.OBJECT_STORE: 9000,
    Role.MONITORING: 9090,
}
EXPORTER_PORTS = {"node": 9100, "postgres": 9187, "redis": 9121, "alertmanager": 9093}
# Every worker container serves its Celery metrics (worker/metrics.py) on this port.
WORKER_METRICS_PORT = 9808


@dataclass(frozen=True)
class VolumePlan:
    name: str
    size_gb: int
    role: Role


@dataclass(frozen=True)
class HostPlan:
    name: str
    roles: tuple[Role, ...]
    server_type: str
    kind: Literal["cloud", "dedicated", "server", "local"]  # server: target servers (BYO over SSH)
    location: str
    private_ip: str | None
    public_ip: str | None = None  # known up front only for dedicated and own servers
    placement_group: str | None = None
    volumes: tuple[VolumePlan, ...] = ()

    @property
    def is_entry(self) -> bool:
        return Role.ENTRY in self.roles or Role.LB in self.roles

    @property
    def public_ports(self) -> tuple[int, ...]:
        return (80, 443) if self.is_entry else ()


@dataclass(frozen=True)
class Placement:
    role: Role
    host: str
    containers: int = 1
    cpus: float | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class Endpoint:
    """One reachable container of a role: `address:port` as other services dial it."""

    name: str
    host: str
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class DnsRecord:
    name: str
    host: str
    ttl: int


@dataclass(frozen=True)
class Plan:
    stack: str
    phase: int
    target: Literal["hetzner", "servers", "local"]
    hosts: tuple[HostPlan, ...]
    placements: tuple[Placement, ...]
    entry_host: str
    storage_backend: Literal["local", "minio"]
    buckets: tuple[str, ...]
    dns_records: tuple[DnsRecord, ...]
    worker_concurrency: int
    api_workers: int
    placement_groups: tuple[str, ...] = field(default=())

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.name == name)

    def hosts_with(self, role: Role) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if role in h.roles)

    def placements_of(self, role: Role) -> tuple[Placement, ...]:
        return tuple(p for p in self.placements if p.role == role)

    def container_name(self, host: str, role: Role, index: int) -> str:
        return f"{self.stack}-{host}-{role.value}-{index}"

    def endpoints(self, role: Role, from_host: str | None = None, port: int | None = None) -> tuple[Endpoint, ...]:
        """Where each container of `role` answers (on its service port, or `port`), as
        seen from a container on `from_host`.

        Containers on the same engine (always, locally) reach each other by name on the
        stack's Docker network; across Hetzner hosts a container is dialled on its
        host's private IP, where the n-th container of a role publishes port base+n-1 —
        except API containers, which sit behind their host's API proxy on port 8000
        (so a new version can start beside the old one: zero-downtime replacement).
        """
        base = PORTS[role] if port is None else port
        out = []
        for placement in self.placements_of(role):
            host = self.host(placement.host)
            remote = self.target != "local" and host.name != from_host
            if remote and role == Role.API:
                out.append(Endpoint(self.pool_alias(host.name, role), host.name, str(host.private_ip), base))
                continue
            for i in range(1, placement.containers + 1):
                name = self.container_name(host.name, role, i)
                if remote:
                    out.append(Endpoint(name, host.name, str(host.private_ip), base + i - 1))
                else:
                    out.append(Endpoint(name, host.name, name, base))
        return tuple(out)

    def worker_metrics_endpoints(self, from_host: str | None = None) -> tuple[Endpoint, ...]:
        """The metrics endpoint of every worker container, as Prometheus on `from_host`
        dials it: by name on the same engine; on a remote worker host, the host's
        private IP and port WORKER_METRICS_PORT+n-1, where that host's metrics proxy
        forwards to its n-th worker (worker containers publish nothing themselves: a new
        version starts beside the old one, and both could not hold the same host port).
        """
        return self.endpoints(Role.WORKER, from_host, WORKER_METRICS_PORT)

    def remote_worker_hosts(self, from_host: str) -> tuple[Placement, ...]:
        """Worker placements Prometheus on `from_host` reaches across the private network."""
        if self.target == "local":
            return ()
        return tuple(p for p in self.placements_of(Role.WORKER) if p.host != from_host)

    def pool_alias(self, host: str, role: Role) -> str:
        """DNS name (Docker network alias) of every container of `role` on `host`."""
        return f"{self.stack}-{host}-{role.value}"

    def endpoint(self, role: Role, from_host: str | None = None) -> Endpoint:
        return self.endpoints(role, from_host)[0]

    @property
    def worker_containers(self) -> int:
        return sum(p.containers for p in self.placements_of(Role.WORKER))


def plan(settings: Settings) -> Plan:
    """The hosts and placements of `settings.phase`, as the Selextract guide lays them out."""
    builder = _Builder(settings)
    phase = settings.phase
    worker_placement = {
        "containers": settings.workers.containers_per_server,
        "cpus": settings.workers.cpus,
        "memory_mb": settings.workers.memory_mb,
    }

    if phase <= 2:
        app_roles = [Role.ENTRY, Role.API, Role.MONITORING]
        if phase <= 1:
            app_roles.insert(2, Role.WORKER)
        if phase == 0:
            app_roles += [Role.POSTGRES, Role.REDIS]
        app = builder.app_host("app-01", tuple(app_roles))
        builder.place(Role.ENTRY, app)
        builder.place(Role.API, app, containers=settings.api.containers_per_server)
        builder.place(Role.MONITORING, app)
        if phase <= 1:
            builder.place(Role.WORKER, app, **worker_placement)
        entry = app
    else:
        entry = builder.cloud_host("lb-01", (Role.LB, Role.MONITORING), settings.server_types.lb)
        builder.place(Role.LB, entry)
        builder.place(Role.MONITORING, entry)
        for i in range(1, settings.api.servers + 1):
            name = f"api-{i:02d}"
            host = (
                builder.app_host(name, (Role.API,))
                if i == 1 and settings.app_host.dedicated
                else builder.cloud_host(name, (Role.API,), settings.server_types.api, group="api")
            )
            builder.place(Role.API, host, containers=settings.api.containers_per_server)

    if phase == 0:
        builder.place(Role.POSTGRES, app)
        builder.place(Role.REDIS, app)
    else:
        # Once workers leave the app host (phase 2) results need shared storage: a
        # single object-store node beside Postgres until phase 4 makes it a cluster.
        db_roles = (Role.POSTGRES, Role.OBJECT_STORE) if phase in (2, 3) else (Role.POSTGRES,)
        db = builder.cloud_host("db-01", db_roles, settings.server_types.postgres)
        builder.place(Role.POSTGRES, db)
        if phase in (2, 3):
            builder.place(Role.OBJECT_STORE, db)
        redis = builder.cloud_host("redis-01", (Role.REDIS,), settings.server_types.redis)
        builder.place(Role.REDIS, redis)

    if phase >= 2:
        for i in range(1, settings.workers.servers + 1):
            host = builder.cloud_host(f"worker-{i:02d}", (Role.WORKER,), settings.server_types.worker, group="worker")
            builder.place(Role.WORKER, host, **worker_placement)

    if phase >= 4:
        for i in range(1, settings.object_store.nodes + 1):
            host = builder.cloud_host(
                f"minio-{i:02d}", (Role.OBJECT_STORE,), settings.server_types.object_store, group="minio"
            )
            builder.place(Role.OBJECT_STORE, host)

    records = tuple(DnsRecord(r, entry, settings.dns.ttl) for r in settings.dns.records) if settings.dns.enabled else ()
    return Plan(
        stack=settings.stack,
        phase=phase,
        target=settings.target,
        hosts=builder.finish_hosts(),
        placements=tuple(builder.placements),
        entry_host=entry,
        storage_backend="minio" if phase >= 2 else "local",
        buckets=settings.object_store.buckets if phase >= 2 else (),
        dns_records=records,
        worker_concurrency=settings.workers.concurrency,
        api_workers=settings.api.uvicorn_workers,
        placement_groups=builder.group_names(),
    )


class _Builder:
    """Accumulates hosts and placements; assigns private IPs and placement groups."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hosts: list[HostPlan] = []
        self.placements: list[Placement] = []
        self._group_members: dict[str, int] = {}
        self._unlisted: list[str] = []
        subnet = ipaddress.ip_network(settings.network.subnet)
        self._ips = (str(ip) for i, ip in enumerate(subnet.hosts()) if i >= 9)  # .10 upwards
        self._subnet = subnet

    def _next_ip(self) -> str | None:
        if self.settings.target == "local":
            return None
        try:
            return next(self._ips)
        except StopIteration:
            raise ConfigError(
                f"Pulumi.{self.settings.stack}.yaml: selextract:network.subnet = {self._subnet}: "
                "too small for the hosts of this phase; use a larger subnet (e.g. a /20)"
            ) from None

    def _volumes(self, name: str, roles: tuple[Role, ...]) -> tuple[VolumePlan, ...]:
        sizes = {
            Role.POSTGRES: self.settings.volumes.postgres_gb,
            Role.REDIS: self.settings.volumes.redis_gb,
            Role.OBJECT_STORE: self.settings.object_store.volume_gb,
        }
        return tuple(VolumePlan(f"{name}-{r.value}", sizes[r], r) for r in roles if r in sizes)

    def _group(self, group: str | None) -> str | None:
        if group is None or self.settings.target == "local":
            return None
        count = self._group_members.get(group, 0)
        self._group_members[group] = count + 1
        return f"{group}-spread-{count // SPREAD_GROUP_MAX + 1}"

    def _own_server(self, name: str, roles: tuple[Role, ...], planned_type: str) -> str:
        """Target servers: the machine the operator listed under this host's name."""
        server = self.settings.servers.get(name)
        if server is None:
            self._unlisted.append(name)
            return self._add(HostPlan(name, roles, planned_type, "server", self.settings.location, None))
        host = HostPlan(
            name,
            roles,
            server.server_type or planned_type,
            "server",
            self.settings.location,
            private_ip=server.private_address,
            public_ip=server.public_address,
        )
        return self._add(host)

    def app_host(self, name: str, roles: tuple[Role, ...]) -> str:
        dedicated = self.settings.app_host.dedicated
        if self.settings.target == "servers":
            return self._own_server(name, roles, self.settings.app_host.server_type)
        if self.settings.target == "local":
            return self._add(HostPlan(name, roles, "local", "local", self.settings.location, None))
        if dedicated:
            host = HostPlan(
                name,
                roles,
                dedicated.server_type,
                "dedicated",
                self.settings.location,
                private_ip=dedicated.private_address,
                public_ip=dedicated.public_address,
            )
            return self._add(host)
        return self._add(
            HostPlan(
                name,
                roles,
                self.settings.app_host.server_type,
                "cloud",
                self.settings.location,
                private_ip=self._next_ip(),
                volumes=self._volumes(name, roles),
                placement_group=self._group("api" if roles == (Role.API,) else None),
            )
        )

    def cloud_host(self, name: str, roles: tuple[Role, ...], server_type: str, group: str | None = None) -> str:
        if self.settings.target == "servers":
            return self._own_server(name, roles, server_type)
        kind: Literal["cloud", "local"] = "local" if self.settings.target == "local" else "cloud"
        return self._add(
            HostPlan(
                name,
                roles,
                server_type if kind == "cloud" else "local",
                kind,
                self.settings.location,
                private_ip=self._next_ip(),
                placement_group=self._group(group),
                volumes=self._volumes(name, roles) if kind == "cloud" else (),
            )
        )

    def _add(self, host: HostPlan) -> str:
        self.hosts.append(host)
        return host.name

    def place(self, role: Role, host: str, **kwargs: object) -> None:
        self.placements.append(Placement(role, host, **kwargs))  # type: ignore[arg-type]

    def finish_hosts(self) -> tuple[HostPlan, ...]:
        names = [h.name for h in self.hosts]
        source = f"Pulumi.{self.settings.stack}.yaml: selextract:servers"
        if self._unlisted:
            raise ConfigError(
                f"{source}: phase {self.settings.phase} needs these hosts, not listed: {', '.join(self._unlisted)} "
                f"(one entry per host with publicAddress and privateAddress; the phase's hosts: {', '.join(names)})"
            )
        extra = sorted(set(self.settings.servers) - set(names))
        if extra:
            raise ConfigError(
                f"{source}: {', '.join(extra)} not a host of phase {self.settings.phase}; "
                f"its hosts are: {', '.join(names)}"
            )
        return tuple(self.hosts)

    def group_names(self) -> tuple[str, ...]:
        return tuple(sorted({h.placement_group for h in self.hosts if h.placement_group}))
