"""Postgres password rotation without a restart.

POSTGRES_PASSWORD only matters when the data directory is first initialised, so a new
password (a bumped `rotation:postgresPassword` keeper, or `pulumi config set --secret`)
is applied with `ALTER ROLE` inside the running container. Open sessions keep working;
the app and workers, which depend on this step, then start beside the old ones with the
new password (zero downtime), and the old password stops working at once.
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from infra.hosts.base import Host
from infra.secrets import StackSecrets
from infra.specs.postgres import DB_NAME, DB_USER


def alter_role_sql(password: str) -> str:
    # Generated passwords are alphanumeric and operator-set ones are validated as URL-safe
    # (infra/config.py), so quoting with '' is enough.
    return f"ALTER ROLE \"{DB_USER}\" PASSWORD '{password.replace(chr(39), chr(39) * 2)}';\n"


class PostgresPasswordSync(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        container: pulumi.Resource,
        container_name: str,
        host: Host,
        secrets: StackSecrets,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("selextract:service:PostgresPasswordSync", name, None, opts)
        password = secrets.get("postgresPassword")
        script = f"docker exec -i {container_name} psql -v ON_ERROR_STOP=1 -q -U {DB_USER} -d {DB_NAME}"
        sql = pulumi.Output.secret(password.apply(alter_role_sql))
        child = pulumi.ResourceOptions(parent=self, depends_on=[container])
        # The password is the trigger (kept secret in state) and travels on stdin, never
        # on a command line.
        if host.ssh is None:
            self.sync: pulumi.Resource = command.local.Command(
                name, create=script, update=script, stdin=sql, triggers=[password], opts=child
            )
        else:
            self.sync = command.remote.Command(
                name, connection=host.ssh, create=script, update=script, stdin=sql, triggers=[password], opts=child
            )
        self.register_outputs({})
