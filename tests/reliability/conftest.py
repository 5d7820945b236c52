"""Session plumbing of the reliability tests:

- `background`: the phase-4 stack is deployed, and its 500-task batch started and its
  worker killed, in a background thread while the phase-1 module waits for its own killed
  worker's orphaned tasks (leases lapse after ~2 min), so the two modules together stay
  within the time budget; run alone, each module does all of that itself;
- the report (fault or input → what happened → data lost) printed at the end of the
  session; SELEXTRACT_RELIABILITY_REPORT=<path> also writes it there as Markdown.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import scenarios
from tests.reliability.relstack import REPORT, Deployed, deploy_stack, destroy, report_table

SELECTED: set[int] = set()  # phases whose module is part of this session


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for phase in (1, 4):
            if item.module is not None and item.module.__name__.endswith(f"test_phase{phase}_faults"):
                SELECTED.add(phase)


class Background:
    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="rel-deploy")
        self.futures: dict[int, Future[Any]] = {}
        self.claimed: set[int] = set()

    def start(self, phase: int, then: Callable[[Any], Any] | None = None) -> None:
        """Begin deploying rel-p<phase> now (and run `then` on it), if its module runs
        later in this session."""
        if phase in SELECTED and phase not in self.futures:
            workdir = self.factory.mktemp(f"rel-p{phase}")
            self.futures[phase] = self.pool.submit(deploy_stack, phase, workdir, then)

    def get(self, phase: int) -> Any:
        """(deployed, seconds, error, then's result) of rel-p<phase>, deploying it now if
        it was not started."""
        if phase not in self.futures:
            self.futures[phase] = self.pool.submit(deploy_stack, phase, self.factory.mktemp(f"rel-p{phase}"))
        self.claimed.add(phase)
        return self.futures[phase].result(timeout=1200)

    def close(self) -> None:
        """Destroy what was deployed for a module that then never ran (e.g. `-x`)."""
        self.pool.shutdown(wait=True)
        for phase, future in self.futures.items():
            deployed = future.result()[0]
            if phase not in self.claimed and deployed is not None:
                destroy(deployed)


@pytest.fixture(scope="session")
def background(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bg = Background(tmp_path_factory)
    yield bg
    bg.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    table = report_table()
    terminalreporter.section("reliability report")
    terminalreporter.write_line(table)
    target = os.environ.get("SELEXTRACT_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(table + "\n")


# --- Postgres and Redis stopped under load: each module provides `deployed` -----------------


@pytest.fixture(scope="module")
def outage_started(deployed: Deployed) -> scenarios.OutageRun:
    return scenarios.start_outage(deployed)


@pytest.fixture(scope="module")
def outage(deployed: Deployed, outage_started: scenarios.OutageRun) -> scenarios.OutageRun:
    """The outage once every task accepted during it has finished (the tests up to here run
    while the reaper queues what was accepted while Redis was down)."""
    return scenarios.finish_outage(deployed, outage_started)
