"""PostgreSQL container: tuned from the host size as the guide tunes the EX44."""

from __future__ import annotations

from collections.abc import Mapping

from infra.catalog import load_catalog
from infra.specs.base import ContainerSpec, Healthcheck, Mount, secret
from infra.specs.context import SpecContext
from infra.topology import PORTS, Role

DB_NAME = "selextract"
DB_USER = "selextract"  # owner of the database and its tables; exporters and ops use it
# The app and workers log in as one of two roles that act as the owner (`SET role`), and a
# rotation switches to the other one with a fresh password: containers of the old version
# keep a working login until they are gone, so a rotation fails no request.
APP_USERS = ("selextract_app_0", "selextract_app_1")
ROTATION_KEY = "postgresPassword"


def app_slot(rotation: Mapping[str, int]) -> int:
    """Which of APP_USERS the current generation of `rotation:postgresPassword` uses."""
    return rotation.get(ROTATION_KEY, 0) % 2


def app_password_secret(slot: int) -> str:
    return f"postgresAppPassword{slot}"


def app_slot_generation(rotation: Mapping[str, int], slot: int) -> int:
    """The generation at which `slot` last became active: its password changes only then,
    never while the previous version's containers may still use it."""
    generation = rotation.get(ROTATION_KEY, 0)
    return generation if generation % 2 == slot else generation - 1


def memory_settings(memory_gb: float, dedicated_host: bool) -> dict[str, str]:
    """shared_buffers 1/4 and effective_cache_size 3/4 of what Postgres may use (the
    guide's 8 GB / 24 GB on a 32 GB budget); a shared host gives Postgres half its RAM."""
    budget_mb = int(memory_gb * 1024 * (1.0 if dedicated_host else 0.5))
    return {
        "shared_buffers": f"{max(budget_mb // 4, 128)}MB",
        "effective_cache_size": f"{max(budget_mb * 3 // 4, 256)}MB",
        "maintenance_work_mem": f"{min(max(budget_mb // 16, 64), 2048)}MB",
    }


def postgres_specs(ctx: SpecContext) -> list[ContainerSpec]:
    specs = []
    for placement in ctx.plan.placements_of(Role.POSTGRES):
        host = ctx.plan.host(placement.host)
        memory_gb = 2.0 if ctx.local else load_catalog().server_type(host.server_type).memory_gb
        tuning = memory_settings(memory_gb, dedicated_host=host.roles == (Role.POSTGRES,))
        tuning["max_connections"] = "200"
        command = ["postgres"] + [arg for k, v in tuning.items() for arg in ("-c", f"{k}={v}")]
        specs.append(
            ContainerSpec(
                name=ctx.plan.container_name(host.name, Role.POSTGRES, 1),
                host=host.name,
                role=Role.POSTGRES,
                image=ctx.settings.images.postgres,
                command=tuple(command),
                env={
                    "POSTGRES_USER": DB_USER,
                    "POSTGRES_DB": DB_NAME,
                    "POSTGRES_PASSWORD": secret("postgresPassword"),
                    "PGDATA": "/var/lib/postgresql/data/pgdata",
                },
                ports=ctx.internal_port(host, PORTS[Role.POSTGRES]),
                mounts=(Mount(ctx.data_volume(host.name, Role.POSTGRES), "/var/lib/postgresql/data"),),
                # Over TCP: while the entrypoint initialises a new data directory its temporary
                # server answers on the socket only, then restarts; "healthy" must mean the real one.
                healthcheck=Healthcheck(("CMD-SHELL", f"pg_isready -h 127.0.0.1 -U {DB_USER} -d {DB_NAME}")),
                wait_healthy=True,
                stop_grace_s=60,
                # POSTGRES_PASSWORD only seeds a new data directory; rotations are applied
                # in place by the password-sync step, so they must not restart Postgres.
                ignore_env_changes=True,
            )
        )
    return specs
