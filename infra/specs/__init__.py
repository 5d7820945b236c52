"""Container specs for a whole plan: the data the Pulumi service layer declares."""

from __future__ import annotations

from infra.config import Settings
from infra.specs.app import api_proxy_specs, api_specs, bucket_specs, worker_metrics_proxy_specs, worker_specs
from infra.specs.base import ContainerSpec
from infra.specs.context import SpecContext
from infra.specs.entry import entry_specs
from infra.specs.monitoring import monitoring_specs
from infra.specs.objectstore import objectstore_specs
from infra.specs.postgres import postgres_specs
from infra.specs.redis import redis_specs
from infra.topology import Plan

BUILDERS = (
    postgres_specs,
    redis_specs,
    objectstore_specs,
    bucket_specs,
    api_specs,
    api_proxy_specs,
    worker_specs,
    worker_metrics_proxy_specs,
    entry_specs,
    monitoring_specs,
)


def build_specs(plan: Plan, settings: Settings, version: str = "dev") -> tuple[ContainerSpec, ...]:
    ctx = SpecContext(plan, settings, version)
    specs = tuple(spec for builder in BUILDERS for spec in builder(ctx))
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise AssertionError(f"container names collide: {sorted(duplicates)}")
    return specs
