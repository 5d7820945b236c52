"""Object store: MinIO (erasure-coded across the nodes) on Hetzner, SeaweedFS locally.

MinIO is the production choice; SeaweedFS (Apache-2.0) stands in where MinIO cannot be
built. Both speak S3 on port 9000 behind the same storage interface in the app.

Three logins, each limited to what its holder does: the app's key (API and workers) may
use the result and log buckets only; the backup key (`objectStoreBackupKey`, only ops
holds it: `selextract backup` hands it to the command it runs in the API container) the
`backups` bucket only; the admin login (MinIO's root, a SeaweedFS identity with `Admin`,
both `objectStoreRootPassword`) creates the buckets, in the one-shot bucket step.

The app's key rotates in place, like the Redis password: each `rotation:objectStoreSecretKey`
generation has its own access key (`selextract`, `selextract-1`, …), added to the running
store beside the old ones before the new version starts (SeaweedFS: a keys file on the
volume, reloaded on SIGHUP; MinIO: a user with its own bucket policy). `selextract secrets
rotate objectStoreSecretKey` then removes the older keys. Rotating MinIO's root login
restarts the nodes.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from infra.render import render
from infra.specs.base import (
    ContainerSpec,
    Healthcheck,
    Mount,
    PasswordSync,
    Port,
    Upload,
    password_sync_name,
    secret,
)
from infra.specs.context import SpecContext
from infra.topology import PORTS, Endpoint, HostPlan, Role

ROTATION_KEY = "objectStoreSecretKey"
# Per server: each bucket grows a handful of volumes (6 per replica set with replication
# 001); 32 slots of 256 MB leave room for every bucket plus the filer's log on 4 nodes.
SEAWEED_VOLUME_SLOTS = 32
SEAWEED_VOLUME_MB = 256
SEAWEED_KEYS = "/data/.s3-keys"  # "ACCESS SECRET" per line, the newest last
SEAWEED_S3_CONFIG = "/data/.s3.json"

BACKUP_KEY_SECRET = "objectStoreBackupKey"
ADMIN_KEY_SECRET = "objectStoreRootPassword"
BACKUPS_BUCKET = "backups"
_OBJECT_ACTIONS = ("Read", "Write", "List", "Tagging")
SEAWEED_ADMIN_ACTIONS = '["Admin","Read","Write","List","Tagging"]'


def seaweed_actions(buckets: Sequence[str]) -> str:
    """A SeaweedFS identity's actions limited to `buckets` (`Action:bucket`), as compact
    JSON (no spaces: it is the third field of a keys-file line)."""
    return json.dumps([f"{a}:{b}" for b in buckets for a in _OBJECT_ACTIONS], separators=(",", ":"))


def minio_policy(buckets: Sequence[str]) -> str:
    """A MinIO policy for objects in `buckets` only (no bucket creation, deletion or
    policy changes), as compact JSON (the third field of the key sync's input line)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                "Resource": [f"arn:aws:s3:::{b}" for b in buckets],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                    "s3:GetObjectTagging",
                    "s3:PutObjectTagging",
                    "s3:DeleteObjectTagging",
                ],
                "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets],
            },
        ],
    }
    return json.dumps(policy, separators=(",", ":"))


def app_buckets(buckets: Sequence[str]) -> tuple[str, ...]:
    """The buckets the app's key may use: all but `backups`."""
    return tuple(b for b in buckets if b != BACKUPS_BUCKET)


# The S3 identity file, written from the keys file: one identity per line "ACCESS SECRET
# ACTIONS" (keys are [A-Za-z0-9-], secrets alphanumeric or URL-safe, actions compact JSON:
# nothing to escape). Lines written before keys had their own actions (app keys) get
# $legacy, which each script sets.
_SEAWEED_RENDER = f"""{{ printf '{{"identities": ['
  sep=''
  while read -r ak sk acts; do
    [ -n "$ak" ] || continue
    [ -n "$acts" ] || acts=$legacy
    printf '%s{{"name": "%s", "actions": %s, ' "$sep" "$ak" "$acts"; sep=', '
    printf '"credentials": [{{"accessKey": "%s", "secretKey": "%s"}}]}}' "$ak" "$sk"
  done < {SEAWEED_KEYS}
  printf ']}}\\n'
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


def seaweed_start(app_actions: str) -> str:
    """Node 1's start: S3_KEYS (the key sync's input) seeds the keys file on a new volume,
    then weed runs as PID 1 so the sync steps can signal it. Keys written before keys had
    their own actions are the app's: `app_actions` (in the script, which an update does
    change, unlike the env)."""
    return f"""set -eu
