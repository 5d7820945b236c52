"""Redis: the Celery broker and the API's rate-limit/maintenance store.

Passwords live in an ACL file on the data volume, not in the container's environment:
REDIS_PASSWORD only seeds it on the first start. A rotation adds the new password to the
`default` user in place (infra/services/rotation.py), so containers of the old version
keep connecting until they are gone; `selextract secrets rotate redisPassword` then drops
the older ones. Health checks and the ops tools use an admin user whose password is
generated inside the container and never leaves the volume.
"""

from __future__ import annotations

from infra.specs.base import ContainerSpec, Healthcheck, Mount, PasswordSync, secret
from infra.specs.context import SpecContext
from infra.topology import PORTS, Role

ACL_FILE = "/data/users.acl"
ADMIN_USER = "selextract-admin"
ADMIN_PASSWORD_FILE = "/data/.admin-password"
# redis-cli as the admin user, inside the Redis container
ADMIN_CLI = f'REDISCLI_AUTH="$(cat {ADMIN_PASSWORD_FILE})" redis-cli --user {ADMIN_USER} --no-auth-warning'

_REDIS_START = f"""set -eu
umask 077
[ -s {ADMIN_PASSWORD_FILE} ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {ADMIN_PASSWORD_FILE}
[ -s {ACL_FILE} ] || printf 'user default on >%s ~* &* +@all\\n' "$REDIS_PASSWORD" > {ACL_FILE}
( grep -v '^user {ADMIN_USER} ' {ACL_FILE} || true
  printf 'user {ADMIN_USER} on >%s ~* &* +@all\\n' "$(cat {ADMIN_PASSWORD_FILE})" ) > {ACL_FILE}.new
mv {ACL_FILE}.new {ACL_FILE}
exec redis-server - <<EOF
aclfile {ACL_FILE}
appendonly yes
save "900 1 300 10 60 10000"
maxmemory {{maxmemory}}
maxmemory-policy noeviction
EOF
"""

# stdin: the new password. Added beside the current ones, then written to the ACL file. It
# reaches redis-cli on its stdin (`-x`: the last argument), from printf, a shell builtin, so
# no process's command line ever holds it (ps on the host shows container processes too).
ADD_PASSWORD = (
    f"read -r pw; printf '>%s' \"$pw\" | {ADMIN_CLI} -x ACL SETUSER default on | grep -qx OK "
    f"&& {ADMIN_CLI} ACL SAVE | grep -qx OK"
)


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
                # No password on the command line (it would show in the Pulumi state,
                # `docker inspect` and ps): it seeds the ACL file from the secret env.
                command=("sh", "-c", _REDIS_START.format(maxmemory=maxmemory)),
                user="redis",  # the image's entrypoint drops root only when it starts redis-server itself
                ports=ctx.internal_port(host, PORTS[Role.REDIS]),
                mounts=(Mount(ctx.data_volume(host.name, Role.REDIS), "/data"),),
                healthcheck=Healthcheck(("CMD-SHELL", f"{ADMIN_CLI} ping | grep PONG")),
                env={"REDIS_PASSWORD": secret("redisPassword")},
                wait_healthy=True,
                stop_grace_s=30,
                # the password only seeds a new volume; rotations are applied in place
                ignore_env_changes=True,
                password_sync=PasswordSync(ADD_PASSWORD, secret("redisPassword") + "\n"),
            )
        )
    return specs
