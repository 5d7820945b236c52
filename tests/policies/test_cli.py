"""`pulumi preview --policy-pack policies` with the real Pulumi CLI: a deliberately bad
stack is refused, the same resources done right pass, and every committed stack passes.

Each test runs in a scratch copy of its project with a file backend in a temporary
directory, so no stack state or `Pulumi.<stack>.yaml` of the repository is touched.
Where the CLI, a provider plugin or the Python policy runtime is missing the test is
skipped with the exact reason (what to build or install)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.infra.pulumi_harness import ROOT

pytestmark = pytest.mark.e2e

POLICY_PACK = ROOT / "policies"
BAD_STACK = Path(__file__).parent / "bad_stack"
CACHE = Path(os.environ.get("SELEXTRACT_CACHE", Path.home() / ".cache" / "selextract"))
DB_PASSWORD = "probe-Plaintext-Pw-4711"
NO_RUN_PLUGIN = "method RunPlugin not implemented"


def cli_env(state: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(CACHE / "pulumi" / "bin"), str(ROOT / ".venv" / "bin"), env.get("PATH", "")])
    env.update(
        PULUMI_BACKEND_URL=f"file://{state}",
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_CONFIG_PASSPHRASE=env.get("SELEXTRACT_TEST_PASSPHRASE", "selextract-local"),
    )
    if not env.get("PULUMI_HOME"):
        env.pop("PULUMI_HOME", None)
    state.mkdir(parents=True, exist_ok=True)
    return env


def pulumi_bin() -> str:
    found = shutil.which("pulumi", path=cli_env(Path("/tmp"))["PATH"])
    if not found:
        pytest.skip("Pulumi CLI not found on PATH or in ~/.cache/selextract/pulumi/bin (`make setup` builds it)")
    return found


@cache
def installed_plugins() -> frozenset[str]:
    out = subprocess.run(
        [pulumi_bin(), "plugin", "ls", "--json"], capture_output=True, text=True, env=cli_env(Path("/tmp")), check=False
    )
    try:
        return frozenset(p["name"] for p in json.loads(out.stdout or "[]") if p.get("kind") == "resource")
    except ValueError:
        return frozenset()


def require_plugins(*names: str) -> None:
    missing = sorted(set(names) - installed_plugins())
    on_path = {n for n in missing if shutil.which(f"pulumi-resource-{n}", path=cli_env(Path("/tmp"))["PATH"])}
    missing = [n for n in missing if n not in on_path]
    if missing:
        pytest.skip(
            f"provider plugin(s) {', '.join(missing)} not installed (`pulumi plugin ls`): "
            "run scripts/setup-pulumi.sh" + (" --with-hcloud" if "hcloud" in missing else "")
        )


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pulumi_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def preview(cwd: Path, stack: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    result = run(
        ["preview", "--stack", stack, "--policy-pack", str(POLICY_PACK), "--non-interactive", "--color=never", *extra],
        cwd,
        env,
    )
    if NO_RUN_PLUGIN in result.stdout + result.stderr:
        pytest.skip(
            "the Python language host cannot run policy packs: `pulumi-language-python` answers "
            f"'{NO_RUN_PLUGIN}' (the offline host in tools/pulumi/language-python needs RunPlugin: "
            "`python -u -m pulumi.policy <engine> <pack dir>` in the pack's virtualenv)"
        )
    return result


def bad_project(tmp_path: Path, *, fixed: bool) -> tuple[Path, dict[str, str], str]:
    project = tmp_path / "bad_stack"
    shutil.copytree(BAD_STACK, project)
    text = (project / "Pulumi.yaml").read_text().replace("../../../.venv", str(ROOT / ".venv"))
    (project / "Pulumi.yaml").write_text(text)
    env = cli_env(tmp_path / "state")
    stack = "probe-fixed" if fixed else "probe-bad"
    providers = ["command", *(p for p in ("docker", "hcloud") if p in installed_plugins())]
    steps = [
        ["stack", "init", stack, "--secrets-provider", "passphrase"],
        ["config", "set", "--stack", stack, "bad:providers", ",".join(providers)],
        ["config", "set", "--stack", stack, "bad:fixed", str(fixed).lower()],
        ["config", "set", "--stack", stack, "--secret", "bad:dbPassword", DB_PASSWORD],
    ]
    if "hcloud" in providers:  # never called during preview, but the provider wants one
        steps.append(["config", "set", "--stack", stack, "--secret", "hcloud:token", "x" * 64])
    for args in steps:
        result = run(args, project, env)
        assert result.returncode == 0, result.stderr
    return project, env, stack


def test_deliberately_bad_stack_is_refused(tmp_path: Path) -> None:
    require_plugins("command", "random")
    project, env, stack = bad_project(tmp_path, fixed=False)
    result = preview(project, stack, env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    refused = set(re.findall(r"- \[mandatory\](?: \[severity: \w+\])?\s+([a-z0-9-]+)\s+\(", output))
    expected = {"secrets-only-as-pulumi-secrets", "no-secret-value-in-plain-text"}  # the latter: secret config
    if "docker" in installed_plugins():
        expected.add("only-entry-publishes-publicly")
    if "hcloud" in installed_plugins():
        expected |= {
            "firewall-no-public-ssh-or-database-ports",
            "server-required-labels",
            "servers-behind-firewall-and-in-private-network",
        }
    assert refused == expected, output
    assert "environment.PGPASSWORD is plain text but property 'PGPASSWORD' holds a credential" in output
    assert "environment.DATABASE_URL is plain text but a URL carries a password" in output
    assert DB_PASSWORD not in output, "violation messages must not show the secret"


def test_the_same_resources_done_right_pass(tmp_path: Path) -> None:
    """Secrets the engine marks as secret are seen as secrets through the real CLI."""
    require_plugins("command", "random")
    project, env, stack = bad_project(tmp_path, fixed=True)
    result = preview(project, stack, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Policies:" in result.stdout and "✅ selextract@v1.0.0" in result.stdout


STACKS = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))
PLUGINS = {"local": ("docker", "random")}


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stack_preview_passes_the_policy_pack(stack: str, tmp_path: Path) -> None:
    require_plugins(*PLUGINS.get(stack, ("hcloud", "docker", "command", "random")))
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project)
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", project)
    (project / "Pulumi.yaml").write_text(
        (ROOT / "Pulumi.yaml").read_text().replace("virtualenv: .venv", f"virtualenv: {ROOT / '.venv'}")
    )
    (project / "stacks").symlink_to(ROOT / "stacks")
    env = cli_env(tmp_path / "state")
    if stack != "local":
        env.setdefault("HCLOUD_TOKEN", "x" * 64)  # a preview makes no Hetzner API call
    init = run(["stack", "init", stack, "--secrets-provider", "passphrase"], project, env)
    assert init.returncode == 0, init.stderr
    result = preview(project, stack, env)
    output = result.stdout + result.stderr
    assert not re.search(r"- \[mandatory\]", output), output
    assert result.returncode == 0, output
    assert "✅ selextract@v1.0.0" in output, output