umask 077
[ -s {SEAWEED_KEYS} ] || printf '%s\\n' "$S3_KEYS" > {SEAWEED_KEYS}
legacy='{app_actions}'
{_SEAWEED_RENDER}exec weed "$@"
"""


# stdin: lines "ACCESS SECRET ACTIONS", the app's key first. Replaces each access key's
# line or adds it, then the S3 gateway reloads its identities (SIGHUP) without dropping a
# connection. Older app keys (lines without actions) keep the app key's actions.
SEAWEED_ADD_KEY = f"""set -eu
umask 077
touch {SEAWEED_KEYS}
legacy=''
while read -r ak sk acts; do
  [ -n "$ak" ] || continue
  [ -n "$legacy" ] || legacy=$acts
  {{ grep -v "^$ak " {SEAWEED_KEYS} || true; printf '%s %s %s\\n' "$ak" "$sk" "$acts"; }} > {SEAWEED_KEYS}.new
  mv {SEAWEED_KEYS}.new {SEAWEED_KEYS}
done
{_SEAWEED_RENDER}{_SEAWEED_RELOAD}sleep 1
"""

# stdin: "ACCESS BASE". Keeps that app key (refuses if it is not there) and the keys that
# are not the app's (backup, admin), and prints the removed ones.
SEAWEED_KEEP_ONLY = f"""set -eu
umask 077
read -r ak base
if ! grep -q "^$ak " {SEAWEED_KEYS}; then
  echo "key $ak is not configured" >&2; exit 1
fi
: > {SEAWEED_KEYS}.new
while read -r key rest; do
  case "$key" in
    "") continue ;;
    "$ak") ;;
    "$base"|"$base"-[0-9]*) echo "$key"; continue ;;
  esac
  printf '%s %s\\n' "$key" "$rest" >> {SEAWEED_KEYS}.new
done < {SEAWEED_KEYS}
mv {SEAWEED_KEYS}.new {SEAWEED_KEYS}
legacy='[]'
{_SEAWEED_RENDER}{_SEAWEED_RELOAD}"""

# mc (shipped in the minio/minio image) as the root user, against this node.
_MINIO_ADMIN = """set -eu
export MC_HOST_self="http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@127.0.0.1:9000"
i=0
until mc admin info self >/dev/null 2>&1 </dev/null; do
  i=$((i + 1)); [ "$i" -lt 90 ] || { echo "MinIO did not answer mc admin info" >&2; exit 1; }; sleep 2
done
"""

# stdin: lines "ACCESS SECRET POLICY" (policy: compact JSON). A user per key with a policy
# of its own name (replacing the readwrite policy earlier versions gave the app). mc reads
# the secret from its stdin when it is not an argument, so no command line holds it.
MINIO_ADD_KEY = (
    _MINIO_ADMIN
    + """umask 077
while read -r ak sk policy; do
  [ -n "$ak" ] || continue
  printf '%s\\n' "$sk" | mc admin user add self "$ak" >/dev/null
  file="/tmp/selextract-policy-$ak.json"
  printf '%s\\n' "$policy" > "$file"
  mc admin policy create self "$ak" "$file" >/dev/null </dev/null
  rm -f "$file"
  mc admin policy detach self readwrite --user "$ak" >/dev/null 2>&1 </dev/null || true
  mc admin policy attach self "$ak" --user "$ak" >/dev/null 2>&1 </dev/null ||
    mc admin user info self "$ak" </dev/null | grep -q "PolicyName: $ak"
done
"""
)

# stdin: "ACCESS BASE". Removes the other app users (BASE, BASE-N) and their policies,
# printing them.
MINIO_KEEP_ONLY = (
    "read -r ak base\n"
    + _MINIO_ADMIN
    + r"""mc admin user info self "$ak" >/dev/null
