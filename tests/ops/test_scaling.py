"""The scaling decision: thresholds of both guides, verdict edges, recommendation rules."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ops.cli import app
from ops.metrics import Metrics
from ops.scaling import analyze, load_thresholds, matrix_column, thresholds_table, verdict

runner = CliRunner()


def test_thresholds_are_the_guides_numbers() -> None:
    t = load_thresholds()
    matrix = {r.metric: r.thresholds for r in t.matrix}
    assert matrix == {
        "cpu_percent_7d": (70, 75, 80, 85),
        "memory_percent_7d": (75, 85, 85, 90),
        "active_users": (100, 500, 2000, 10000),
        "db_size_gb": (20, 50, 200, 1000),
        "monthly_revenue_eur": (500, 2000, 5000, 15000),
    }
    guide = {(g.metric, g.threshold, g.target_phase) for g in t.triggers}
    assert guide == {
        ("db_cpu_percent", 80, 1),
        ("db_connections_percent", 80, 1),
        ("queue_depth", 100, 2),
        ("api_p95_seconds", 2, 3),
        ("storage_percent", 80, 4),
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "no data"),
        (0, "ok"),
        (62.99, "ok"),
        (63, "approaching"),  # 90 % of 70
        (70, "approaching"),  # the guides say "> 70%": equal is not over
        (70.01, "triggered"),
        (1000, "triggered"),
    ],
)
def test_verdict_edges(value: float | None, expected: str) -> None:
    assert verdict(value, 70, 0.9) == expected


@pytest.mark.parametrize(("phase", "column"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3)])
def test_matrix_column_per_phase(phase: int, column: int) -> None:
    assert matrix_column(phase) == column


def test_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phase 5"):
        analyze(Metrics(), 5)


def _by_metric(analysis, source="matrix"):  # type: ignore[no-untyped-def]
    return {t.metric: t for t in analysis.triggers if t.source == source}


@pytest.mark.parametrize(
    ("phase", "cpu_threshold", "users_threshold"), [(0, 70, 100), (1, 75, 500), (2, 80, 2000), (3, 85, 10000)]
)
def test_each_phase_reads_its_column(phase: int, cpu_threshold: float, users_threshold: float) -> None:
    a = analyze(Metrics(cpu_percent_7d=cpu_threshold, active_users=users_threshold + 1), phase)
    rows = _by_metric(a)
    assert rows["cpu_percent_7d"].threshold == cpu_threshold
    assert rows["cpu_percent_7d"].verdict == "approaching"  # equal: not over
    assert rows["active_users"].verdict == "triggered"
    assert rows["active_users"].target_phase == phase + 1


def test_two_matrix_rows_recommend_the_next_phase() -> None:
    a = analyze(Metrics(cpu_percent_7d=76, memory_percent_7d=86, active_users=10), 1)
    assert a.recommendation.action == "scale"
    assert a.recommendation.target_phase == 2
    assert len(a.recommendation.reasons) == 2


def test_one_matrix_row_means_prepare() -> None:
    a = analyze(Metrics(cpu_percent_7d=76, memory_percent_7d=10), 1)
    assert a.recommendation.action == "prepare"
    assert a.recommendation.target_phase == 2


def test_approaching_means_prepare_and_quiet_means_stay() -> None:
    assert analyze(Metrics(memory_percent_7d=80), 1).recommendation.action == "prepare"  # 80 >= 0.9*85
    stay = analyze(Metrics(cpu_percent_7d=10, memory_percent_7d=10, active_users=3, queue_depth=0), 1)
    assert stay.recommendation.action == "stay"
    assert stay.recommendation.target_phase == 1


def test_no_data_never_triggers() -> None:
    a = analyze(Metrics(), 0)
    assert {t.verdict for t in a.triggers} == {"no data"}
    assert a.recommendation.action == "stay"


def test_queue_depth_over_100_asks_for_worker_nodes() -> None:
    a = analyze(Metrics(queue_depth=101), 1)
    guide = _by_metric(a, "guide")
    assert guide["queue_depth"].verdict == "triggered"
    assert a.recommendation.action == "scale"
    assert a.recommendation.target_phase == 2
    assert "worker" in a.recommendation.reasons[0]
    assert analyze(Metrics(queue_depth=100), 1).recommendation.action == "prepare"  # 100 is not > 100


def test_a_trigger_for_a_later_phase_still_moves_one_phase() -> None:
    a = analyze(Metrics(api_p95_seconds=2.5), 0)
    assert a.recommendation.action == "scale"
    assert a.recommendation.target_phase == 1
    assert "points at phase 3" in a.recommendation.reasons[0]


def test_a_trigger_of_a_reached_phase_asks_to_grow_within_it() -> None:
    a = analyze(Metrics(queue_depth=500), 3)
    assert a.recommendation.action == "scale"
    assert a.recommendation.target_phase == 3
    assert "workers.servers" in a.recommendation.within_phase[0]
    assert "grow within phase 3" in a.recommendation.summary


def test_db_cpu_falls_back_to_host_cpu() -> None:
    a = analyze(Metrics(cpu_percent_7d=81), 0)
    guide = _by_metric(a, "guide")
    assert guide["db_cpu_percent"].value == 81
    assert guide["db_cpu_percent"].measured_as == "cpu_percent_7d"
    assert a.recommendation.action == "scale"
    direct = _by_metric(analyze(Metrics(cpu_percent_7d=81, db_cpu_percent=20), 0), "guide")
    assert direct["db_cpu_percent"].value == 20
    assert direct["db_cpu_percent"].measured_as is None


def test_phase_4_is_the_top_and_grows_within() -> None:
    a = analyze(Metrics(cpu_percent_7d=86, memory_percent_7d=91, storage_percent=85), 4)
    rec = a.recommendation
    assert rec.action == "scale"
    assert rec.target_phase == 4
    assert any("object-store" in w for w in rec.within_phase)
    assert analyze(Metrics(cpu_percent_7d=50), 4).recommendation.action == "stay"


def test_thresholds_table_lists_every_transition() -> None:
    table = thresholds_table()
    assert table["transitions"] == ["0→1", "1→2", "2→3", "3→4"]
    cpu = next(r for r in table["matrix"] if r["metric"] == "cpu_percent_7d")
    assert cpu["thresholds"] == {"0→1": 70, "1→2": 75, "2→3": 80, "3→4": 85}


def test_cli_analyze_json_with_cost_delta(tmp_path) -> None:  # type: ignore[no-untyped-def]
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"cpu_percent_7d": 72.5, "active_users": 120, "celery_queue_length": 12}))
    result = runner.invoke(
        app,
        [
            "--stack",
            "local",
            "scaling",
            "analyze",
            "--current-phase",
            "0",
            "--format",
            "json",
            "--metrics",
            str(metrics),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rec = data["recommendation"]
    assert rec["action"] == "scale" and rec["target_phase"] == 1
    # local stack priced on Hetzner: phase 0 = cx32 + IPv4 + 60 GB volumes; phase 1 adds db-01 (cx32) and
    # redis-01 (cx22) and moves the volumes onto them
    assert rec["cost"]["current_monthly"] == 9.94
    assert rec["cost"]["target_monthly"] == 20.53
    assert rec["cost"]["delta_monthly"] == 10.59
    queue = next(t for t in data["triggers"] if t["metric"] == "queue_depth")
    assert queue["value"] == 12 and queue["threshold"] == 100 and queue["verdict"] == "ok"


def test_cli_analyze_exit_code_and_report_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    metrics = tmp_path / "m.yaml"
    metrics.write_text("queue_depth: 150\n")
    report = tmp_path / "report.txt"
    result = runner.invoke(
        app, ["scaling", "analyze", "-p", "1", "--metrics", str(metrics), "--exit-code", "--output", str(report)]
    )
    assert result.exit_code == 1
    assert "SCALE" in result.output
    assert "Task queue depth" in report.read_text() and "150 tasks" in report.read_text()
    calm = tmp_path / "calm.yaml"
    calm.write_text("queue_depth: 3\n")
    assert runner.invoke(app, ["scaling", "analyze", "-p", "1", "--metrics", str(calm), "--exit-code"]).exit_code == 0


def test_cli_rejects_bad_metrics_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cpu_percent_7d": 140, "bogus": 1}))
    result = runner.invoke(app, ["scaling", "analyze", "--metrics", str(bad)])
    assert result.exit_code == 2
    assert "cpu_percent_7d" in result.output and "bogus: unknown metric" in result.output


def test_cli_thresholds_text_and_json() -> None:
    text = runner.invoke(app, ["scaling", "thresholds"])
    assert text.exit_code == 0
    assert "10,000 users" in text.output and "> 100 tasks" in text.output
    data = json.loads(runner.invoke(app, ["scaling", "thresholds", "--format", "json"]).output)
    assert {g["metric"] for g in data["triggers"]} >= {"queue_depth", "api_p95_seconds", "storage_percent"}
