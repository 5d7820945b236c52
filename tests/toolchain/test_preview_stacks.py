"""scripts/preview-stacks.sh: an offline preview of a Hetzner stack with the policy pack
writes its diff, JSON and summary, leaves the repository's stack file alone, and a stack
whose preview fails makes the script fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SELEXTRACT_CACHE", Path.home() / ".cache" / "selextract"))
SCRIPT = ROOT / "scripts" / "preview-stacks.sh"


def require_toolchain() -> None:
    pulumi = shutil.which("pulumi", path=f"{CACHE / 'pulumi' / 'bin'}:{os.environ.get('PATH', '')}")
    if not pulumi:
        pytest.skip("Pulumi CLI not found (scripts/setup-pulumi.sh builds it)")
    out = subprocess.run([pulumi, "plugin", "ls", "--json"], capture_output=True, text=True, check=False)
    missing = {"hcloud", "docker", "command", "random"} - {p.get("name") for p in json.loads(out.stdout or "[]")}
    if missing:
        pytest.skip(f"provider plugin(s) {', '.join(sorted(missing))} not installed: run scripts/setup-pulumi.sh")


def run(tmp_path: Path, *stacks: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *stacks],
        env={**os.environ, "PREVIEW_ARTIFACTS": str(tmp_path / "artifacts"), **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_preview_of_phase1_offline(tmp_path: Path) -> None:
    require_toolchain()
    result = run(tmp_path, "phase1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    art = tmp_path / "artifacts"
    text = (art / "preview-phase1.txt").read_text()
    assert "command:remote:Command: (create)" in text and "hcloud:index/server:Server: (create)" in text
    assert "[mandatory]" not in text
    digest = json.loads((art / "preview-phase1.json").read_text())
    assert digest["changeSummary"].get("create", 0) > 10 and set(digest["changeSummary"]) == {"create"}
    summary = (art / "preview-phase1.md").read_text()
    assert summary.startswith("### ✅ `phase1`"), summary
    table = (art / "preview-stacks.txt").read_text().splitlines()
    assert table[1].split()[:2] == ["phase1", "ok"], table
    # the scratch copy got the encryption salt, not the repository's stack file
    assert "encryptionsalt" not in (ROOT / "Pulumi.phase1.yaml").read_text()
    assert "HCLOUD_TOKEN" not in output and "pppppppp" not in text


def test_a_failing_stack_fails_the_script(tmp_path: Path) -> None:
    require_toolchain()
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    config = yaml.safe_load((ROOT / "Pulumi.phase1.yaml").read_text())
    config["config"]["selextract:location"] = "nowhere-1"  # the program refuses it
    (stacks / "Pulumi.broken.yaml").write_text(yaml.safe_dump(config))
    result = run(tmp_path, "broken", PREVIEW_STACK_DIR=str(stacks))
    assert result.returncode == 1, result.stdout + result.stderr
    table = (tmp_path / "artifacts" / "preview-stacks.txt").read_text().splitlines()
    assert table[1].split()[:2] == ["broken", "FAILED"], table
    assert "nowhere-1" in (tmp_path / "artifacts" / "preview-broken.txt").read_text()
    summary = (tmp_path / "artifacts" / "preview-broken.md").read_text()
    assert "❌" in summary, summary
