"""Object store: MinIO (erasure-coded across the nodes) on Hetzner, SeaweedFS locally.

MinIO is the production choice; SeaweedFS (Apache-2.0) stands in where MinIO cannot be
built. Both speak S3 on port 9000 behind the same storage interface in the app.
"""

from __future__ import annotations

import json

from infra.specs.base import ContainerSpec, Healthcheck, Mount, Upload, secret
from infra.specs.context import SpecContext
from infra.topology import PORTS, Role

S3_CONFIG_PATH = "/etc/seaweedfs/s3.json"
# Per server: each bucket grows a handful of volumes (6 per replica set with replication
# 001); 32 slots of 256 MB leave room for every bucket plus the filer's log on 4 nodes.
SEAWEED_VOLUME_SLOTS = 32
SEAWEED_VOLUME_MB = 256


def _seaweed_s3_config(access_key: str) -> str:
    identity = {
        "name": "selextract",
        "credentials": [{"accessKey": access_key, "secretKey": secret("objectStoreSecretKey")}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]}, indent=2)


def objectstore_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan, settings = ctx.plan, ctx.settings
    placements = plan.placements_of(Role.OBJECT_STORE)
    if not placements:
        return []
    nodes = [plan.host(p.host) for p in placements]
    names = [plan.container_name(h.name, Role.OBJECT_STORE, 1) for h in nodes]
    specs = []
    for index, (host, name) in enumerate(zip(nodes, names, strict=True)):
        mounts = (Mount(ctx.data_volume(host.name, Role.OBJECT_STORE), "/data"),)
        ports = ctx.internal_port(host, PORTS[Role.OBJECT_STORE])
        if settings.object_store_impl == "minio":
            if len(nodes) > 1:
                # MinIO expands minio-{01...N}; on Hetzner those names map to private IPs.
                pool = f"http://{plan.stack}-minio-{{01...{len(nodes):02d}}}:9000/data"
                extra_hosts = (
                    {f"{plan.stack}-minio-{i + 1:02d}": str(h.private_ip) for i, h in enumerate(nodes)}
                    if not ctx.local
                    else {}
                )
            else:
                pool, extra_hosts = "/data", {}
            spec = ContainerSpec(
                name=name,
                host=host.name,
                role=Role.OBJECT_STORE,
                image=settings.images.object_store,
                command=("server", pool, "--console-address", ":9001"),
                env={
                    "MINIO_ROOT_USER": settings.object_store.access_key,
                    "MINIO_ROOT_PASSWORD": secret("objectStoreSecretKey"),
                    "MINIO_PROMETHEUS_AUTH_TYPE": "public",
                },
                ports=ports,
                mounts=mounts,
                extra_hosts=extra_hosts,
                healthcheck=Healthcheck(("CMD-SHELL", "curl -fsS http://127.0.0.1:9000/minio/health/live")),
                stop_grace_s=30,
            )
        else:
            # Node 1 runs master + filer + S3 gateway + a volume server; the others add
            # volume servers. Replication 001 keeps each object on two nodes.
            replication = "001" if len(nodes) > 1 else "000"
            if index == 0:
                command: tuple[str, ...] = (
                    "server",
                    "-dir=/data",
                    "-ip.bind=0.0.0.0",
                    f"-ip={name}",
                    "-master.port=9333",
                    f"-master.defaultReplication={replication}",
                    "-volume.port=8080",
                    # Explicit slots: `max=0` sizes them as free disk / 30 GB, which on a shared
                    # local disk is one slot per server, and the first collection to write (or
                    # the filer's own log) takes them all, leaving other buckets unwritable.
                    f"-volume.max={SEAWEED_VOLUME_SLOTS}",
                    f"-master.volumeSizeLimitMB={SEAWEED_VOLUME_MB}",
                    "-filer",
                    "-filer.port=8888",
                    "-s3",
                    "-s3.port=9000",
                    f"-s3.config={S3_CONFIG_PATH}",
                )
            else:
                command = (
                    "volume",
                    "-dir=/data",
                    "-ip.bind=0.0.0.0",
                    f"-ip={name}",
                    "-port=8080",
                    f"-max={SEAWEED_VOLUME_SLOTS}",
                    f"-master={names[0]}:9333",
                )
            spec = ContainerSpec(
                name=name,
                host=host.name,
                role=Role.OBJECT_STORE,
                image=settings.images.object_store,
                command=command,
                ports=ports,
                mounts=mounts,
                uploads=(Upload(S3_CONFIG_PATH, _seaweed_s3_config(settings.object_store.access_key)),)
                if index == 0
                else (),
                depends_on=() if index == 0 else (names[0],),
                stop_grace_s=30,
            )
        specs.append(spec)
    return specs