mc admin user list self --json | sed -n 's/.*"accessKey":"\([^"]*\)".*/\1/p' | while read -r user; do
  case "$user" in
    "$ak") ;;
    "$base"|"$base"-[0-9]*)
      mc admin user remove self "$user" >/dev/null && echo "$user"
      mc admin policy remove self "$user" >/dev/null 2>&1 || true ;;
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
    """MinIO's root user, and SeaweedFS's admin identity: the bucket step's login."""
    return f"{base}-admin"


def backup_access_key(base: str) -> str:
    """The access key of the backup login (the `backups` bucket only)."""
    return f"{base}-backup"


def key_sync_input(impl: str, base: str, rotation: Mapping[str, int], buckets: Sequence[str]) -> str:
    """The key sync's input (and, for SeaweedFS, the first start's seed): one line per
    login "ACCESS SECRET-PLACEHOLDER PERMISSIONS", the app's first. SeaweedFS also gets its
    admin identity (MinIO's root is its own)."""
    grant = seaweed_actions if impl == "seaweedfs" else minio_policy
    lines = [f"{app_access_key(base, rotation)} {secret(ROTATION_KEY)} {grant(app_buckets(buckets))}"]
    if BACKUPS_BUCKET in buckets:
        lines.append(f"{backup_access_key(base)} {secret(BACKUP_KEY_SECRET)} {grant([BACKUPS_BUCKET])}")
    if impl == "seaweedfs":
        lines.append(f"{minio_root_user(base)} {secret(ADMIN_KEY_SECRET)} {SEAWEED_ADMIN_ACTIONS}")
    return "".join(line + "\n" for line in lines)


# --- where the nodes and their clients find each other --------------------------------
#
# MinIO decides which drive of the pool is its own by resolving each host name of the pool
# and checking whether it is an address of its own (container's) interfaces; a name that
# resolves to the host's private IP is not, in a bridge-networked container, and a name
# that resolves to localhost is refused in a container (minio/minio#16754). MinIO's answer
# for Docker: "make sure your command line entries resolve to the local interface IPs on
# the container" (minio/minio#13777). So each node's Docker hostname is its pool name
# (Docker writes it with the container's address into /etc/hosts) and extra_hosts map the
# other nodes' names to their hosts' private IPs, where 9000/9001 are published. The pool
# is MinIO's expansion notation over sequential host names, the same on every node
# (docs.min.io, `minio server`: "You must run the minio server command with the same
# combination of HOSTNAME and DIRECTORIES on each host"), as in the seed:
# MINIO_VOLUMES="http://minio-0{1...4}.internal/…". Host networking would do too, but the
# policy pack refuses it (every port would listen on the public address as well).
NODE_DOMAIN = "internal"
S3_PORT = PORTS[Role.OBJECT_STORE]
MINIO_CONSOLE_PORT = 9001
SEAWEED_MASTER_PORT = 9333
SEAWEED_VOLUME_PORT = 8080
SEAWEED_FILER_PORT = 8888
SEAWEED_GRPC_OFFSET = 10000  # weed's gRPC port is its HTTP port + 10000 unless set
SEAWEED_MASTERS = 3  # Raft: any two of three elect a leader
# The seed's MINIO_ENDPOINT host: a load-balancing proxy beside the clients on each host.
LB_ALIAS = f"minio-lb.{NODE_DOMAIN}"
S3_PROXY_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"
# Each node's liveness probe, which MinIO documents for load balancers (docs.min.io,
# Healthcheck API: /minio/health/live); SeaweedFS's S3 gateway answers /healthz.
HEALTH_PATH = {"minio": "/minio/health/live", "seaweedfs": "/healthz"}


def node_name(index: int) -> str:
    """The n-th (1-based) object-store node's name: its Docker hostname and network alias."""
    return f"minio-{index:02d}.{NODE_DOMAIN}"


def _minio_pool(nodes: int) -> str:
    """`node_name(1)`…`node_name(nodes)` in MinIO's expansion notation (at most 32 nodes)."""
    return f"http://minio-{{01...{nodes:02d}}}.{NODE_DOMAIN}:{S3_PORT}/data"


