"""Capacity planning: the deployment guide's `capacity-calculator.sh`, as a pure function.

    tasks/min       = daily / (24 x 60)
    peak tasks/min  = tasks/min x peak factor
    concurrent      = peak tasks/min x average task minutes
    workers         = ⌈concurrent / tasks per worker⌉ + 1        (4 tasks each, one spare)
    worker nodes    = ⌈workers / workers per node⌉ + 1           (4 workers each, one spare)
    DB pool         = workers x 5
    storage / month = daily x 100 KB x 30

Two deliberate departures from the shell script, both about rounding:
- it computes tasks/min with integer division, so anything under 1,440 tasks/day is
  0 tasks/min and e.g. 1,439 one-hour tasks a day come out as one worker; here the
  division is exact and only the final counts are rounded (up);
- its `(x / 4) + 1` truncates, which makes the "+1 buffer" a round-up in disguise;
  here the round-up is explicit and the +1 is a real spare.
Storage: the script multiplies by 0.1 and calls the result GB, while its comment says
"100KB per task"; 0.1 is MB. Both numbers are reported: the script's figure in MB and
the same in GB.

The phase is the deployment guide's capacity table by tasks per day (lower bound
inclusive): <1,000 all-in-one, 1,000-5,000 phase 1, 5,000-20,000 phase 2,
20,000-100,000 phase 3, 100,000+ phase 4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from infra.config import PHASE_NAMES

MINUTES_PER_DAY = 24 * 60
DB_CONNECTIONS_PER_WORKER = 5
KB_PER_TASK = 100
# (lower bound of tasks/day, phase, users, storage, servers) — the guide's table
CAPACITY_TABLE = (
    (0, 0, "1-100", "<100GB", "1 (all-in-one)"),
    (1_000, 1, "100-500", "100GB-500GB", "3 (api, db, redis)"),
    (5_000, 2, "500-2,000", "500GB-2TB", "6+ (api, db, redis, 3x workers)"),
    (20_000, 3, "2,000-10,000", "2TB-10TB", "10+ (lb, 3x api, db, redis, 4x workers)"),
    (100_000, 4, "10,000+", "10TB+", "15+ (+ MinIO cluster)"),
)


class CapacityInputError(ValueError):
    """Input that cannot describe a workload; the message names the argument."""


@dataclass(frozen=True)
class CapacityResult:
    daily_tasks: int
    avg_task_minutes: float
    peak_factor: float
    tasks_per_minute: float
    peak_tasks_per_minute: float
    concurrent_tasks: float
    workers: int
    worker_nodes: int
    db_connection_pool: int
    monthly_storage_mb: float
    monthly_storage_gb: float
    phase: int
    phase_name: str
    guide_users: str
    guide_storage: str
    guide_servers: str
    tasks_per_worker: int
    workers_per_node: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(name: str, raw: str | float | int, *, integer: bool = False) -> float:
    if isinstance(raw, str):
        text = raw.strip().replace("_", "")
        try:
            value = float(text)
        except ValueError:
            raise CapacityInputError(f"{name} must be a number, got {raw!r}") from None
    else:
        value = float(raw)
    if not math.isfinite(value):
        raise CapacityInputError(f"{name} must be a finite number, got {raw!r}")
    if integer and not value.is_integer():
        raise CapacityInputError(f"{name} must be a whole number of tasks, got {raw!r}")
    return value


def phase_for_daily_tasks(daily_tasks: float) -> int:
    phase = 0
    for lower, p, *_ in CAPACITY_TABLE:
        if daily_tasks >= lower:
            phase = p
    return phase


def calculate(
    daily_tasks: str | float | int,
    avg_task_minutes: str | float | int,
    peak_factor: str | float | int,
    *,
    tasks_per_worker: int = 4,
    workers_per_node: int = 4,
) -> CapacityResult:
    daily = _number("DAILY_TASKS", daily_tasks, integer=True)
    minutes = _number("AVG_MINUTES", avg_task_minutes)
    peak = _number("PEAK_FACTOR", peak_factor)
    if daily <= 0:
        raise CapacityInputError(f"DAILY_TASKS must be at least 1, got {daily_tasks!r}")
    if minutes <= 0:
        raise CapacityInputError(f"AVG_MINUTES must be greater than 0, got {avg_task_minutes!r}")
    if minutes > MINUTES_PER_DAY:
        raise CapacityInputError(f"AVG_MINUTES must be at most {MINUTES_PER_DAY} (a day), got {avg_task_minutes!r}")
    if peak < 1:
        raise CapacityInputError(
            f"PEAK_FACTOR is peak load over average load and must be at least 1.0, got {peak_factor!r}"
        )
    if tasks_per_worker < 1 or workers_per_node < 1:
        raise CapacityInputError("tasks per worker and workers per node must be at least 1")

    per_minute = daily / MINUTES_PER_DAY
    peak_per_minute = per_minute * peak
    concurrent = peak_per_minute * minutes
    # round(…, 9) first: 0.1 * 3 * 40 must not become 12.000000000000002 and round up
    workers = math.ceil(round(concurrent / tasks_per_worker, 9)) + 1
    nodes = math.ceil(workers / workers_per_node) + 1
    storage_mb = daily * KB_PER_TASK / 1000 * 30
    phase = phase_for_daily_tasks(daily)
    row = next(r for r in CAPACITY_TABLE if r[1] == phase)
    return CapacityResult(
        daily_tasks=int(daily),
        avg_task_minutes=minutes,
        peak_factor=peak,
        tasks_per_minute=round(per_minute, 4),
        peak_tasks_per_minute=round(peak_per_minute, 4),
        concurrent_tasks=round(concurrent, 2),
        workers=workers,
        worker_nodes=nodes,
        db_connection_pool=workers * DB_CONNECTIONS_PER_WORKER,
        monthly_storage_mb=round(storage_mb, 2),
        monthly_storage_gb=round(storage_mb / 1000, 3),
        phase=phase,
        phase_name=PHASE_NAMES[phase],
        guide_users=row[2],
        guide_storage=row[3],
        guide_servers=row[4],
        tasks_per_worker=tasks_per_worker,
        workers_per_node=workers_per_node,
    )
