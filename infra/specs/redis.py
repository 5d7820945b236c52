"""Redis: the Celery broker and the API's rate-limit/maintenance store."""

from __future__ import annotations

from infra.specs.base import ContainerSpec, Healthcheck, Mount, secret
from infra.specs.context import SpecContext
from infra.topology import PORTS, Role

_REDIS_START = """exec redis-server - <<EOF
requirepass "$REDIS_PASSWORD"
appendonly yes
save "900 1 300 10 60 10000"
maxmemory {maxmemory}
maxmemory-policy noeviction
EOF
"""


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
                # The password reaches redis-server as config on stdin, from the secret env:
                # on the command line it would show in the Pulumi state, `docker inspect` and ps.
                command=("sh", "-c", _REDIS_START.format(maxmemory=maxmemory)),
                user="redis",  # the image's entrypoint drops root only when it starts redis-server itself
                ports=ctx.internal_port(host, PORTS[Role.REDIS]),
                mounts=(Mount(ctx.data_volume(host.name, Role.REDIS), "/data"),),
                healthcheck=Healthcheck(("CMD-SHELL", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep PONG')),
                env={"REDIS_PASSWORD": secret("redisPassword")},
                wait_healthy=True,
                stop_grace_s=30,
            )
        )
    return specs