def _seaweed_ha(ctx: SpecContext) -> bool:
    """SeaweedFS on several real hosts: masters, filers and S3 gateways on several nodes.
    The local simulation keeps one gateway node (tests/reliability documents that layout)."""
    nodes = len(ctx.plan.placements_of(Role.OBJECT_STORE))
    return ctx.settings.object_store_impl == "seaweedfs" and nodes > 1 and not ctx.local


def s3_nodes(ctx: SpecContext) -> int:
    """How many nodes serve S3: every MinIO node, every SeaweedFS node on real hosts; the
    local SeaweedFS simulation runs its gateway on node 1 only."""
    nodes = len(ctx.plan.placements_of(Role.OBJECT_STORE))
    if ctx.settings.object_store_impl == "minio" or _seaweed_ha(ctx):
        return nodes
    return min(nodes, 1)


def key_holders(ctx: SpecContext) -> int:
    """How many nodes, from node 1, keep the app's access keys (each gets the key-sync step;
    retiring old keys must visit each): MinIO's users are cluster-wide, node 1 is enough;
    every SeaweedFS gateway reads its own keys file."""
    return 1 if ctx.settings.object_store_impl == "minio" else s3_nodes(ctx)


def load_balanced(ctx: SpecContext) -> bool:
    return s3_nodes(ctx) > 1


def node_endpoints(ctx: SpecContext, from_host: str) -> tuple[Endpoint, ...]:
    """Each S3 node as a container on `from_host` dials it: by name on the same engine,
    else the node host's private IP (the proxies' backends, Prometheus' targets)."""
    return ctx.plan.endpoints(Role.OBJECT_STORE, from_host)[: s3_nodes(ctx)]


def s3_proxy_hosts(ctx: SpecContext) -> tuple[str, ...]:
    """Hosts that get an S3 proxy: every host whose containers talk S3 (API, including the
    buckets step and backups, which run there, and workers). Locally one serves them all."""
    if not load_balanced(ctx):
        return ()
    clients = tuple(h.name for h in ctx.plan.hosts if {Role.API, Role.WORKER} & set(h.roles))
    return clients[:1] if ctx.local else clients


def s3_proxy_name(ctx: SpecContext, host: str) -> str:
    return f"{ctx.plan.stack}-{host}-s3-proxy-1"


def objectstore_url(ctx: SpecContext, host: str) -> str:
    """How containers on `host` reach the object store's S3 API: the one place this is
    decided (app and workers, the buckets step, backups and restores run in the API
    container). Several S3 nodes: the proxy beside them; one: that node."""
    if load_balanced(ctx):
        return f"http://{LB_ALIAS}:{S3_PORT}"
    return f"http://{ctx.plan.endpoint(Role.OBJECT_STORE, host).url}"


def objectstore_dependencies(ctx: SpecContext, host: str) -> tuple[str, ...]:
    """What an S3 client on `host` waits for besides node 1's key sync: the proxy it dials,
    and the key sync of every other node that keeps its own keys (SeaweedFS gateways)."""
    hosts = s3_proxy_hosts(ctx)
    if not hosts:
        return ()
    plan = ctx.plan
    syncs = tuple(
        password_sync_name(plan.container_name(p.host, Role.OBJECT_STORE, 1))
        for p in plan.placements_of(Role.OBJECT_STORE)[1 : key_holders(ctx)]
    )
    return (s3_proxy_name(ctx, hosts[0] if ctx.local else host), *syncs)


def s3_proxy_config(ctx: SpecContext, host: str) -> str:
    nodes = node_endpoints(ctx, host)
    return render(
        "s3-proxy.cfg.j2",
        alias=LB_ALIAS,
        port=S3_PORT,
        nodes=nodes,
        # MinIO is strongly consistent on every node: the least busy serves. SeaweedFS's
        # filers copy each other's metadata asynchronously: one gateway serves everyone
        # (read-after-write holds), the next takes over when it fails, and keeps serving.
        balance="leastconn" if ctx.settings.object_store_impl == "minio" else "first",
        sticky=ctx.settings.object_store_impl != "minio",
        health_path=HEALTH_PATH[ctx.settings.object_store_impl],
        resolve=any(not _is_ip(n.address) for n in nodes),
    )


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def s3_proxy_specs(ctx: SpecContext) -> list[ContainerSpec]:
    """HAProxy beside the clients, on each client host (Kamal-style, like the API proxies):
    no central balancer to lose, and it publishes nothing (the clients share its network)."""
    specs = []
    for host in s3_proxy_hosts(ctx):
        specs.append(
            ContainerSpec(
                name=s3_proxy_name(ctx, host),
                host=host,
                role=Role.OBJECT_STORE,
                image=ctx.settings.images.haproxy,
                command=("haproxy", "-W", "-db", "-f", S3_PROXY_CONFIG),
                aliases=(LB_ALIAS,),
                uploads=(Upload(S3_PROXY_CONFIG, s3_proxy_config(ctx, host)),),
                healthcheck=Healthcheck(("CMD", "haproxy", "-c", "-q", "-f", S3_PROXY_CONFIG)),
            )
        )
    return specs


