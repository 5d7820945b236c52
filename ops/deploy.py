"""How the ops CLI changes a deployment: stack config + `pulumi up`, nothing else.

`Deployer` is the interface `migrate` and `workers scale` drive; `PulumiDeployer` is the
real one, through the Pulumi Automation API with the same toolchain and state backend as
`scripts/up.sh` (offline CLI under ~/.cache/selextract/pulumi, file state under
~/.local/state/selextract/pulumi, passphrase `selextract-local` for local stacks).
A config change is written to `Pulumi.<stack>.yaml` exactly as `pulumi config set` does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from infra.config import NAMESPACE, Settings
from ops.access import OpsError
from ops.repair import RepairReport, cli_runner, repair
from ops.stack import cache_dir, project_dir, stack_file, state_dir

Progress = Callable[[str], None]
LOCAL_PASSPHRASE = "selextract-local"


class Deployer(Protocol):
    stack: str

    def get_config(self, key: str) -> Any: ...

    def set_config(self, key: str, value: Any) -> None: ...

    def remove_config(self, key: str) -> None: ...

    def up(self, progress: Progress) -> dict[str, Any]: ...

    def repair(self, progress: Progress) -> RepairReport:
        """Clear what a killed earlier `pulumi up` left (ops/repair.py); a no-op otherwise."""
        self._select()
        env = self._environment()
        return repair(self.stack, cli_runner(self.work_dir, env), env["PULUMI_BACKEND_URL"], progress)

    def preview(self, changes: Mapping[str, Any], progress: Progress) -> str: ...

    def outputs(self) -> dict[str, Any]: ...


def _is_local_stack(stack: str) -> bool:
    return stack == "local" or stack.startswith("e2e-")


class PulumiDeployer:
    """`pulumi config set` / `pulumi up` / `pulumi preview` through the Automation API."""

    def __init__(
        self, stack: str, work_dir: Path | None = None, *, env: Mapping[str, str] | None = None, create: bool = False
    ) -> None:
        self.stack = stack
        self.work_dir = work_dir or project_dir()
        self.env = dict(env or {})
        self.create = create  # only a first deployment creates the stack; ops commands never do
        self._stack: Any = None

    def _environment(self) -> dict[str, str]:
        pulumi_root = cache_dir() / "pulumi"
        env = {
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_BACKEND_URL": os.environ.get("PULUMI_BACKEND_URL", f"file://{state_dir() / 'pulumi'}"),
            "PATH": os.pathsep.join(
                [str(pulumi_root / "bin"), str(self.work_dir / ".venv" / "bin"), os.environ.get("PATH", "")]
            ),
        }
        passphrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
        if passphrase is None and _is_local_stack(self.stack):
            passphrase = LOCAL_PASSPHRASE
        if passphrase is not None:
            env["PULUMI_CONFIG_PASSPHRASE"] = passphrase
        env.update(self.env)
        backend = env["PULUMI_BACKEND_URL"]
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return env

    def _select(self) -> Any:
        if self._stack is not None:
            return self._stack
        from pulumi import automation as auto

        pulumi_root = cache_dir() / "pulumi"
        if not (pulumi_root / "bin" / "pulumi").exists() and not shutil.which("pulumi"):
            raise OpsError(f"the Pulumi CLI is not built yet ({pulumi_root}/bin/pulumi): run `make setup`")
        command = (
            auto.PulumiCommand(root=str(pulumi_root), skip_version_check=True)
            if (pulumi_root / "bin" / "pulumi").exists()
            else None
        )
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(self.work_dir),
            env_vars=self._environment(),
            secrets_provider="passphrase",
            pulumi_command=command,
        )
        select = auto.create_or_select_stack if self.create else auto.select_stack
        try:
            self._stack = select(self.stack, work_dir=str(self.work_dir), opts=opts)
        except auto.errors.StackNotFoundError:
            backend = opts.env_vars["PULUMI_BACKEND_URL"] if opts.env_vars else "?"
            raise OpsError(
                f"stack {self.stack} is not deployed from this machine (no such stack in {backend}); "
                f"deploy it first: scripts/up.sh {self.stack}"
            ) from None
        except auto.errors.CommandError as exc:
            raise OpsError(f"pulumi stack select {self.stack}: {str(exc).strip()[-500:]}") from None
        return self._stack

    def get_config(self, key: str) -> Any:
        from pulumi import automation as auto

        try:
            return self._select().get_config(f"{NAMESPACE}:{key}", path="." in key).value
        except auto.errors.CommandError:
            return None

    def set_config(self, key: str, value: Any) -> None:
        from pulumi import automation as auto

        self._select().set_config(f"{NAMESPACE}:{key}", auto.ConfigValue(str(value)), path="." in key)

    def remove_config(self, key: str) -> None:
        self._select().remove_config(f"{NAMESPACE}:{key}", path="." in key)

    def up(self, progress: Progress) -> dict[str, Any]:
        from pulumi import automation as auto

        stack = self._select()
        self.repair(progress)
        try:
            result = stack.up(on_output=progress, diff=True, suppress_progress=True, color="never")
        except auto.errors.CommandError as exc:
            raise OpsError(f"pulumi up --stack {self.stack} failed: {str(exc).strip()[-800:]}") from None
        return {"result": result.summary.result, "changes": dict(result.summary.resource_changes or {})}

    def repair(self, progress: Progress) -> RepairReport:
        """Clear what a killed earlier `pulumi up` left (ops/repair.py); a no-op otherwise."""
        self._select()
        env = self._environment()
        return repair(self.stack, cli_runner(self.work_dir, env), env["PULUMI_BACKEND_URL"], progress)

    def preview(self, changes: Mapping[str, Any], progress: Progress) -> str:
        """`pulumi preview` of the stack with `changes` applied to a copy of its config."""
        from pulumi import automation as auto

        source = stack_file(self.stack, self.work_dir)
        doc = yaml.safe_load(source.read_text())
        for key, value in changes.items():
            set_config_in_doc(doc, key, value)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.work_dir, delete=False) as tmp:
            yaml.safe_dump(doc, tmp, sort_keys=False)
        try:
            result = self._select().preview(
                on_output=progress, diff=True, suppress_progress=True, color="never", config_file=tmp.name
            )
            return result.stdout
        except auto.errors.CommandError as exc:
            raise OpsError(f"pulumi preview --stack {self.stack} failed: {str(exc).strip()[-800:]}") from None
        finally:
            os.unlink(tmp.name)

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._select().outputs().items()}


def set_config_in_doc(doc: dict[str, Any], key: str, value: Any) -> None:
    """What `pulumi config set [--path] selextract:<key> <value>` does to a stack YAML."""
    config = doc.setdefault("config", {})
    head, _, rest = key.partition(".")
    full = f"{NAMESPACE}:{head}"
    if not rest:
        config[full] = str(value) if head == "phase" else value
        return
    node = config.setdefault(full, {})
    parts = rest.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def docker_hosts_from_outputs(outputs: Mapping[str, Any], settings: Settings) -> dict[str, str | None]:
    """Plan host → Docker endpoint (`ssh://deploy@<ip>`) from the stack's `hosts` export."""
    if settings.target == "local":
        return {}
    out: dict[str, str | None] = {}
    for name, host in (outputs.get("hosts") or {}).items():
        address = host.get("publicIp")
        out[name] = f"ssh://{settings.ssh.user}@{address}:{settings.ssh.port}" if address else None
    return out
