"""`selextract cost current|projection|optimize`: monthly cost of a stack from its plan and
the Hetzner price table (`infra/data/hetzner.yaml` through `infra.cost`), a projection
across phases, and right-sizing hints from utilisation.

Traffic: Hetzner cloud servers include `included_traffic_tb` of outgoing traffic each and
charge `traffic_per_tb` beyond it. All public egress of Selextract leaves through the
entry host (nginx or the HAProxy LB), so overage is priced on that host alone; a
dedicated (Robot) entry host is unmetered.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from infra.catalog import Catalog, ServerType, load_catalog
from infra.config import PHASE_NAMES, PHASES, Settings
from infra.cost import CostBreakdown, CostLine, hetzner_plan, plan_cost
from infra.topology import Plan, Role
from ops.metrics import Metrics
from ops.stack import settings_for_phase

# Right-sizing bands (percent, 7-day averages)
LOW_CPU, LOW_MEMORY = 20.0, 30.0
HIGH_CPU, HIGH_MEMORY = 80.0, 85.0
TARGET_UTILISATION = 0.7  # a smaller type must still leave 30 % headroom


@dataclass(frozen=True)
class CostReport:
    stack: str
    phase: int
    currency: str
    lines: tuple[CostLine, ...]
    budget: float | None
    price_list: str

    @property
    def total(self) -> float:
        return round(sum(line.monthly for line in self.lines), 2)

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.kind] = round(out.get(line.kind, 0.0) + line.monthly, 2)
        return out

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.total > self.budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "phase": self.phase,
            "phase_name": PHASE_NAMES[self.phase],
            "currency": self.currency,
            "price_list": self.price_list,
            "lines": [asdict(line) for line in self.lines],
            "by_kind": self.by_kind(),
            "total": self.total,
            "budget": self.budget,
            "over_budget": self.over_budget,
        }


def priced_plan(settings: Settings) -> Plan:
    """The plan as billed: a local simulation is priced as if it ran on Hetzner."""
    from infra.topology import plan

    return hetzner_plan(settings) if settings.target == "local" else plan(settings)


def traffic_line(p: Plan, traffic_tb: float, catalog: Catalog) -> CostLine:
    entry = p.host(p.entry_host)
    if entry.kind == "dedicated":
        return CostLine("traffic", "traffic", f"{traffic_tb:g} TB via {entry.name} (dedicated: unmetered)", 0.0)
    over = max(0.0, traffic_tb - catalog.included_traffic_tb)
    detail = f"{traffic_tb:g} TB out via {entry.name}, {catalog.included_traffic_tb:g} TB included"
    return CostLine("traffic", "traffic", detail, round(over * catalog.traffic_per_tb, 2))


def current_cost(settings: Settings, *, traffic_tb: float | None = None, catalog: Catalog | None = None) -> CostReport:
    catalog = catalog or load_catalog()
    p = priced_plan(settings)
    breakdown = plan_cost(p, catalog)
    lines = list(breakdown.lines)
    if traffic_tb is not None:
        if traffic_tb < 0:
            raise ValueError("traffic must be 0 TB or more")
        lines.append(traffic_line(p, traffic_tb, catalog))
    return CostReport(
        stack=settings.stack,
        phase=settings.phase,
        currency=breakdown.currency,
        lines=tuple(lines),
        budget=settings.monthly_budget,
        price_list=catalog.as_of,
    )


@dataclass(frozen=True)
class PhaseCost:
    phase: int
    name: str
    total: float
    by_kind: dict[str, float]
    servers: int
    worker_slots: int
    delta_from_current: float
    assumptions: list[str]
    over_budget: bool


def projection(settings: Settings, catalog: Catalog | None = None) -> list[PhaseCost]:
    """The stack's sizes priced in every phase (adjusted to each phase's minimums)."""
    catalog = catalog or load_catalog()
    current = plan_cost(priced_plan(settings), catalog).total
    out = []
    for phase in PHASES:
        moved, notes = settings_for_phase(settings, phase)
        p = priced_plan(moved)
        cost: CostBreakdown = plan_cost(p, catalog)
        out.append(
            PhaseCost(
                phase=phase,
                name=PHASE_NAMES[phase],
                total=cost.total,
                by_kind=cost.by_kind(),
                servers=len(p.hosts),
                worker_slots=p.worker_containers * p.worker_concurrency,
                delta_from_current=round(cost.total - current, 2),
                assumptions=notes,
                over_budget=settings.monthly_budget is not None and cost.total > settings.monthly_budget,
            )
        )
    return out


def phase_cost_delta(settings: Settings, target_phase: int) -> dict[str, Any]:
    """Monthly cost now and in `target_phase`, for the scaling recommendation."""
    catalog = load_catalog()
    now = plan_cost(priced_plan(settings), catalog).total
    moved, notes = settings_for_phase(settings, target_phase)
    then = plan_cost(priced_plan(moved), catalog).total
    return {
        "currency": catalog.currency,
        "current_monthly": now,
        "target_monthly": then,
        "delta_monthly": round(then - now, 2),
        "assumptions": notes,
    }


@dataclass(frozen=True)
class Hint:
    kind: Literal["downsize", "upsize", "workers", "consolidate", "loadbalancer", "budget", "volume", "info"]
    target: str
    message: str
    monthly_saving: float = 0.0  # negative: costs more
    config: dict[str, Any] = field(default_factory=dict)  # the stack config change it means


def _family(name: str) -> str:
    match = re.match(r"[a-z]+", name)
    return match.group(0) if match else name


def _family_types(st: ServerType, catalog: Catalog) -> list[ServerType]:
    return sorted(
        (t for t in catalog.server_types.values() if t.kind == st.kind and _family(t.name) == _family(st.name)),
        key=lambda t: t.price,
    )


def _config_key(host: str, roles: tuple[Role, ...]) -> str:
    if host == "app-01" or (roles == (Role.API,) and host.startswith("api-")):
        return "appHost.serverType" if host == "app-01" else "serverTypes.api"
    role_keys = {
        Role.POSTGRES: "serverTypes.postgres",
        Role.REDIS: "serverTypes.redis",
        Role.WORKER: "serverTypes.worker",
        Role.LB: "serverTypes.lb",
        Role.OBJECT_STORE: "serverTypes.objectStore",
    }
    for role in roles:
        if role in role_keys:
            return role_keys[role]
    return "serverTypes"


def optimize(settings: Settings, metrics: Metrics, catalog: Catalog | None = None) -> list[Hint]:
    catalog = catalog or load_catalog()
    p = priced_plan(settings)
    report = current_cost(settings, catalog=catalog)
    hints: list[Hint] = []

    for host in p.hosts:
        if host.kind != "cloud":
            continue
        usage = metrics.hosts.get(host.name)
        if usage is None or usage.cpu_percent is None or usage.memory_percent is None:
            continue
        st = catalog.server_type(host.server_type)
        family = _family_types(st, catalog)
        key = _config_key(host.name, host.roles)
        if usage.cpu_percent < LOW_CPU and usage.memory_percent < LOW_MEMORY:
            need_cores = st.cores * usage.cpu_percent / 100 / TARGET_UTILISATION
            need_mem = st.memory_gb * usage.memory_percent / 100 / TARGET_UTILISATION
            smaller = [t for t in family if t.price < st.price and t.cores >= need_cores and t.memory_gb >= need_mem]
            if smaller:
                best = smaller[0]
                hints.append(
                    Hint(
                        "downsize",
                        host.name,
                        f"{host.name} ({st.name}) averages {usage.cpu_percent:.0f}% CPU, {usage.memory_percent:.0f}% "
                        f"memory: {best.name} ({best.cores} cores, {best.memory_gb} GB) is enough",
                        round(st.price - best.price, 2),
                        {key: best.name},
                    )
                )
        elif usage.cpu_percent > HIGH_CPU or usage.memory_percent > HIGH_MEMORY:
            bigger = [t for t in family if t.price > st.price]
            if bigger:
                up = bigger[0]
                hints.append(
                    Hint(
                        "upsize",
                        host.name,
                        f"{host.name} ({st.name}) averages {usage.cpu_percent:.0f}% CPU, {usage.memory_percent:.0f}% "
                        f"memory: move to {up.name} ({up.cores} cores, {up.memory_gb} GB)",
                        round(st.price - up.price, 2),
                        {key: up.name},
                    )
                )

    workers = p.hosts_with(Role.WORKER)
    if p.phase >= 2 and len(workers) > 1 and metrics.queue_depth is not None and metrics.queue_depth == 0:
        cpus = [metrics.hosts[h.name].cpu_percent for h in workers if h.name in metrics.hosts]
        cpus = [c for c in cpus if c is not None]
        if cpus and len(cpus) == len(workers) and sum(cpus) / len(cpus) < LOW_CPU:
            avg = sum(cpus) / len(cpus)
            keep = max(1, math.ceil(len(workers) * avg / 100 / TARGET_UTILISATION))
            price = catalog.server_type(workers[0].server_type).price
            hints.append(
                Hint(
                    "workers",
                    "worker pool",
                    f"{len(workers)} worker servers average {avg:.0f}% CPU with an empty queue: {keep} would do",
                    round((len(workers) - keep) * price, 2),
                    {"workers.servers": keep},
                )
            )

    ex44 = catalog.server_types.get("ex44")
    cloud_servers = [h for h in p.hosts if h.kind == "cloud"]
    if ex44 and p.phase <= 1 and cloud_servers:
        server_cost = sum(catalog.server_type(h.server_type).price for h in cloud_servers)
        cores = sum(catalog.server_type(h.server_type).cores for h in cloud_servers)
        memory = sum(catalog.server_type(h.server_type).memory_gb for h in cloud_servers)
        if server_cost > ex44.price and cores <= ex44.cores and memory <= ex44.memory_gb:
            hints.append(
                Hint(
                    "consolidate",
                    "fleet",
                    f"{len(cloud_servers)} cloud servers ({cores} cores, {memory} GB) cost {server_cost:.2f}: one "
                    f"dedicated EX44 ({ex44.cores} cores, {ex44.memory_gb} GB) costs {ex44.price:.2f}; phase 0 on "
                    "it (appHost.dedicated) is cheaper unless you need the database on its own host",
                    round(server_cost - ex44.price, 2),
                )
            )

    for lb in p.hosts_with(Role.LB):
        if lb.kind != "cloud":
            continue
        own = catalog.server_type(lb.server_type).price + catalog.primary_ipv4
        managed = catalog.load_balancer_lb11
        if managed < own:
            hints.append(
                Hint(
                    "loadbalancer",
                    lb.name,
                    f"a Hetzner LB11 ({managed:.2f}) costs less than {lb.name} ({lb.server_type} + IPv4, {own:.2f}); "
                    "it would not run the TLS termination and Prometheus that lb-01 carries",
                    round(own - managed, 2),
                )
            )
        else:
            hints.append(
                Hint(
                    "info",
                    lb.name,
                    f"HAProxy on {lb.name} ({lb.server_type} + IPv4, {own:.2f}) is cheaper than a Hetzner LB11 "
                    f"({managed:.2f}) and also carries TLS and monitoring",
                )
            )

    if metrics.db_size_gb is not None:
        for volume in (v for h in p.hosts for v in h.volumes if v.role == Role.POSTGRES):
            used = metrics.db_size_gb / volume.size_gb * 100
            if used > 80:
                grow = math.ceil(metrics.db_size_gb / 0.6)
                hints.append(
                    Hint(
                        "volume",
                        volume.name,
                        f"database {metrics.db_size_gb:g} GB fills {used:.0f}% of the {volume.size_gb} GB volume: "
                        f"grow it to {grow} GB",
                        round(-(grow - volume.size_gb) * catalog.volume_per_gb, 2),
                        {"volumes.postgresGb": grow},
                    )
                )
            elif used < 20 and volume.size_gb > 10:
                hints.append(
                    Hint(
                        "info",
                        volume.name,
                        f"database {metrics.db_size_gb:g} GB uses {used:.0f}% of the {volume.size_gb} GB volume; "
                        "Hetzner volumes cannot shrink, so size the next one smaller",
                    )
                )

    if report.over_budget and report.budget is not None:
        hints.append(
            Hint(
                "budget",
                settings.stack,
                f"monthly cost {report.total:.2f} exceeds monthlyBudget {report.budget:.2f} "
                f"by {report.total - report.budget:.2f}",
                round(report.budget - report.total, 2),
            )
        )
    hints.append(
        Hint(
            "info",
            "pricing",
            "Hetzner Cloud has no reserved or spot instances: the levers are server types, counts, "
            "and dedicated (Robot) servers",
        )
    )
    return hints
