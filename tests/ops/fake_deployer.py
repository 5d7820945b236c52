"""A stand-in for `pulumi up` on the local Docker engine, for the migrate/backup tests
while the Pulumi Docker provider plugin cannot run here.

It stands in for Pulumi and nothing else: config edits go to `Pulumi.<stack>.yaml` as
`pulumi config set` writes them, and `up` converges this Docker engine to the stack's
plan from the very container specs the Pulumi program declares (`infra.specs`): same
names, images, commands, env, volumes, network and labels; containers and volumes the
plan no longer has are removed (as Pulumi deletes undeclared resources), stopped
declared ones are started. Data services (Postgres, Redis, SeaweedFS) run their real
images. The API and worker containers are stand-ins: the `selextract/python` base image
with this repo mounted, the spec's env, sleeping — enough for `docker exec` of the app's
own tools (`python -m app.maintenance`, the storage agent), not a web server.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from infra.config import NAMESPACE, Settings, load_stack_file
from infra.services.rotation import app_role_sql
from infra.specs import build_specs
from infra.specs.base import SECRET_MARK, ContainerSpec
from infra.specs.context import BUILD_APP, BUILD_WORKER
from infra.specs.objectstore import ADMIN_KEY_SECRET, BACKUP_KEY_SECRET, minio_root_user
from infra.specs.postgres import APP_USERS, DB_NAME, DB_USER, app_password_secret
from infra.topology import Plan, Role, plan
from ops.access import Container, Results
from ops.deploy import set_config_in_doc

REPO = Path(__file__).resolve().parents[2]
STANDIN_IMAGE = "selextract/python:3.11"
SECRETS = {
    "postgresPassword": "pg-test-secret",
    "postgresAppPassword0": "pg-app0-test-secret",
    "postgresAppPassword1": "pg-app1-test-secret",
    "redisPassword": "redis-test-secret",
    "objectStoreSecretKey": "s3-test-secret",
    "objectStoreBackupKey": "s3-backup-test-secret",
    "objectStoreRootPassword": "s3-admin-test-secret",
    "appSecretKey": "app-test-secret-key-0123456789",
    "monitoringPassword": "mon-test-secret",
}
ROLES = {Role.POSTGRES, Role.REDIS, Role.OBJECT_STORE, Role.API, Role.WORKER}


def docker(*args: str, check: bool = True, input: bytes | None = None) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, input=input, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def _fill(text: str) -> str:
    return SECRET_MARK.sub(lambda m: SECRETS[m.group(1)], text)


class FakeDeployer:
    def __init__(self, project: Path, stack: str, *, sabotage: Callable[[Plan], None] | None = None) -> None:
        self.project = project
        self.stack = stack
        self.sabotage = sabotage
        self.ups: list[int] = []

    # --- config, like `pulumi config set` --------------------------------------------------

    @property
    def file(self) -> Path:
        return self.project / f"Pulumi.{self.stack}.yaml"

    def _doc(self) -> dict[str, Any]:
        return yaml.safe_load(self.file.read_text())

    def get_config(self, key: str) -> Any:
        head, _, rest = key.partition(".")
        node: Any = self._doc()["config"].get(f"{NAMESPACE}:{head}")
        for part in rest.split(".") if rest else []:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def set_config(self, key: str, value: Any) -> None:
        doc = self._doc()
        set_config_in_doc(doc, key, value)
        self.file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def remove_config(self, key: str) -> None:
        doc = self._doc()
        head, _, rest = key.partition(".")
        full = f"{NAMESPACE}:{head}"
        if not rest:
            doc["config"].pop(full, None)
        else:
            node = doc["config"].get(full, {})
            parts = rest.split(".")
            for part in parts[:-1]:
                node = node.get(part, {})
            node.pop(parts[-1], None)
        self.file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def settings(self) -> Settings:
        return load_stack_file(self.file)

    def outputs(self) -> dict[str, Any]:
        # the backup key is a secret output, as the Pulumi program exports it
        return {
            "entryAddress": "127.0.0.1",
            "phase": self.settings().phase,
            BACKUP_KEY_SECRET: SECRETS[BACKUP_KEY_SECRET],
        }

    def preview(self, changes: dict[str, Any], progress: Callable[[str], None]) -> str:
        doc = self._doc()
        for key, value in changes.items():
            set_config_in_doc(doc, key, value)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"Pulumi.{self.stack}-", delete=False) as tmp:
            yaml.safe_dump(doc, tmp)
        target = plan(load_stack_file(Path(tmp.name)).model_copy(update={"stack": self.stack}))
        Path(tmp.name).unlink()
        wanted = {s.name for s in self._specs(target, self.settings())}
        have = set(self._existing())
        return "\n".join([f"+ {n}" for n in sorted(wanted - have)] + [f"- {n}" for n in sorted(have - wanted)])

    # --- up ------------------------------------------------------------------------------------

    def _specs(self, p: Plan, settings: Settings) -> list[ContainerSpec]:
        return [s for s in build_specs(p, settings) if s.role in ROLES and not s.one_shot]

    def _existing(self) -> list[str]:
        out = docker("ps", "-a", "--filter", f"label=selextract.stack={self.stack}", "--format", "{{.Names}}")
        return out.split()

    def _spec_hash(self, spec: ContainerSpec) -> str:
        data = json.dumps([spec.image, spec.command, spec.env, [m.volume for m in spec.mounts]], sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def up(self, progress: Callable[[str], None]) -> dict[str, Any]:
        settings = self.settings()
        p = plan(settings)
        self.ups.append(p.phase)
        specs = self._specs(p, settings)
        network = f"{self.stack}-net"
        if not docker("network", "ls", "-q", "--filter", f"name=^{network}$").strip():
            docker("network", "create", "--label", f"selextract.stack={self.stack}", network)
        wanted = {s.name: s for s in specs}
        changes = {"create": 0, "delete": 0, "same": 0}
        for name in self._existing():
            spec = wanted.get(name)
            current = docker("inspect", "-f", '{{index .Config.Labels "selextract.spec"}}', name).strip()
            if spec is None or current != self._spec_hash(spec):
                docker("rm", "-f", name)
                changes["delete"] += 1
        volumes = {m.volume for s in specs for m in s.mounts}
        for vol in docker("volume", "ls", "-q", "--filter", f"label=selextract.stack={self.stack}").split():
            if vol not in volumes:
                docker("volume", "rm", "-f", vol)
        existing = set(self._existing())
        for spec in specs:
            if spec.name in existing:
                changes["same"] += 1
                if docker("inspect", "-f", "{{.State.Running}}", spec.name).strip() != "true":
                    docker("start", spec.name)
                continue
            self._create(spec, network)
            changes["create"] += 1
        self._wait(p, specs)
        self._app_logins(specs)
        progress(f"fake up: phase {p.phase} {changes}")
        if self.sabotage is not None:
            self.sabotage(p)
        return {"result": "succeeded", "changes": changes}

    def _app_logins(self, specs: list[ContainerSpec]) -> None:
        """What the password-sync step does on a real deploy (infra/services/rotation.py)."""
        for spec in specs:
            if spec.role == Role.POSTGRES:
                sql = "".join(
                    app_role_sql(user, SECRETS[app_password_secret(i)], True) for i, user in enumerate(APP_USERS)
                )
                docker(
                    "exec",
                    "-i",
                    spec.name,
                    "psql",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-U",
                    DB_USER,
                    "-d",
                    DB_NAME,
                    input=sql.encode(),
                )

    def _create(self, spec: ContainerSpec, network: str) -> None:
        for mount in spec.mounts:
            docker("volume", "create", "--label", f"selextract.stack={self.stack}", mount.volume)
        standin = spec.image in (BUILD_APP, BUILD_WORKER)
        aliases = [a for alias in (spec.name, *getattr(spec, "aliases", ())) for a in ("--network-alias", alias)]
        args = [
            "create",
            "--name",
            spec.name,
            "--network",
            network,
            *aliases,
            "--label",
            f"selextract.stack={self.stack}",
            "--label",
            f"selextract.role={spec.role.value}",
            "--label",
            f"selextract.host={spec.host}",
            "--label",
            f"selextract.spec={self._spec_hash(spec)}",
        ]
        for key, value in spec.env.items():
            args += ["-e", f"{key}={_fill(value)}"]
        for mount in spec.mounts:
            args += ["-v", f"{mount.volume}:{mount.target}"]
        if standin:
            # --init: the sleeping stand-in stops on SIGTERM at once, as a Celery worker would
            args += [
                "--init",
                "-v",
                f"{REPO}:/srv/selextract:ro",
                "-e",
                "PYTHONPATH=/srv/selextract",
                "-w",
                "/srv/selextract",
                STANDIN_IMAGE,
                "sh",
                "-c",
                f'echo "stand-in {spec.name} ready"; exec sleep infinity',
            ]
        else:
            if spec.entrypoint:
                args += ["--entrypoint", spec.entrypoint[0]]
            args += [spec.image, *[_fill(c) for c in spec.entrypoint[1:]], *[_fill(c) for c in spec.command]]
        docker(*args)
        if spec.uploads and not standin:
            with tempfile.TemporaryDirectory() as stage:
                for upload in spec.uploads:
                    path = Path(stage) / upload.path.lstrip("/")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(_fill(upload.content))
                    if upload.executable:
                        path.chmod(0o755)
                docker("cp", f"{stage}/.", f"{spec.name}:/")
        docker("start", spec.name)

    def _wait(self, p: Plan, specs: list[ContainerSpec], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        api = next(s.name for s in specs if s.role == Role.API)

        def ready() -> bool:
            for spec in specs:
                if spec.role == Role.POSTGRES:
                    # over TCP: during init the entrypoint's temporary server answers on the
                    # socket only, and shuts down right after
                    probe = ["pg_isready", "-q", "-h", "127.0.0.1", "-U", "selextract"]
                elif spec.role == Role.REDIS:
                    probe = ["sh", "-c", 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning ping | grep -q PONG']
                else:
                    continue
                if subprocess.run(["docker", "exec", spec.name, *probe], capture_output=True).returncode != 0:
                    return False
            if p.buckets:
                # as the bucket step does: with the admin login (the app's key cannot create buckets)
                admin = (minio_root_user(self.settings().object_store.access_key), SECRETS[ADMIN_KEY_SECRET])
                try:
                    Results(Container(api), backend="minio", login=lambda: admin).ensure_buckets(*p.buckets)
                except Exception:
                    return False
            return True

        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake up: phase {p.phase} services not ready after {timeout}s")
            time.sleep(1)

    def destroy(self) -> None:
        for name in self._existing():
            docker("rm", "-f", name, check=False)
        for vol in docker("volume", "ls", "-q", "--filter", f"label=selextract.stack={self.stack}").split():
            docker("volume", "rm", "-f", vol, check=False)
        docker("network", "rm", f"{self.stack}-net", check=False)
