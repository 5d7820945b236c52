"""Object store: MinIO (erasure-coded across the nodes) on Hetzner, SeaweedFS locally.

MinIO is the production choice; SeaweedFS (Apache-2.0) stands in where MinIO cannot be
built. Both speak S3 on port 9000 behind the same storage interface in the app.

The app's key rotates in place, like the Redis password: each `rotation:objectStoreSecretKey`
generation has its own access key (`selextract`, `selextract-1`, …), added to the running
store beside the old ones before the new version starts (SeaweedFS: a keys file on the
volume, reloaded on SIGHUP; MinIO: a user with the readwrite policy). `selextract secrets
rotate objectStoreSecretKey` then removes the older keys. MinIO's root login (an admin
only the sync step uses) is its own secret; rotating that one restarts the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from infra.specs.base import ContainerSpec, Healthcheck, Mount, PasswordSync, secret
from infra.specs.context import SpecContext
from infra.topology import PORTS, Role

ROTATION_KEY = "objectStoreSecretKey"
# Per server: each bucket grows a handful of volumes (6 per replica set with replication
# 001); 32 slots of 256 MB leave room for every bucket plus the filer's log on 4 nodes.
SEAWEED_VOLUME_SLOTS = 32
SEAWEED_VOLUME_MB = 256
SEAWEED_KEYS = "/data/.s3-keys"  # "ACCESS SECRET" per line, the newest last
SEAWEED_S3_CONFIG = "/data/.s3.json"

# The S3 identity file, written from the keys file (keys are [A-Za-z0-9-], secrets
# alphanumeric or URL-safe: nothing to escape in JSON).
_SEAWEED_ACTIONS = '"Admin", "Read", "Write", "List", "Tagging"'
_SEAWEED_RENDER = f"""{{ printf '{{"identities": [{{"name": "selextract", "actions": [{_SEAWEED_ACTIONS}], '
  printf '"credentials": ['
  sep=''
  while read -r ak sk; do
    printf '%s{{"accessKey": "%s", "secretKey": "%s"}}' "$sep" "$ak" "$sk"; sep=', '
  done < {SEAWEED_KEYS}
  printf ']}}]}}\\n'
}} > {SEAWEED_S3_CONFIG}.new && mv {SEAWEED_S3_CONFIG}.new {SEAWEED_S3_CONFIG}
"""

# SIGHUP reloads the S3 identities, but a SIGHUP that arrives before weed has set up its
# handlers can kill it (the likely cause of this step's exit 137 in CI, right after node 1
# started: the container restarted under it). So first wait until the S3 gateway listens (port 9000,
# hex 2328); a gateway that starts later reads the new file anyway.
_SEAWEED_RELOAD = """i=0
until grep -Eq ':2328 0+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
  i=$((i + 1))
  [ "$i" -le 240 ] || { echo "the S3 gateway is not listening after 120 s" >&2; exit 1; }
  sleep 0.5
done
kill -HUP 1
"""

# Node 1's start: the app's first key seeds the keys file (S3_ACCESS_KEY/S3_SECRET_KEY only
# matter on a new volume), then weed runs as PID 1 so the sync steps can signal it.
_SEAWEED_START = f"""set -eu
umask 077
[ -s {SEAWEED_KEYS} ] || printf '%s %s\\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" > {SEAWEED_KEYS}
{_SEAWEED_RENDER}exec weed "$@"
"""

# stdin: "ACCESS SECRET". Replaces that access key's secret or adds the key, then the S3
# gateway reloads its identities (SIGHUP) without dropping a connection.
SEAWEED_ADD_KEY = f"""set -eu
umask 077
read -r ak sk
{{ grep -v "^$ak " {SEAWEED_KEYS} || true; printf '%s %s\\n' "$ak" "$sk"; }} > {SEAWEED_KEYS}.new
mv {SEAWEED_KEYS}.new {SEAWEED_KEYS}
{_SEAWEED_RENDER}{_SEAWEED_RELOAD}sleep 1
"""

# stdin: "ACCESS BASE". Keeps only that key (refuses if it is not there) and prints the
# removed ones.
SEAWEED_KEEP_ONLY = f"""set -eu
umask 077
read -r ak base
if ! grep "^$ak " {SEAWEED_KEYS} > {SEAWEED_KEYS}.new; then
  rm -f {SEAWEED_KEYS}.new; echo "key $ak is not configured" >&2; exit 1
