"""`selextract cost`: the same numbers as the Pulumi program's cost export, per phase,
traffic from the price table, and right-sizing hints."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from infra.catalog import load_catalog
from infra.config import ConfigError
from infra.cost import stack_cost
from ops.cli import app
from ops.costs import current_cost, optimize, phase_cost_delta, projection
from ops.metrics import HostUsage, Metrics
from ops.stack import apply_changes, load_stack, project_dir, settings_for_phase

runner = CliRunner()
STACKS = ("local", "phase1", "phase2", "phase3", "phase4")


@pytest.mark.parametrize("stack", STACKS)
def test_current_cost_is_the_stacks_export(stack: str) -> None:
    settings = load_stack(stack)
    assert current_cost(settings).total == stack_cost(settings).total


def test_local_phase_0_by_hand() -> None:
    report = current_cost(load_stack("local"))
    # cx32 6.80 + primary IPv4 0.50 + (50 GB postgres + 10 GB redis) x 0.044
    assert report.total == pytest.approx(6.80 + 0.50 + 60 * 0.044)
    assert report.by_kind() == {"server": 6.80, "ipv4": 0.50, "volume": 2.64}


@pytest.mark.parametrize(("traffic", "expected"), [(0, 0.0), (20, 0.0), (20.5, 0.5), (25, 5.0), (120, 100.0)])
def test_traffic_over_the_included_20_tb(traffic: float, expected: float) -> None:
    catalog = load_catalog()
    assert catalog.included_traffic_tb == 20 and catalog.traffic_per_tb == 1.00
    report = current_cost(load_stack("phase2"), traffic_tb=traffic)
    line = next(line for line in report.lines if line.kind == "traffic")
    assert line.monthly == expected
    assert report.total == pytest.approx(stack_cost(load_stack("phase2")).total + expected)


def test_dedicated_entry_host_traffic_is_unmetered() -> None:
    settings = apply_changes(
        load_stack("phase1"),
        {
            "appHost.dedicated": {"publicAddress": "198.51.100.7", "privateAddress": "10.0.2.5"},
            "network.vswitchId": 4711,
        },
    )
    report = current_cost(settings, traffic_tb=90)
    line = next(line for line in report.lines if line.kind == "traffic")
    assert line.monthly == 0.0 and "unmetered" in line.detail
    assert any(line.detail.startswith("ex44") for line in report.lines)


def test_negative_traffic_is_refused() -> None:
    with pytest.raises(ValueError, match="0 TB or more"):
        current_cost(load_stack("local"), traffic_tb=-1)


@pytest.mark.parametrize("stack", STACKS)
def test_projection_prices_every_phase_with_the_program(stack: str) -> None:
    settings = load_stack(stack)
    rows = projection(settings)
    assert [r.phase for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        assert r.total == stack_cost(settings_for_phase(settings, r.phase)[0]).total
    current = next(r for r in rows if r.phase == settings.phase)
    assert current.delta_from_current == 0
    assert rows[4].servers > rows[0].servers


def test_projection_raises_sizes_to_each_phases_minimum() -> None:
    one_api = apply_changes(load_stack("phase2"), {"api.servers": 1})
    with pytest.raises(ConfigError, match="at least 2 API servers"):
        apply_changes(one_api, {"phase": 3})
    rows = {r.phase: r for r in projection(one_api)}
    assert rows[2].assumptions == []
    assert rows[3].assumptions == ["api.servers 1 → 2 (phase 3 minimum)"]
    assert rows[3].servers == 1 + 2 + 3 + 2  # lb, 2 api, 3 workers, db + redis


def test_phase_cost_delta() -> None:
    delta = phase_cost_delta(load_stack("phase1"), 2)
    assert delta["current_monthly"] == stack_cost(load_stack("phase1")).total
    assert delta["target_monthly"] == stack_cost(settings_for_phase(load_stack("phase1"), 2)[0]).total
    assert delta["delta_monthly"] == pytest.approx(delta["target_monthly"] - delta["current_monthly"])


def _hints(settings, metrics):  # type: ignore[no-untyped-def]
    return {(h.kind, h.target): h for h in optimize(settings, metrics)}


def test_optimize_downsizes_idle_and_upsizes_busy_hosts() -> None:
    settings = load_stack("phase1")  # app cx42, db ccx23, redis cx22
    metrics = Metrics(
        hosts={
            "app-01": HostUsage(cpu_percent=5, memory_percent=10),
            "db-01": HostUsage(cpu_percent=50, memory_percent=50),
            "redis-01": HostUsage(cpu_percent=95, memory_percent=40),
        }
    )
    hints = _hints(settings, metrics)
    down = hints[("downsize", "app-01")]
    assert down.config == {"appHost.serverType": "cx22"}  # 0.6 cores / 2.3 GB needed at 70 % target
    assert down.monthly_saving == pytest.approx(16.40 - 3.79)
    up = hints[("upsize", "redis-01")]
    assert up.config == {"serverTypes.redis": "cx32"}
    assert up.monthly_saving == pytest.approx(3.79 - 6.80)
    assert not any(target == "db-01" for _, target in hints)


def test_optimize_consolidates_small_fleets_onto_an_ex44() -> None:
    hints = _hints(load_stack("phase1"), Metrics())
    hint = hints[("consolidate", "fleet")]
    # cx42 16.40 + ccx23 24.49 + cx22 3.79 = 44.68 > EX44 44.00, 14 cores fit in 14
    assert hint.monthly_saving == pytest.approx(0.68)


def test_optimize_shrinks_an_idle_worker_pool() -> None:
    settings = load_stack("phase2")
    metrics = Metrics(
        queue_depth=0, hosts={f"worker-0{i}": HostUsage(cpu_percent=10, memory_percent=20) for i in (1, 2, 3)}
    )
    hint = _hints(settings, metrics)[("workers", "worker pool")]
    assert hint.config == {"workers.servers": 1}
    assert hint.monthly_saving == pytest.approx(2 * 48.49)
    busy = Metrics(queue_depth=40, hosts=metrics.hosts)
    assert ("workers", "worker pool") not in _hints(settings, busy)


def test_optimize_volume_and_budget() -> None:
    settings = apply_changes(load_stack("phase1"), {"monthlyBudget": 30})
    hints = _hints(settings, Metrics(db_size_gb=90))
    grow = hints[("volume", "db-01-postgres")]
    assert grow.config == {"volumes.postgresGb": 150}
    assert grow.monthly_saving == pytest.approx(-50 * 0.044)
    budget = hints[("budget", "phase1")]
    assert budget.monthly_saving == pytest.approx(30 - 50.02)
    small = _hints(load_stack("phase1"), Metrics(db_size_gb=3))
    assert "cannot shrink" in small[("info", "db-01-postgres")].message


def test_optimize_compares_the_lb_host_with_a_managed_lb11() -> None:
    hints = _hints(load_stack("phase3"), Metrics())  # lb-01 is a cx22
    info = hints[("info", "lb-01")]
    assert "cx22 + IPv4, 4.29" in info.message and "LB11 (5.39)" in info.message
    big_lb = apply_changes(load_stack("phase3"), {"serverTypes.lb": "cx32"})  # 6.80 + 0.50 > 5.39
    lb = _hints(big_lb, Metrics())[("loadbalancer", "lb-01")]
    assert lb.monthly_saving == pytest.approx(6.80 + 0.50 - 5.39)
    assert not any(target == "lb-01" for _, target in _hints(load_stack("phase2"), Metrics()))


def test_cli_cost_commands() -> None:
    current = runner.invoke(app, ["--stack", "phase2", "cost", "current", "--format", "json", "--traffic-tb", "25"])
    assert current.exit_code == 0, current.output
    data = json.loads(current.output)
    assert data["total"] == pytest.approx(stack_cost(load_stack("phase2")).total + 5)
    assert data["budget"] == 400 and data["over_budget"] is False
    text = runner.invoke(app, ["--stack", "phase2", "cost", "current"])
    assert "worker-03" in text.output and "ccx33" in text.output and "within budget" in text.output
    proj = json.loads(runner.invoke(app, ["--stack", "phase3", "cost", "projection", "--format", "json"]).output)
    assert [p["phase"] for p in proj["phases"]] == [0, 1, 2, 3, 4]
    assert proj["current_phase"] == 3


def test_cli_cost_check_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = tmp_path / "proj"
    project.mkdir()
    text = (project_dir() / "Pulumi.phase1.yaml").read_text()
    (project / "Pulumi.tight.yaml").write_text(text.replace("monthlyBudget: 150", "monthlyBudget: 20"))
    env = {"SELEXTRACT_PROJECT_DIR": str(project)}
    over = runner.invoke(app, ["--stack", "tight", "cost", "current", "--check-budget"], env=env)
    assert over.exit_code == 1
    assert "OVER BUDGET" in over.output
    assert runner.invoke(app, ["--stack", "tight", "cost", "current"], env=env).exit_code == 0


def test_cli_cost_optimize_from_metrics_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"hosts": {"app-01": {"cpu_percent": 4, "memory_percent": 9}}}))
    result = runner.invoke(app, ["--stack", "phase1", "cost", "optimize", "--metrics", str(metrics), "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    kinds = {(h["kind"], h["target"]) for h in data["hints"]}
    assert ("downsize", "app-01") in kinds
    assert data["possible_savings"] == pytest.approx(12.61 + 0.68)


def test_unknown_stack_is_a_usage_error() -> None:
    result = runner.invoke(app, ["--stack", "nope", "cost", "current"])
    assert result.exit_code == 2
    assert "no stack file Pulumi.nope.yaml" in result.output
