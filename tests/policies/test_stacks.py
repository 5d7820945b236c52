"""Every policy rule against what the real program declares for each committed stack
(run under Pulumi mocks): the committed stacks pass, and deliberately broken variants
of them are refused by exactly the rule that guards against that mistake."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import yaml

from policies import rules
from policies.rules import (
    CONTAINER,
    FIREWALL,
    FIREWALL_ATTACHMENT,
    SERVER,
    SERVER_NETWORK,
    Context,
    Resource,
    SecretText,
    credentials,
)
from tests.infra.pulumi_harness import ROOT, ProgramRun
from tests.policies.stacks import STACK_FILES, as_resources, run_marked

# the stacks whose machines hcloud creates (the policy prices hcloud resources)
HETZNER = [s for s in STACK_FILES if yaml.safe_load((ROOT / s).read_text())["config"]["selextract:target"] == "hetzner"]


@cache
def program(stack_file: str) -> tuple[ProgramRun, tuple[Resource, ...]]:
    run = run_marked(ROOT / stack_file)
    return run, tuple(as_resources(run, stack_of(stack_file)))


def stack_of(stack_file: str) -> str:
    return stack_file.removeprefix("Pulumi.").removesuffix(".yaml")


def stack_context(stack_file: str, **overrides: Any) -> Context:
    """The stack config the engine would hand the pack (committed file + overrides)."""
    config = dict(yaml.safe_load((ROOT / stack_file).read_text())["config"])
    config.update(overrides)
    return Context(stack=config)


@pytest.mark.parametrize("stack_file", STACK_FILES)
def test_committed_stacks_pass_every_rule(stack_file: str) -> None:
    _, resources = program(stack_file)
    assert rules.check_stack(resources, stack_context(stack_file)) == {}


@pytest.mark.parametrize("stack_file", STACK_FILES)
def test_the_rules_saw_what_they_guard(stack_file: str) -> None:
    """Not vacuous: secrets were recognised as credentials and seen as Pulumi secrets."""
    _, resources = program(stack_file)
    found = [(path, secret) for r in resources for path, _, _, secret in credentials(r.props)]
    assert len(found) >= 10
    assert all(secret for _, secret in found)
    assert any(r.type == CONTAINER and r.props.get("ports") for r in resources)


@pytest.mark.parametrize("stack_file", HETZNER)
def test_policy_cost_matches_the_stack_export(stack_file: str) -> None:
    run, resources = program(stack_file)
    items, problems, currency = rules.stack_cost(resources)
    assert problems == []
    assert round(sum(i.monthly for i in items), 2) == run.exports["monthlyCost"]
    assert currency == run.exports["costCurrency"]
    budget = yaml.safe_load((ROOT / stack_file).read_text())["config"]["selextract:monthlyBudget"]
    assert run.exports["monthlyCost"] <= budget


def test_local_stack_simulating_phase4_passes() -> None:
    run = run_marked(ROOT / "Pulumi.local.yaml", extra_config={"selextract:phase": "4"})
    resources = as_resources(run, "local")
    assert rules.check_stack(resources, stack_context("Pulumi.local.yaml", **{"selextract:phase": "4"})) == {}
    hosts = {
        lab["value"]
        for r in resources
        if r.type == CONTAINER
        for lab in r.props.get("labels", [])
        if lab["label"] == "selextract.host" and "-objectstore-" in r.props["name"]
    }
    assert len(hosts) >= 4


# ------------------------------------------------------------------ bad stacks


def test_phase4_scaled_past_its_budget_is_refused() -> None:
    """A plausible pull request: 14 worker servers on phase 4 — valid config, over budget."""
    workers = dict(yaml.safe_load((ROOT / "Pulumi.phase4.yaml").read_text())["config"]["selextract:workers"])
    workers["servers"] = 14
    run = run_marked(ROOT / "Pulumi.phase4.yaml", extra_config={"selextract:workers": workers})
    found = rules.check_stack(as_resources(run, "phase4"), stack_context("Pulumi.phase4.yaml"))
    assert set(found) == {"monthly-budget"}
    [violation] = found["monthly-budget"]
    assert "exceeds the budget 800.00 EUR (selextract:monthlyBudget)" in violation.message
    assert "14 x server ccx33 = 678.86" in violation.message


def edit(resources: tuple[Resource, ...], type_: str, name: str, change: Callable[[dict], Any]) -> list[Resource]:
    """A copy of the stack with one resource's props changed (the cached original untouched)."""
    out = []
    hit = False
    for r in resources:
        if r.type == type_ and r.name == name:
            props = copy.deepcopy(dict(r.props))
            change(props)
            r = dataclasses.replace(r, props=props)
            hit = True
        out.append(r)
    assert hit, f"no {type_} {name}"
    return out


def server_id(resources: tuple[Resource, ...] | list[Resource], name: str) -> float:
    return float(next(r.id for r in resources if r.type == SERVER and r.name == name))  # type: ignore[arg-type]