def _published(ctx: SpecContext, host: HostPlan, *ports: int) -> tuple[Port, ...]:
    """`ports` on the host's private IP (nothing locally: one network, no host ports)."""
    if ctx.local:
        return ()
    return tuple(Port(port, port, str(host.private_ip)) for port in ports)


def _peers(ctx: SpecContext, nodes: list[HostPlan], index: int) -> dict[str, str]:
    """The other nodes' names → their hosts' private IPs (locally: network aliases)."""
    if ctx.local or len(nodes) < 2:
        return {}
    return {node_name(i + 1): str(h.private_ip) for i, h in enumerate(nodes) if i != index}


def _with_grpc(*ports: int) -> tuple[int, ...]:
    return tuple(p for port in ports for p in (port, port + SEAWEED_GRPC_OFFSET))


def _seaweed_command(ctx: SpecContext, nodes: list[HostPlan], names: list[str], index: int) -> tuple[str, ...]:
    """The weed command of node `index` (0-based). Each server registers under -ip, which
    the masters hand to the filers and to each other: on real hosts the node's name (itself
    by its hostname, the others through extra_hosts to private IPs, where the HTTP and gRPC
    ports are published); locally the container name, as before.

    Real hosts, several nodes: three masters (nodes 1-3), and on every node a volume
    server, a filer with its own store (filers with separate stores replay each other's
    metadata changes: SeaweedFS's filer peer sync) and an S3 gateway with the app's keys.
    Locally: node 1 runs master + filer + S3 gateway + a volume server, the others volume
    servers. Replication 001 keeps each object on two nodes either way."""
    replication = "001" if len(nodes) > 1 else "000"
    # Explicit slots: `max=0` sizes them as free disk / 30 GB, which on a shared local disk
    # is one slot per server, and the first collection to write (or the filer's own log)
    # takes them all, leaving other buckets unwritable.
    sizing = (f"-master.volumeSizeLimitMB={SEAWEED_VOLUME_MB}",)
    gateway = (
        "-filer",
        f"-filer.port={SEAWEED_FILER_PORT}",
        "-s3",
        f"-s3.port={S3_PORT}",
        f"-s3.config={SEAWEED_S3_CONFIG}",
    )
    if _seaweed_ha(ctx):
        masters = range(1, min(len(nodes), SEAWEED_MASTERS) + 1)
        peers = ",".join(f"{node_name(i)}:{SEAWEED_MASTER_PORT}" for i in masters)
        return (
            "server",
            "-dir=/data",
            "-ip.bind=0.0.0.0",
            f"-ip={node_name(index + 1)}",
            *(() if index < SEAWEED_MASTERS else ("-master=false",)),
            f"-master.port={SEAWEED_MASTER_PORT}",
            f"-master.peers={peers}",
            f"-master.defaultReplication={replication}",
            *sizing,
            f"-volume.port={SEAWEED_VOLUME_PORT}",
            f"-volume.max={SEAWEED_VOLUME_SLOTS}",
            *gateway,
        )
    if index == 0:
        return (
            "server",
            "-dir=/data",
            "-ip.bind=0.0.0.0",
            f"-ip={names[0]}",
            f"-master.port={SEAWEED_MASTER_PORT}",
            f"-master.defaultReplication={replication}",
            f"-volume.port={SEAWEED_VOLUME_PORT}",
            f"-volume.max={SEAWEED_VOLUME_SLOTS}",
            *sizing,
            *gateway,
        )
    return (
        "volume",
        "-dir=/data",
        "-ip.bind=0.0.0.0",
        f"-ip={names[index]}",
        f"-port={SEAWEED_VOLUME_PORT}",
        f"-max={SEAWEED_VOLUME_SLOTS}",
        f"-master={names[0]}:{SEAWEED_MASTER_PORT}",
    )


