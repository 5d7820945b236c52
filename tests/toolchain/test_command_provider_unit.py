"""The Go unit tests of our command provider (tools/pulumi/command: diff/replace rules of
remote.Command, environment quoting, input checks, no secret in errors), built with the
same Go caches as scripts/setup-pulumi.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SELEXTRACT_CACHE", Path.home() / ".cache" / "selextract"))


def test_command_provider_go_tests() -> None:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        pytest.skip("no Go toolchain (scripts/setup-pulumi.sh needs one too)")
    if not (CACHE / "go" / "mod" / "github.com" / "pulumi").is_dir():
        pytest.skip("Go module cache not populated yet: run scripts/setup-pulumi.sh")
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOMODCACHE": str(CACHE / "go" / "mod"),
        "GOCACHE": str(CACHE / "go" / "build"),
        "GOFLAGS": "-modcacherw -mod=readonly",
        "CGO_ENABLED": "0",
    }
    result = subprocess.run(
        [go, "test", "-count=1", "./..."],
        cwd=ROOT / "tools" / "pulumi" / "command",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