def open_postgres(props: dict) -> None:
    props["rules"].append(
        {"direction": "in", "protocol": "tcp", "port": "5432", "sourceIps": ["0.0.0.0/0"], "description": "debug"}
    )


def plain_postgres_password(props: dict) -> None:
    props["envs"] = [str(e) for e in props["envs"]]  # the same values, no longer Pulumi secrets


def publish_postgres(props: dict) -> None:
    props["ports"] = [{**p, "ip": "0.0.0.0"} for p in props["ports"]]


def without_db_01(stack: tuple[Resource, ...]) -> Callable[[dict], None]:
    def change(props: dict) -> None:
        props["serverIds"] = [i for i in props["serverIds"] if i != server_id(stack, "hetzner-db-01")]

    return change


def with_db_01(stack: tuple[Resource, ...]) -> Callable[[dict], None]:
    def change(props: dict) -> None:
        props["serverIds"] = [*props["serverIds"], server_id(stack, "hetzner-db-01")]

    return change


BAD_PHASE3: dict[str, tuple[Callable[[tuple[Resource, ...]], list[Resource]], set[str], str]] = {
    "firewall opens postgres to the internet": (
        lambda s: edit(s, FIREWALL, "hetzner-fw-internal", open_postgres),
        {"firewall-no-public-ssh-or-database-ports"},
        "opens tcp 5432 (postgres) to 0.0.0.0/0",
    ),
    "server without labels": (
        lambda s: edit(s, SERVER, "hetzner-redis-01", lambda p: p.pop("labels")),
        {"server-required-labels"},
        "server has no project/phase/role labels",
    ),
    "database server outside every firewall": (
        lambda s: edit(s, FIREWALL_ATTACHMENT, "hetzner-fw-internal-attachment", without_db_01(s)),
        {"servers-behind-firewall-and-in-private-network"},
        "server hetzner-db-01 (role postgres) is behind no firewall",
    ),
    "database server behind the public entry firewall": (
        lambda s: edit(
            edit(s, FIREWALL_ATTACHMENT, "hetzner-fw-internal-attachment", without_db_01(s)),  # type: ignore[arg-type]
            FIREWALL_ATTACHMENT,
            "hetzner-fw-entry-attachment",
            with_db_01(s),
        ),
        {"data-hosts-no-public-web"},
        "server hetzner-db-01 (role postgres) is behind firewall hetzner-fw-entry, which opens 80/443",
    ),
    "server outside the private network": (
        lambda s: [r for r in s if not (r.type == SERVER_NETWORK and r.name == "hetzner-api-02-private")],
        {"servers-behind-firewall-and-in-private-network"},
        "server hetzner-api-02 (role api) is not in the private network",
    ),
    "API server outside its placement group": (
        lambda s: edit(s, SERVER, "hetzner-api-03", lambda p: p.update(placementGroupId=None)),
        {"replicated-roles-in-spread-placement-groups"},
        "server hetzner-api-03 is one of 3 api servers but in no placement group",
    ),
    "postgres published on every address": (
        lambda s: edit(s, CONTAINER, "phase3-db-01-postgres-1", publish_postgres),
        {"only-entry-publishes-publicly"},
        "container phase3-db-01-postgres-1 publishes port 5432 (host port 5432) on 0.0.0.0",
    ),
    "postgres password as a plain input": (
        lambda s: edit(s, CONTAINER, "phase3-db-01-postgres-1", plain_postgres_password),
        {"secrets-only-as-pulumi-secrets", "no-secret-value-in-plain-text"},
        "envs[2] is plain text but environment variable POSTGRES_PASSWORD holds a credential",
    ),
}


@pytest.mark.parametrize("mistake", sorted(BAD_PHASE3))
def test_broken_phase3_is_refused_by_the_right_rule(mistake: str) -> None:
    _, resources = program("Pulumi.phase3.yaml")
    tamper, expected_rules, expected_message = BAD_PHASE3[mistake]
    found = rules.check_stack(tamper(resources), stack_context("Pulumi.phase3.yaml"))
    assert set(found) == expected_rules
    messages = [v.message for vs in found.values() for v in vs]
    assert any(expected_message in m for m in messages), messages
    assert all(v.urn for vs in found.values() for v in vs if "Server" in v.message or "Container" in v.message)
    secrets = {str(leaf) for r in resources for _, leaf, _ in rules.walk(r.props) if isinstance(leaf, SecretText)}
    assert not any(s in m for s in secrets if len(s) >= 8 for m in messages), "messages must not leak secrets"


def test_phase4_missing_an_object_store_node_is_refused() -> None:
    """Config validation refuses objectStore.nodes < 4, so break it at the resource level:
    the program's fourth MinIO server gone from the graph."""
    _, resources = program("Pulumi.phase4.yaml")
    broken = [r for r in resources if not (r.type == SERVER and r.name == "hetzner-minio-04")]
    found = rules.check_stack(broken, stack_context("Pulumi.phase4.yaml"))
    assert set(found) == {"phase4-object-store-quorum"}
    assert "phase 4 runs 3 object-store servers" in found["phase4-object-store-quorum"][0].message
