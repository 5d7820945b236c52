"""Pure planning: phase changes, migration plans (what moves where), worker scaling, and the
Pulumi deployer's config edits with the real Pulumi CLI on a copy of a stack."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cost import stack_cost
from ops.access import OpsError
from ops.cli import app
from ops.deploy import PulumiDeployer, docker_hosts_from_outputs, set_config_in_doc
from ops.migrate import MigrationError, data_locations, plan_migration
from ops.stack import cache_dir, load_stack, phase_changes, plan_for_phase, project_dir, settings_for_phase
from ops.workers import plan_scale

runner = CliRunner()


def test_phase_changes_add_each_phases_minimums() -> None:
    local = load_stack("local")
    assert phase_changes(local, 1) == {"phase": 1}
    small = settings_for_phase(local, 2)[0].model_copy(
        update={
            "api": local.api.model_copy(update={"servers": 1}),
            "object_store": local.object_store.model_copy(update={"nodes": 1}),
        }
    )
    assert phase_changes(small, 3) == {"phase": 3, "api.servers": 2}
    assert phase_changes(small, 4) == {"phase": 4, "api.servers": 2, "objectStore.nodes": 4}


def test_migration_0_to_1_moves_postgres_and_redis() -> None:
    mp = plan_migration(load_stack("local"), 0, 1)
    moves = {m.component: m for m in mp.moves}
    assert moves["database"].source == "local-app-01-postgres-1"
    assert moves["database"].destination == "local-db-01-postgres-1"
    assert moves["redis"].destination == "local-redis-01-redis-1"
    assert not moves["results"].moved
    assert mp.hosts_added == ["db-01", "redis-01"] and mp.hosts_removed == []
    assert mp.changes == {"phase": 1}


def test_migration_1_to_2_moves_results_to_object_storage() -> None:
    mp = plan_migration(settings_for_phase(load_stack("local"), 1)[0], 1, 2)
    moves = {m.component: m for m in mp.moves}
    assert not moves["database"].moved and not moves["redis"].moved
    assert moves["results"].source == "volume local-app-01-results"
    assert moves["results"].destination == "bucket task-results on local-db-01-objectstore-1"
    assert mp.hosts_added == ["worker-01", "worker-02"]
    assert mp.cost_to == stack_cost(settings_for_phase(load_stack("local"), 2)[0]).total
    assert any(s.startswith("data: results volume local-app-01-results → bucket") for s in mp.steps)


def test_migration_2_to_3_moves_no_data_but_the_entry() -> None:
    mp = plan_migration(load_stack("phase2"), 2, 3)
    assert not any(m.moved for m in mp.moves)
    assert (mp.entry_from, mp.entry_to) == ("app-01", "lb-01")
    assert mp.dns_managed is True
    assert "lb-01" in mp.hosts_added and "app-01" in mp.hosts_removed
    assert any(s.startswith("dns: records follow the entry app-01 → lb-01") for s in mp.steps)


def test_migration_3_to_4_moves_results_onto_the_cluster() -> None:
    mp = plan_migration(load_stack("phase3"), 3, 4)
    results = next(m for m in mp.moves if m.component == "results")
    assert results.source == "bucket task-results on phase3-db-01-objectstore-1"
    assert results.destination.startswith("bucket task-results on phase3-minio-01-objectstore-1,")
    assert len(results.destination.split(",")) == 4


def test_migration_down_is_the_mirror() -> None:
    up = plan_migration(load_stack("local"), 0, 1)
    down = plan_migration(settings_for_phase(load_stack("local"), 1)[0], 1, 0)
    assert [(m.source, m.destination) for m in down.moves] == [(m.destination, m.source) for m in up.moves]


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (0, 2, "one phase at a time"),
        (1, 1, "one phase at a time"),
        (4, 5, "--to 5: unknown phase"),
        (-1, 0, "--from -1"),
    ],
)
def test_migration_refuses_bad_phases(a: int, b: int, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        plan_migration(load_stack("local"), a, b)


def test_data_locations() -> None:
    p = plan_for_phase(load_stack("local"), 0)
    assert data_locations(p) == {
        "database": "local-app-01-postgres-1",
        "redis": "local-app-01-redis-1",
        "results": "volume local-app-01-results",
    }


def test_workers_scale_plans() -> None:
    local = load_stack("local")  # phase 0: workers on app-01, 2 containers
    sp = plan_scale(local, 6)
    assert sp.changes == {"workers.containersPerServer": 6} and sp.containers == 6
    assert sp.cost_delta == 0  # same app host
    phase2 = load_stack("phase2")  # 3 servers x 4
    sp = plan_scale(phase2, 18)
    assert sp.changes == {"workers.servers": 5} and sp.containers == 20
    assert sp.notes == ["5 servers x 4 containers = 20 (rounded up from 18)"]
    assert sp.cost_delta == pytest.approx(2 * 48.49)
    sp = plan_scale(phase2, 12)
    assert sp.changes == {} and sp.cost_delta == 0
    sp = plan_scale(phase2, 12, per_server=6)
    assert sp.changes == {"workers.servers": 2, "workers.containersPerServer": 6}
    with pytest.raises(ValueError, match="at least 1"):
        plan_scale(phase2, 0)
    with pytest.raises(ValueError, match="at most 64"):
        plan_scale(local, 65)


def test_cli_workers_scale_dry_run() -> None:
    result = runner.invoke(app, ["--stack", "phase2", "workers", "scale", "18", "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["changes"] == {"workers.servers": 5} and data["applied"] is False
    assert runner.invoke(app, ["--stack", "phase2", "workers", "scale", "0", "--dry-run"]).exit_code == 2


def test_cli_migrate_refuses_url_mode_and_bad_phases(tmp_path: Path) -> None:
    env = tmp_path / "e.env"
    env.write_text("DATABASE_URL=postgresql://x@127.0.0.1:1/x\nREDIS_URL=redis://127.0.0.1:1/0\n")
    url = runner.invoke(app, ["--env-file", str(env), "migrate", "--from", "0", "--to", "1", "--dry-run"])
    assert url.exit_code == 2 and "without --env-file" in url.output


def test_set_config_in_doc_is_pulumi_config_set() -> None:
    doc = {"config": {"selextract:phase": "0", "selextract:workers": {"servers": 2}}}
    set_config_in_doc(doc, "phase", 2)
    set_config_in_doc(doc, "workers.containersPerServer", 3)
    set_config_in_doc(doc, "api.servers", 4)
    assert doc["config"] == {
        "selextract:phase": "2",
        "selextract:workers": {"servers": 2, "containersPerServer": 3},
        "selextract:api": {"servers": 4},
    }


def test_docker_hosts_from_outputs() -> None:
    settings = load_stack("phase2")
    outputs = {"hosts": {"app-01": {"publicIp": "203.0.113.5"}, "db-01": {"publicIp": None}}}
    assert docker_hosts_from_outputs(outputs, settings) == {"app-01": "ssh://deploy@203.0.113.5:22", "db-01": None}
    assert docker_hosts_from_outputs(outputs, load_stack("local")) == {}


@pytest.fixture
def pulumi_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not (cache_dir() / "pulumi" / "bin" / "pulumi").exists() and not shutil.which("pulumi"):
        pytest.skip("the offline Pulumi CLI is not built (make setup)")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(project_dir() / "Pulumi.yaml", project / "Pulumi.yaml")
    text = (project_dir() / "Pulumi.local.yaml").read_text()
    (project / "Pulumi.opsdeploy.yaml").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("encryptionsalt")) + "\n"
    )
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path / 'state'}")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test-only")
    monkeypatch.setenv("SELEXTRACT_PROJECT_DIR", str(project))
    return project


def test_pulumi_deployer_edits_the_stack_file(pulumi_project: Path) -> None:
    missing = PulumiDeployer("opsdeploy", pulumi_project)
    with pytest.raises(OpsError, match="stack opsdeploy is not deployed from this machine"):
        missing.get_config("phase")
    deployer = PulumiDeployer("opsdeploy", pulumi_project, create=True)
    assert str(deployer.get_config("phase")) == "0"
    deployer.set_config("phase", 2)
    deployer.set_config("workers.containersPerServer", 3)
    assert str(deployer.get_config("phase")) == "2"
    doc = yaml.safe_load((pulumi_project / "Pulumi.opsdeploy.yaml").read_text())
    assert doc["config"]["selextract:workers"]["containersPerServer"] in (3, "3")
    settings = load_stack("opsdeploy")  # what the next `pulumi up` (and the CLI) will see
    assert settings.phase == 2 and settings.workers.containers_per_server == 3
    deployer.remove_config("workers.containersPerServer")
    assert load_stack("opsdeploy").workers.containers_per_server == 4  # back to the default
    assert deployer.get_config("nope") is None
    assert os.environ["PULUMI_BACKEND_URL"].startswith("file://")