fi
grep -v "^$ak " {SEAWEED_KEYS} | cut -d' ' -f1
mv {SEAWEED_KEYS}.new {SEAWEED_KEYS}
{_SEAWEED_RENDER}{_SEAWEED_RELOAD}"""

# mc (shipped in the minio/minio image) as the root user, against this node.
_MINIO_ADMIN = """set -eu
export MC_HOST_self="http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@127.0.0.1:9000"
i=0
until mc admin info self >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 90 ] || { echo "MinIO did not answer mc admin info" >&2; exit 1; }; sleep 2
done
"""

# stdin: "ACCESS SECRET". A user with the readwrite policy (buckets included). mc reads the
# secret from its stdin when it is not an argument, so no command line holds it.
MINIO_ADD_KEY = (
    "read -r ak sk\n"
    + _MINIO_ADMIN
    + """printf '%s\\n' "$sk" | mc admin user add self "$ak" >/dev/null
mc admin policy attach self readwrite --user "$ak" >/dev/null 2>&1 || mc admin user info self "$ak" | grep -q readwrite
"""
)

# stdin: "ACCESS BASE". Removes the other app users (BASE, BASE-N), printing them.
MINIO_KEEP_ONLY = (
    "read -r ak base\n"
    + _MINIO_ADMIN
    + r"""mc admin user info self "$ak" >/dev/null
mc admin user list self --json | sed -n 's/.*"accessKey":"\([^"]*\)".*/\1/p' | while read -r user; do
  case "$user" in
    "$ak") ;;
    "$base"|"$base"-[0-9]*) mc admin user remove self "$user" >/dev/null && echo "$user" ;;
  esac
done
"""
)

ADD_KEY = {"minio": MINIO_ADD_KEY, "seaweedfs": SEAWEED_ADD_KEY}
KEEP_ONLY = {"minio": MINIO_KEEP_ONLY, "seaweedfs": SEAWEED_KEEP_ONLY}


def app_access_key(base: str, rotation: Mapping[str, int]) -> str:
    """The app's access key for the current generation of `rotation:objectStoreSecretKey`."""
    generation = rotation.get(ROTATION_KEY, 0)
    return base if generation == 0 else f"{base}-{generation}"


def minio_root_user(base: str) -> str:
    return f"{base}-admin"


def objectstore_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan, settings = ctx.plan, ctx.settings
    placements = plan.placements_of(Role.OBJECT_STORE)
    if not placements:
        return []
    nodes = [plan.host(p.host) for p in placements]
    names = [plan.container_name(h.name, Role.OBJECT_STORE, 1) for h in nodes]
    key = app_access_key(settings.object_store.access_key, settings.rotation)
    specs = []
    for index, (host, name) in enumerate(zip(nodes, names, strict=True)):
        # node 1 holds the app's keys: users are cluster-wide in MinIO, and it is the
        # SeaweedFS S3 gateway
        sync = (
            PasswordSync(ADD_KEY[settings.object_store_impl], f"{key} {secret(ROTATION_KEY)}\n") if index == 0 else None
        )
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
                    "MINIO_ROOT_USER": minio_root_user(settings.object_store.access_key),
                    "MINIO_ROOT_PASSWORD": secret("objectStoreRootPassword"),
                    "MINIO_PROMETHEUS_AUTH_TYPE": "public",
                },
                ports=ports,
                mounts=mounts,
                extra_hosts=extra_hosts,
                healthcheck=Healthcheck(("CMD-SHELL", "curl -fsS http://127.0.0.1:9000/minio/health/live")),
                stop_grace_s=30,
                password_sync=sync,
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
                    f"-s3.config={SEAWEED_S3_CONFIG}",
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
                depends_on=() if index == 0 else (names[0],),
                stop_grace_s=30,
                password_sync=sync,
            )
            if index == 0:
                # the start script seeds the keys file on a new volume, then execs weed
                spec = replace(
                    spec,
                    entrypoint=("/bin/sh", "-c", _SEAWEED_START, "weed"),
                    env={"S3_ACCESS_KEY": key, "S3_SECRET_KEY": secret(ROTATION_KEY)},
                    ignore_env_changes=True,
                )
        specs.append(spec)
    return specs
