"""Deploy cost: how the Pulumi program's time and memory grow with the worker fleet.

- mocks: the real program for Pulumi.phase4.yaml under `pulumi.runtime.set_mocks`
  (bench/deploy_mock.py), one process per fleet size;
- real `pulumi preview` of the same configuration with the CLI built by `make setup`
  (its own file backend and passphrase in a temp dir; a dummy HCLOUD_TOKEN: a preview of
  new servers makes no hcloud API call), measured over the whole process tree (CLI,
  language host, program, one plugin process per provider instance).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.deploy_mock import extra_config
from bench.measure import run_measured
from tests.e2e.stack import PASSPHRASE, ROOT, pulumi_bin


def mock_run(servers: int, timeout: float = 900, stack: str = "phase4", program: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.deploy_mock", "--servers", str(servers), "--stack", stack]
    cmd += ["--program", str(program)] if program else []
    res = run_measured(cmd, cwd=ROOT, timeout=timeout)
    if res.returncode != 0:
        return {"servers": servers, "error": res.stderr[-2000:]}
    data = json.loads(res.stdout.strip().splitlines()[-1])
    data["process_seconds"] = res.seconds  # incl. interpreter start and imports
    return data


def preview_run(
    servers: int, timeout: float = 1200, stack: str = "phase4", program: Path | None = None
) -> dict[str, Any]:
    """`program`: another program file to preview instead of stacks/__main__.py."""
    if pulumi_bin() is None:
        return {"servers": servers, "error": "no pulumi CLI (make setup)"}
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    with tempfile.TemporaryDirectory(prefix=f"bench-preview-{servers}-") as tmp:
        wd = Path(tmp)
        (wd / "state").mkdir()
        main = ROOT / "stacks"
        if program is not None:
            main = wd / "program"
            main.mkdir()
            (main / "__main__.py").write_text(program.read_text())
        project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
        project["main"] = str(main)
        project["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
        (wd / "Pulumi.yaml").write_text(yaml.safe_dump(project))
        config = yaml.safe_load(stack_file.read_text())["config"]
        config.update(extra_config(servers, stack_file))
        name = f"preview{servers}"
        (wd / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))
        env = dict(
            os.environ,
            PULUMI_BACKEND_URL=f"file://{wd / 'state'}",
            PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            HCLOUD_TOKEN="0" * 64,
            PATH=f"{Path(str(pulumi_bin())).parent}:/usr/bin:{os.environ.get('PATH', '')}",
        )
        subprocess.run(
            [str(pulumi_bin()), "stack", "init", name, "--secrets-provider", "passphrase", "--non-interactive"],
            cwd=wd, env=env, capture_output=True, check=True,
        )  # fmt: skip
        res = run_measured(
            [str(pulumi_bin()), "preview", "--stack", name, "--non-interactive", "--suppress-progress"],
            cwd=wd, env=env, timeout=timeout, interval=0.5,
        )  # fmt: skip
    if res.returncode != 0:
        return {"servers": servers, "error": (res.stdout[-1500:] + res.stderr[-1500:])}
    creates = next((line.split()[1] for line in res.stdout.splitlines() if "to create" in line), "?")
    return {
        "servers": servers,
        "resources": int(creates) if creates.isdigit() else creates,
        "seconds": res.seconds,
        "cpu_seconds": res.cpu_seconds,
        "peak_tree_mb": res.peak_tree_mb,
        "peak_processes": res.peak_processes,
        "peak_single_rss_mb": res.peak_single_rss_mb,
    }
