"""Drives the real Pulumi CLI on a throwaway local stack: its own work dir, state backend
and ports, so it never touches the developer's `local` stack, and cleans up after itself
(and after a previous run that died) by the `selextract.stack` label."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SELEXTRACT_CACHE", Path.home() / ".cache" / "selextract"))
PASSPHRASE = "selextract-e2e"


def pulumi_bin() -> str | None:
    return shutil.which("pulumi") or (
        str(CACHE / "pulumi/bin/pulumi") if (CACHE / "pulumi/bin/pulumi").exists() else None
    )


# Ports a test stack publishes must lie below the kernel's ephemeral range (32768-60999 by
# default): Docker binds them only when the entry container starts, and on a busy machine
# an outgoing connection may hold that very port as its source port by then ("bind:
# address already in use", seen in CI with 58444 while the tests hammered 58443).
# Fixed ports of the e2e/reliability stacks: 16xxx-19xxx and 27xxx-29xxx; drawn ones below.
DRAWN_PORTS = range(21000, 27000)


def ephemeral_ports() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def published_port() -> int:
    """A free port for a stack to publish, outside the ephemeral range (see above)."""
    ephemeral = ephemeral_ports()
    for port in random.sample(DRAWN_PORTS, 500):
        if port in ephemeral:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {DRAWN_PORTS} outside the ephemeral range {ephemeral}")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def remove_leftovers(stack: str) -> None:
    """Containers, networks and volumes a previous run of `stack` left behind."""
    label = f"label=selextract.stack={stack}"
    ids = docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        docker("rm", "-f", *ids)
    for kind in ("network", "volume"):
        names = docker(kind, "ls", "-q", "--filter", label).stdout.split()
        if names:
            docker(kind, "rm", *names, check=False)


def stack_resources(stack: str) -> dict[str, list[str]]:
    label = f"label=selextract.stack={stack}"
    return {
        "containers": docker("ps", "-aq", "--filter", label).stdout.split(),
        "networks": docker("network", "ls", "-q", "--filter", label).stdout.split(),
        "volumes": docker("volume", "ls", "-q", "--filter", label).stdout.split(),
    }


def resource_errors(stdout: str, limit: int = 60) -> str:
    """The resources' own `error:` lines with the resource each belongs to: when one fails,
    the program's cancellation traceback fills the end of the output and hides them."""
    lines = stdout.splitlines()
    found: list[str] = []
    for i, line in enumerate(lines):
        if "error:" in line and "Traceback" not in line:
            owner = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip().endswith("):")), "")
            found += [owner, line] if owner and owner not in found else [line]
    return "resource errors:\n" + "\n".join(found[:limit]) if found else "(no resource error line)"


@dataclass
class LocalStack:
    name: str
    workdir: Path
    config: dict[str, Any]
    log: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls, name: str, workdir: Path, overrides: dict[str, Any], base_file: str = "Pulumi.local.yaml"
    ) -> LocalStack:
        """A stack configured like `base_file` (Pulumi.local.yaml) plus `overrides` (selextract:* keys)."""
        base = yaml.safe_load((ROOT / base_file).read_text())["config"]
        config = {**base, **overrides}
        workdir.mkdir(parents=True, exist_ok=True)
        project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
        project["main"] = str(ROOT / "stacks")
        project["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
        (workdir / "Pulumi.yaml").write_text(yaml.safe_dump(project))
        (workdir / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))
        (workdir / "state").mkdir(exist_ok=True)
        stack = cls(name, workdir, config)
        stack.pulumi("stack", "init", name, "--secrets-provider", "passphrase")
        return stack

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PULUMI_BACKEND_URL=f"file://{self.workdir / 'state'}",
            PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PATH=f"{Path(str(pulumi_bin())).parent}:/usr/bin:{env.get('PATH', '')}",
        )
        return env

    def pulumi(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = subprocess.run(
            [str(pulumi_bin()), *args, "--non-interactive"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.log.append(f"$ pulumi {' '.join(args)}  ({time.monotonic() - start:.1f} s, exit {proc.returncode})")
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} failed:\n{resource_errors(proc.stdout)}\n"
                f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def up(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("up", "--yes", "--stack", self.name, "--suppress-progress")

    def preview_no_changes(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("preview", "--stack", self.name, "--expect-no-changes", "--diff", check=False)

    def destroy(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("destroy", "--yes", "--stack", self.name, "--suppress-progress")

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets", "--stack", self.name).stdout)

    def export_state(self) -> str:
        return self.pulumi("stack", "export", "--stack", self.name).stdout


TESTSITE_IMAGE = "selextract/testsite:1"


def require_toolchain(suite: str = "end-to-end") -> None:
    """Fail (not skip) naming what a bare run lacks: `make test` sets all of it up first."""
    missing = []
    if pulumi_bin() is None:
        missing.append("pulumi CLI (scripts/setup-pulumi.sh)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        missing.append("a running Docker engine (scripts/setup-docker.sh)")
    if subprocess.run(["docker", "image", "inspect", TESTSITE_IMAGE], capture_output=True).returncode != 0:
        missing.append(f"{TESTSITE_IMAGE} (scripts/build-images.sh)")
    if missing:
        pytest.fail(f"{suite} tests need: " + ", ".join(missing))
