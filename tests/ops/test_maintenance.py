"""`selextract maintenance on|off|status` flips the API's own switch (app.core.maintenance)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.core import maintenance as app_maintenance
from ops.cli import app

runner = CliRunner()


def test_on_status_off(tmp_path: Path, redis_server, redis_client) -> None:  # type: ignore[no-untyped-def]
    env = tmp_path / "e.env"
    env.write_text(f"DATABASE_URL=postgresql://unused@127.0.0.1:1/x\nREDIS_URL={redis_server.url(0)}\n")
    base = ["--env-file", str(env), "maintenance"]
    on = runner.invoke(app, [*base, "on", "--message", "Upgrading to phase 2", "--retry-after", "120"])
    assert on.exit_code == 0, on.output
    assert on.output.strip() == "maintenance: on (retry after 120s): Upgrading to phase 2"
    state = app_maintenance.read(redis_client)  # what every API server reads
    assert state is not None and state.message == "Upgrading to phase 2" and state.retry_after == 120
    status = json.loads(runner.invoke(app, [*base, "status", "--format", "json"]).output)
    assert status == {"on": True, "message": "Upgrading to phase 2", "retry_after": 120}
    off = runner.invoke(app, [*base, "off"])
    assert off.exit_code == 0 and off.output.strip() == "maintenance: off"
    assert app_maintenance.read(redis_client) is None


def test_bad_action_and_unreachable_redis(tmp_path: Path) -> None:
    env = tmp_path / "e.env"
    env.write_text("DATABASE_URL=postgresql://unused@127.0.0.1:1/x\nREDIS_URL=redis://127.0.0.1:1/0\n")
    assert runner.invoke(app, ["--env-file", str(env), "maintenance", "sideways"]).exit_code == 2
    result = runner.invoke(app, ["--env-file", str(env), "maintenance", "on"])
    assert result.exit_code == 1 and "maintenance on" in result.output
