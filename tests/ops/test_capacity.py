"""The capacity calculator: the guide's formula, its rounding decisions, the phase table."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ops.capacity import CapacityInputError, calculate, phase_for_daily_tasks
from ops.cli import app

runner = CliRunner()


def test_the_guides_example() -> None:
    r = calculate(10000, 5, 3.0)
    assert r.tasks_per_minute == pytest.approx(6.9444, abs=1e-4)
    assert r.peak_tasks_per_minute == pytest.approx(20.8333, abs=1e-4)
    assert r.concurrent_tasks == pytest.approx(104.17, abs=0.01)
    assert r.workers == 28  # ceil(104.17 / 4) = 27, + 1 spare
    assert r.worker_nodes == 8  # ceil(28 / 4) = 7, + 1 spare
    assert r.db_connection_pool == 140  # 5 per worker
    assert r.monthly_storage_mb == 30000  # the script's "daily x 0.1 x 30" is MB (100 KB per task)
    assert r.monthly_storage_gb == 30
    assert r.phase == 2 and r.phase_name == "dedicated worker pool"


def test_small_loads_are_not_rounded_to_zero() -> None:
    # The shell script's integer division makes 1,439 tasks/day 0 tasks/min: 1 worker for
    # an hour-long task every minute. Exact division keeps the ~60 concurrent tasks.
    r = calculate(1439, 60, 1.0)
    assert r.concurrent_tasks == pytest.approx(59.96, abs=0.01)
    assert r.workers == 16
    assert r.phase == 1


def test_minimum_workload() -> None:
    r = calculate(1, 1, 1)
    assert r.workers == 2 and r.worker_nodes == 2 and r.db_connection_pool == 10
    assert r.phase == 0


def test_exact_multiples_do_not_round_up_from_float_noise() -> None:
    # 144/day = 0.1/min; x3 x40 min = 12 concurrent (0.1*3*40 is 12.000000000000002 in floats)
    r = calculate(144, 40, 3)
    assert r.workers == 12 // 4 + 1
    r = calculate(5760, 4, 1)  # 4/min x 4 min = 16 concurrent
    assert r.workers == 5 and r.worker_nodes == 3


def test_per_worker_and_per_node_are_parameters() -> None:
    r = calculate(10000, 5, 3.0, tasks_per_worker=8, workers_per_node=2)
    assert r.workers == 15  # ceil(104.17 / 8) + 1
    assert r.worker_nodes == 9  # ceil(15 / 2) + 1


@pytest.mark.parametrize(
    ("daily", "phase"),
    [(1, 0), (999, 0), (1000, 1), (4999, 1), (5000, 2), (19999, 2), (20000, 3), (99999, 3), (100000, 4), (10**7, 4)],
)
def test_phase_table_edges(daily: int, phase: int) -> None:
    assert phase_for_daily_tasks(daily) == phase
    assert calculate(daily, 1, 1).phase == phase


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-5", "5", "3"), "DAILY_TASKS must be at least 1"),
        (("0", "5", "3"), "DAILY_TASKS must be at least 1"),
        (("abc", "5", "3"), "DAILY_TASKS must be a number, got 'abc'"),
        (("10.5", "5", "3"), "DAILY_TASKS must be a whole number"),
        (("nan", "5", "3"), "DAILY_TASKS must be a finite number"),
        (("inf", "5", "3"), "DAILY_TASKS must be a finite number"),
        (("100", "0", "3"), "AVG_MINUTES must be greater than 0"),
        (("100", "-2", "3"), "AVG_MINUTES must be greater than 0"),
        (("100", "1441", "3"), "AVG_MINUTES must be at most 1440"),
        (("100", "five", "3"), "AVG_MINUTES must be a number"),
        (("100", "5", "0.5"), "PEAK_FACTOR is peak load over average load and must be at least 1.0"),
        (("100", "5", "-3"), "PEAK_FACTOR is peak load over average load"),
        (("100", "5", "x"), "PEAK_FACTOR must be a number"),
    ],
)
def test_nonsense_input_is_rejected(args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(CapacityInputError, match=message.replace(".", r"\.")):
        calculate(*args)
    result = runner.invoke(app, ["capacity", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_text_and_json() -> None:
    text = runner.invoke(app, ["capacity", "10000", "5", "3.0"])
    assert text.exit_code == 0, text.output
    assert "Recommended Workers: 28" in text.output
    assert "Recommended Worker Nodes: 8" in text.output
    assert "Recommended DB Connection Pool: 140" in text.output
    assert "Phase: 2 (dedicated worker pool)" in text.output
    data = json.loads(runner.invoke(app, ["capacity", "10000", "5", "3.0", "--format", "json"]).output)
    assert data["workers"] == 28 and data["phase"] == 2
    # the local stack in phase 2: 2 worker servers x 2 containers x concurrency 4 = 16 slots
    assert data["stack_plan"]["worker_slots"] == 16
    assert data["stack_plan"]["enough"] is False


def test_cli_wrong_argument_count() -> None:
    result = runner.invoke(app, ["capacity", "10000", "5"])
    assert result.exit_code == 2
    assert "PEAK_FACTOR" in result.output
