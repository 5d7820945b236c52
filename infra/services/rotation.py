"""Password rotation without a restart and without a failed request.

POSTGRES_PASSWORD only matters when the data directory is first initialised, so a new
owner password (a bumped `rotation:postgresPassword` keeper, or `pulumi config set
--secret`) is applied with `ALTER ROLE` inside the running container; the old one stops
working at once (exporters and ops tools use it, and restart with the new one).

The app and workers log in as one of two roles (APP_USERS) that act as the owner. A
rotation moves them to the other role with a freshly generated password, set here before
they start; the role the old containers use is left alone, so they keep connecting until
they are replaced. `selextract secrets rotate` then retires it (NOLOGIN); the next
rotation gives it a new password and lets it log in again.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from infra.hosts.base import Host
from infra.secrets import StackSecrets
from infra.services.base import resolve
from infra.specs.base import PasswordSync
from infra.specs.postgres import APP_USERS, DB_NAME, DB_USER, app_password_secret


def _quote(password: str) -> str:
    # Generated passwords are alphanumeric and operator-set ones are validated as URL-safe
    # (infra/config.py), so quoting with '' is enough.
    return "'" + password.replace("'", "''") + "'"


def alter_role_sql(password: str) -> str:
    return f'ALTER ROLE "{DB_USER}" PASSWORD {_quote(password)};\n'


def app_role_sql(user: str, password: str, active: bool) -> str:
    """Create the app login if missing and set its password; only the active one is made
    able to log in (the standby may have been retired and must stay so)."""
    login = " LOGIN" if active else ""
    return (
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') "
        f'THEN CREATE ROLE "{user}"; END IF; END$$;\n'
        f'GRANT "{DB_USER}" TO "{user}";\n'
        # sessions act as the owner: tables a migration creates belong to it, not to the login
        f"ALTER ROLE \"{user}\" SET role = '{DB_USER}';\n"
        f'ALTER ROLE "{user}"{login} PASSWORD {_quote(password)};\n'
    )


def _sync_command(
    name: str,
    host: Host,
    script: str,
    stdin: pulumi.Output[str],
    triggers: list[pulumi.Input[str]],
    opts: pulumi.ResourceOptions,
) -> pulumi.Resource:
    """A command run on the container's host when a trigger changes. The password is a
    trigger (kept secret in state) and travels on stdin, never on a command line."""
    stdin = pulumi.Output.secret(stdin)
    if host.ssh is None:
        return command.local.Command(name, create=script, update=script, stdin=stdin, triggers=triggers, opts=opts)
    return command.remote.Command(
        name, connection=host.ssh, create=script, update=script, stdin=stdin, triggers=triggers, opts=opts
    )


@dataclass(frozen=True)
class PasswordSyncArgs:
    container: pulumi.Resource
    container_name: str
    host: Host
    secrets: StackSecrets


class PostgresPasswordSync(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: PasswordSyncArgs, *, active_slot: int, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("selextract:service:PostgresPasswordSync", name, None, opts)
        script = f"docker exec -i {args.container_name} psql -v ON_ERROR_STOP=1 -q -U {DB_USER} -d {DB_NAME}"
        child = pulumi.ResourceOptions(parent=self, depends_on=[args.container])
        owner = args.secrets.get("postgresPassword")
        self.sync = _sync_command(name, args.host, script, owner.apply(alter_role_sql), [owner], child)
        self.app_logins = []
        for slot, user in enumerate(APP_USERS):
            password = args.secrets.get(app_password_secret(slot))
            active = slot == active_slot
            sql = password.apply(lambda pw, user=user, active=active: app_role_sql(user, pw, active))
            triggers: list[pulumi.Input[str]] = [password, "active" if active else "standby"]
            self.app_logins.append(_sync_command(f"{name}-{user}", args.host, script, sql, triggers, child))
        self.register_outputs({})


class ScriptPasswordSync(pulumi.ComponentResource):
    """Runs a spec's PasswordSync script inside its running container when the secret
    changes: Redis adds the new password to its `default` user, the object store the new
    app key (infra/specs/redis.py, infra/specs/objectstore.py). The old value keeps working
    for the previous version's containers until `selextract secrets rotate` drops it."""

    def __init__(
        self, name: str, args: PasswordSyncArgs, sync: PasswordSync, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("selextract:service:PasswordSync", name, None, opts)
        stdin = pulumi.Output.from_input(resolve(sync.stdin, args.secrets))
        script = f"docker exec -i {args.container_name} sh -c {shlex.quote(sync.script)}"
        child = pulumi.ResourceOptions(parent=self, depends_on=[args.container])
        self.sync = _sync_command(name, args.host, script, stdin, [stdin], child)
        self.register_outputs({})
