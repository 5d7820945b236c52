"""Grafana reads GF_SECURITY_ADMIN_PASSWORD only when it creates its database; the wrapper
its container starts through resets the stored admin password to it on every later start,
so a rotated monitoring password (which replaces the container) reaches Grafana. The
wrapper runs here for real, with a stand-in `grafana` binary that records its call."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.specs.base import ContainerSpec, secret
from infra.specs.context import SpecContext
from infra.topology import plan

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "rotated-Pw-42"
# Records its arguments and stdin; exits with $FAKE_GRAFANA_EXIT.
FAKE_GRAFANA = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD/argv"
cat > "$RECORD/stdin"
exit "${FAKE_GRAFANA_EXIT:-0}"
"""


def _grafana_spec() -> ContainerSpec:
    settings = load_stack_file(ROOT / "Pulumi.phase3.yaml")
    (spec,) = [s for s in build_specs(plan(settings), settings) if s.name.endswith("-grafana")]
    return spec


def _wrapper(spec: ContainerSpec) -> str:
    assert spec.entrypoint[0] == "/bin/sh", spec.entrypoint
    (upload,) = [u for u in spec.uploads if u.path == spec.entrypoint[1]]
    return upload.content


def test_grafana_starts_through_the_password_wrapper() -> None:
    spec = _grafana_spec()
    assert spec.env["GF_SECURITY_ADMIN_PASSWORD"] == secret("monitoringPassword")
    assert spec.command == ("/run.sh",), "the image's own entrypoint runs after the wrapper"
    assert secret("monitoringPassword") not in _wrapper(spec), "the password comes from the environment only"
    assert not any("monitoringPassword" in part for part in spec.entrypoint + spec.command)
    subprocess.run(["sh", "-n", "-c", _wrapper(spec)], check=True)


def _run_wrapper(tmp_path: Path, *, database: bool, grafana_exit: int = 0) -> subprocess.CompletedProcess[str]:
    bin_dir, record, data = tmp_path / "bin", tmp_path / "record", tmp_path / "data"
    for d in (bin_dir, record, data):
        d.mkdir()
    (bin_dir / "grafana").write_text(FAKE_GRAFANA)
    (bin_dir / "grafana").chmod(0o755)
    if database:
        (data / "grafana.db").write_bytes(b"SQLite format 3\x00")
    script = tmp_path / "wrapper.sh"
    script.write_text(_wrapper(_grafana_spec()))
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RECORD": str(record),
        "FAKE_GRAFANA_EXIT": str(grafana_exit),
        "GF_SECURITY_ADMIN_PASSWORD": PASSWORD,
        "GF_PATHS_HOME": "/usr/share/grafana",
        "GF_PATHS_CONFIG": "/etc/grafana/grafana.ini",
        "GF_PATHS_DATA": str(data),
    }
    return subprocess.run(
        ["sh", str(script), "sh", "-c", "echo grafana-server-started"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_an_existing_database_gets_the_current_password(tmp_path: Path) -> None:
    proc = _run_wrapper(tmp_path, database=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("grafana-server-started")
    argv = (tmp_path / "record" / "argv").read_text().split("\n")
    assert argv[:1] == ["cli"] and "--homepath" in argv and "--config" in argv
    assert argv[argv.index("admin") :][:3] == ["admin", "reset-admin-password", "--password-from-stdin"]
    assert PASSWORD not in argv, "never on a command line (ps)"
    assert (tmp_path / "record" / "stdin").read_text() == PASSWORD + "\n"


def test_a_new_database_is_left_to_grafana(tmp_path: Path) -> None:
    """First start: Grafana creates the admin user from GF_SECURITY_ADMIN_PASSWORD itself."""
    proc = _run_wrapper(tmp_path, database=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "grafana-server-started"
    assert not (tmp_path / "record" / "argv").exists()


def test_a_failed_reset_stops_the_start(tmp_path: Path) -> None:
    """Starting with the old password would leave a rotated-away login working."""
    proc = _run_wrapper(tmp_path, database=True, grafana_exit=1)
    assert proc.returncode != 0
    assert "grafana-server-started" not in proc.stdout
    assert "admin login" in proc.stderr and PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_grafana_spec_uses_the_wrapper(stack_file: Path) -> None:
    settings = load_stack_file(stack_file)
    ctx = SpecContext(plan(settings), settings)
    for spec in build_specs(ctx.plan, ctx.settings):
        if spec.name.endswith("-grafana"):
            assert "reset-admin-password --password-from-stdin" in _wrapper(spec)