def _seaweed_ports(ctx: SpecContext, nodes: list[HostPlan], index: int) -> tuple[int, ...]:
    """What other hosts dial on node `index`: S3 on a gateway; master, volume server and
    filer with their gRPC ports where the others use them."""
    if len(nodes) == 1:
        return (S3_PORT,)
    if _seaweed_ha(ctx):
        master = _with_grpc(SEAWEED_MASTER_PORT) if index < SEAWEED_MASTERS else ()
        return (S3_PORT, *master, *_with_grpc(SEAWEED_VOLUME_PORT, SEAWEED_FILER_PORT))
    if index == 0:
        return (S3_PORT, *_with_grpc(SEAWEED_MASTER_PORT, SEAWEED_VOLUME_PORT))
    return _with_grpc(SEAWEED_VOLUME_PORT)


def objectstore_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan, settings = ctx.plan, ctx.settings
    placements = plan.placements_of(Role.OBJECT_STORE)
    if not placements:
        return []
    nodes = [plan.host(p.host) for p in placements]
    names = [plan.container_name(h.name, Role.OBJECT_STORE, 1) for h in nodes]
    multi = len(nodes) > 1
    impl, base, buckets = settings.object_store_impl, settings.object_store.access_key, settings.object_store.buckets
    keys = key_sync_input(impl, base, settings.rotation, buckets)
    specs = []
    for index, (host, name) in enumerate(zip(nodes, names, strict=True)):
        sync = PasswordSync(ADD_KEY[impl], keys) if index < key_holders(ctx) else None
        mounts = (Mount(ctx.data_volume(host.name, Role.OBJECT_STORE), "/data"),)
        hostname = node_name(index + 1) if multi else None
        aliases = (hostname,) if hostname else ()
        if settings.object_store_impl == "minio":
            spec = ContainerSpec(
                name=name,
                host=host.name,
                role=Role.OBJECT_STORE,
                image=settings.images.object_store,
                command=("server", _minio_pool(len(nodes)) if multi else "/data", "--console-address", ":9001"),
                env={
                    "MINIO_ROOT_USER": minio_root_user(settings.object_store.access_key),
                    "MINIO_ROOT_PASSWORD": secret("objectStoreRootPassword"),
                    "MINIO_PROMETHEUS_AUTH_TYPE": "public",
                },
                ports=_published(ctx, host, S3_PORT, MINIO_CONSOLE_PORT),
                mounts=mounts,
                extra_hosts=_peers(ctx, nodes, index),
                # MinIO images ship no curl since late 2023 (minio/minio#18371); `mc ready
                # local` is what MinIO's own compose example checks with.
                healthcheck=Healthcheck(("CMD", "mc", "ready", "local")),
                stop_grace_s=30,
                password_sync=sync,
                hostname=hostname,
                aliases=aliases,
            )
        else:
            spec = ContainerSpec(
                name=name,
                host=host.name,
                role=Role.OBJECT_STORE,
                image=settings.images.object_store,
                command=_seaweed_command(ctx, nodes, names, index),
                ports=_published(ctx, host, *_seaweed_ports(ctx, nodes, index)),
                mounts=mounts,
                extra_hosts=_peers(ctx, nodes, index),
                # the masters are nodes 1-3 on real hosts; they find each other whichever
                # starts first, so only the local layout waits for its one master
                depends_on=() if index == 0 or _seaweed_ha(ctx) else (names[0],),
                stop_grace_s=30,
                password_sync=sync,
                hostname=hostname,
                aliases=aliases,
            )
            if sync is not None:
                # a gateway's start script seeds the keys file on a new volume, then execs weed
                spec = replace(
                    spec,
                    entrypoint=("/bin/sh", "-c", seaweed_start(seaweed_actions(app_buckets(buckets))), "weed"),
                    env={"S3_KEYS": keys},
                    ignore_env_changes=True,
                )
        specs.append(spec)
    return [*specs, *s3_proxy_specs(ctx)]
