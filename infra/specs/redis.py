"""Redis: the Celery broker and the API's rate-limit/maintenance store."""

from __future__ import annotations

from infra.specs.base import ContainerSpec, Healthcheck, Mount, secret
from infra.specs.context import SpecContext
from infra.topology import PORTS, Role


def redis_specs(ctx: SpecContext) -> list[ContainerSpec]:
    specs = []
    for placement in ctx.plan.placements_of(Role.REDIS):
        host = ctx.plan.host(placement.host)
        maxmemory = "256mb" if ctx.local else "2gb"
        specs.append(
            ContainerSpec(
                name=ctx.plan.container_name(host.name, Role.REDIS, 1),
                host=host.name,
                role=Role.REDIS,
                image=ctx.settings.images.redis,
                command=(
                    "redis-server",
                    "--requirepass",
                    secret("redisPassword"),
                    "--appendonly",
                    "yes",
                    "--save",
                    "900 1 300 10 60 10000",
                    "--maxmemory",
                    maxmemory,
                    "--maxmemory-policy",
                    "noeviction",
                ),
                ports=ctx.internal_port(host, PORTS[Role.REDIS]),
                mounts=(Mount(ctx.data_volume(host.name, Role.REDIS), "/data"),),
                healthcheck=Healthcheck(
                    ("CMD-SHELL", 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning ping | grep PONG')
                ),
                env={"REDIS_PASSWORD": secret("redisPassword")},
                wait_healthy=True,
                stop_grace_s=30,
            )
        )
    return specs
