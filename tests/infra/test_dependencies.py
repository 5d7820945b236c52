"""Every `depends_on` a container spec declares becomes a real Pulumi dependency, or the
program stops naming the container it could not find (a dropped dependency lets the entry
start before the API containers it proxies, or the buckets before the store has the app's
key)."""

from __future__ import annotations

import pulumi
import pytest

from infra.config import load_stack_file
from infra.services.base import Declared, UnresolvedDependency, dependencies
from infra.specs import build_specs
from infra.specs.base import ContainerSpec
from infra.topology import Role, plan
from tests.infra.pulumi_harness import ROOT, run_program

STACKS = sorted(p.name for p in ROOT.glob("Pulumi.*.yaml"))


class _Stub(pulumi.Resource):
    """Stands in for a declared container: `dependencies` only looks it up by name."""

    def __init__(self) -> None:  # no registration: nothing here talks to an engine
        pass


def test_an_unknown_dependency_is_named() -> None:
    known = _Stub()
    declared = Declared(containers={"s-db-01-postgres-1": known})
    spec = ContainerSpec(
        name="s-app-01-entry-1",
        host="app-01",
        role=Role.ENTRY,
        image="nginx",
        depends_on=("s-db-01-postgres-1", "s-app-01-api"),
    )
    with pytest.raises(UnresolvedDependency) as caught:
        dependencies(spec, declared)
    message = str(caught.value)
    assert "s-app-01-api" in message and "s-app-01-entry-1" in message
    assert "s-db-01-postgres-1" not in message.split("depends on", 1)[1]


def test_known_dependencies_resolve_in_order() -> None:
    a, b = _Stub(), _Stub()
    declared = Declared(containers={"a": a, "b": b})
    spec = ContainerSpec(name="c", host="h", role=Role.API, image="x", depends_on=("b", "a"))
    assert dependencies(spec, declared) == [b, a]


@pytest.mark.parametrize(
    ("stack_file", "extra"),
    [(s, {}) for s in STACKS] + [("Pulumi.local.yaml", {"selextract:phase": str(p)}) for p in (2, 3, 4)],
)
def test_every_stack_declares_every_dependency(stack_file: str, extra: dict[str, str]) -> None:
    """The whole program under mocks: an unresolved name raises UnresolvedDependency."""
    run = run_program(ROOT / stack_file, extra_config=extra)
    assert run.of_type("docker:index/container:Container")


def test_the_load_balancer_waits_for_the_api_on_every_host() -> None:
    """Phase 3: HAProxy on lb-01 dials each API host's proxy; it depends on those and on the
    API containers behind them, across hosts (each host has its own Docker provider)."""
    settings = load_stack_file(ROOT / "Pulumi.phase3.yaml")
    lb = next(s for s in build_specs(plan(settings), settings) if s.role == Role.LB)
    for host in ("api-01", "api-02", "api-03"):
        assert f"phase3-{host}-api-1" in lb.depends_on
        assert f"phase3-{host}-api-proxy-1" in lb.depends_on
