"""One ComponentResource per service. Each takes the hosts it runs on and the container
specs built from the plan; none of them looks at the phase."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi

from infra.hosts.base import Host
from infra.secrets import StackSecrets
from infra.services.base import Declared, Service, ServiceArgs
from infra.services.rotation import PasswordSyncArgs, PostgresPasswordSync, ScriptPasswordSync
from infra.specs.base import ContainerSpec, password_sync_name
from infra.topology import Role


class Postgres(Service):
    TYPE = "selextract:service:Postgres"


class Redis(Service):
    TYPE = "selextract:service:Redis"


class ObjectStore(Service):
    """MinIO (Hetzner) or SeaweedFS (local) nodes, plus the one-shot bucket creation."""

    TYPE = "selextract:service:ObjectStore"


class Api(Service):
    TYPE = "selextract:service:Api"


class WorkerPool(Service):
    TYPE = "selextract:service:WorkerPool"


class Entry(Service):
    """nginx (phases 0-2) or HAProxy (phase 3+): TLS and the only public ports."""

    TYPE = "selextract:service:Entry"


class Monitoring(Service):
    TYPE = "selextract:service:Monitoring"


__all__ = [
    "COMPONENTS",
    "Api",
    "Declared",
    "Entry",
    "Monitoring",
    "ObjectStore",
    "Postgres",
    "Redis",
    "Service",
    "ServiceArgs",
    "WorkerPool",
    "deploy_services",
]


# Declaration order: what a service depends on is declared before it.
COMPONENTS: tuple[tuple[type[Service], tuple[Role, ...]], ...] = (
    (Postgres, (Role.POSTGRES,)),
    (Redis, (Role.REDIS,)),
    (ObjectStore, (Role.OBJECT_STORE,)),
    (Api, (Role.API,)),
    (WorkerPool, (Role.WORKER,)),
    (Entry, (Role.ENTRY, Role.LB)),
    (Monitoring, (Role.MONITORING,)),
)


def deploy_services(
    specs: Sequence[ContainerSpec],
    *,
    hosts: Mapping[str, Host],
    secrets: StackSecrets,
    images: Mapping[str, Mapping[str, pulumi.Input[str]]],
    stack: str,
    active_slot: int = 0,
) -> dict[str, Service]:
    """`active_slot`: which app database login the current rotation generation uses."""
    declared = Declared()
    out: dict[str, Service] = {}
    for component, roles in COMPONENTS:
        mine = [s for s in specs if s.role in roles]
        if not mine:
            continue
        postgres = component is Postgres

        def sync(spec: ContainerSpec, container: pulumi.Resource, postgres: bool = postgres) -> None:
            """Rotated passwords are applied inside the running service before anything that
            depends on the step starts (the app; the buckets, right after the store's node)."""
            if not postgres and spec.password_sync is None:
                return
            sync_name = password_sync_name(spec.name)
            args = PasswordSyncArgs(container, spec.name, hosts[spec.host], secrets)
            declared.containers[sync_name] = (
                PostgresPasswordSync(sync_name, args, active_slot=active_slot)
                if spec.password_sync is None
                else ScriptPasswordSync(sync_name, args, spec.password_sync)
            )

        name = component.__name__.lower()
        out[name] = component(
            name,
            ServiceArgs(
                specs=mine, hosts=hosts, secrets=secrets, images=images, stack=stack, declared=declared, after_each=sync
            ),
        )
    return out
