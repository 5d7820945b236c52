"""`selextract workers scale N`: the worker pool as stack config, applied with `pulumi up`.

Workers are containers the stack declares, so scaling them by hand (`docker run` more)
would drift from the Pulumi state and vanish at the next `up`. Instead N becomes
config: up to phase 1 the workers live on the app host (`workers.containersPerServer = N`);
from phase 2 on they fill worker servers of `workers.containersPerServer` each
(`workers.servers = ⌈N / per server⌉`, or `--per-server` to change that too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from infra.config import Settings
from infra.cost import plan_cost
from ops.costs import priced_plan
from ops.stack import apply_changes

MAX_PER_SERVER = 64


@dataclass
class ScalePlan:
    requested: int
    containers: int  # what the stack will run (≥ requested when servers round up)
    changes: dict[str, Any]
    cost_now: float
    cost_after: float
    notes: list[str] = field(default_factory=list)

    @property
    def cost_delta(self) -> float:
        return round(self.cost_after - self.cost_now, 2)


def plan_scale(settings: Settings, workers: int, *, per_server: int | None = None) -> ScalePlan:
    if workers < 1:
        raise ValueError(f"N must be at least 1 worker container, got {workers}")
    if per_server is not None and not 1 <= per_server <= MAX_PER_SERVER:
        raise ValueError(f"--per-server must be between 1 and {MAX_PER_SERVER}, got {per_server}")
    notes: list[str] = []
    if settings.phase <= 1:
        if workers > MAX_PER_SERVER:
            raise ValueError(f"phase {settings.phase} runs workers on the app host: at most {MAX_PER_SERVER}")
        if per_server is not None and per_server != workers:
            notes.append(f"phase {settings.phase} has one worker host: --per-server ignored")
        changes: dict[str, Any] = {"workers.containersPerServer": workers}
        containers = workers
    else:
        per = per_server or settings.workers.containers_per_server
        servers = math.ceil(workers / per)
        containers = servers * per
        changes = {"workers.servers": servers}
        if per != settings.workers.containers_per_server:
            changes["workers.containersPerServer"] = per
        if containers != workers:
            notes.append(f"{servers} servers x {per} containers = {containers} (rounded up from {workers})")
    changes = {k: v for k, v in changes.items() if _current(settings, k) != v}
    after = apply_changes(settings, changes)
    return ScalePlan(
        requested=workers,
        containers=containers,
        changes=changes,
        cost_now=plan_cost(priced_plan(settings)).total,
        cost_after=plan_cost(priced_plan(after)).total,
        notes=notes,
    )


def _current(settings: Settings, key: str) -> Any:
    return {
        "workers.servers": settings.workers.servers,
        "workers.containersPerServer": settings.workers.containers_per_server,
    }[key]
