"""Monthly cost of a plan from the Hetzner price table (`infra/data/hetzner.yaml`).

Shared by the stack exports and the `selextract cost` commands, so both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.catalog import Catalog, load_catalog
from infra.config import Settings
from infra.topology import Plan, plan


@dataclass(frozen=True)
class CostLine:
    item: str
    kind: str  # server | volume | ipv4
    detail: str
    monthly: float


@dataclass(frozen=True)
class CostBreakdown:
    phase: int
    lines: tuple[CostLine, ...]
    currency: str

    @property
    def total(self) -> float:
        return round(sum(line.monthly for line in self.lines), 2)

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.kind] = round(out.get(line.kind, 0.0) + line.monthly, 2)
        return out


def hetzner_plan(settings: Settings) -> Plan:
    """The plan as it would run on Hetzner (what the local simulation would cost there)."""
    return plan(settings.model_copy(update={"target": "hetzner"}))


def plan_cost(p: Plan, catalog: Catalog | None = None) -> CostBreakdown:
    catalog = catalog or load_catalog()
    lines: list[CostLine] = []
    for host in p.hosts:
        if host.kind == "local":
            continue
        st = catalog.server_type(host.server_type)
        lines.append(CostLine(host.name, "server", f"{st.name} ({st.cores} cores, {st.memory_gb} GB)", st.price))
        if host.kind == "cloud" and host.is_entry:
            lines.append(CostLine(f"{host.name}-ipv4", "ipv4", "primary IPv4", catalog.primary_ipv4))
        for volume in host.volumes:
            lines.append(
                CostLine(
                    volume.name, "volume", f"{volume.size_gb} GB", round(volume.size_gb * catalog.volume_per_gb, 2)
                )
            )
    return CostBreakdown(p.phase, tuple(lines), catalog.currency)


def stack_cost(settings: Settings) -> CostBreakdown:
    return plan_cost(hetzner_plan(settings) if settings.target == "local" else plan(settings))
