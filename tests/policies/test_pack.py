"""The real pulumi-policy objects of the pack (policies/pack.py), called as the engine
calls them but without the CLI: their `validate` callables with pulumi-policy's own
argument types, and the SDK's analyzer servicer with the engine's protobuf requests
(secret envelopes, unknown values, property dependencies, stack config)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import policy as sdk
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policies import pack, rules
from policies.rules import CONTAINER, FIREWALL, FIREWALL_ATTACHMENT, SERVER, SERVER_NETWORK

SIG = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
PW = "hunter2-but-longer"
LABELS = {"project": "selextract", "stack": "phase3", "phase": "3", "role": "postgres"}


def secret(value: Any) -> dict[str, Any]:
    return {SIG: SECRET_SIG, "value": value}


def policy(name: str) -> ResourceValidationPolicy | StackValidationPolicy:
    return next(p for p in pack.POLICIES if p.name == name)


def opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def props_as_sdk_gives(raw: dict[str, Any]) -> Any:
    """What pulumi-policy passes a validation: deserialized, behind unknown-checking proxies."""
    return unknown_checking_proxy(deserialize_properties(raw))


def resource_args(type_: str, raw: dict[str, Any], config: dict | None = None) -> ResourceValidationArgs:
    return ResourceValidationArgs(
        type_, props_as_sdk_gives(raw), f"urn:pulumi:t::p::{type_}::r", "r", opts(), None, config
    )


def violations(p: Any, args: Any) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    p.validate(args, lambda message, urn=None: found.append((message, urn)))
    return found


@pytest.fixture(autouse=True)
def _patched_sdk() -> Iterator[None]:
    """The pack's two SDK hooks, installed as `serve()` installs them, undone afterwards."""
    deserialize, configure = sdk.deserialize_properties, sdk._PolicyAnalyzerServicer.ConfigureStack
    pack.mark_secrets()
    pack.capture_stack_config()
    yield
    sdk.deserialize_properties = deserialize
    sdk._PolicyAnalyzerServicer.ConfigureStack = configure
    pack.STACK_CONFIG.set({}, [])


def test_every_rule_is_a_policy_with_its_enforcement_level() -> None:
    assert [p.name for p in pack.POLICIES] == [r.name for r in rules.RULES]
    for p, r in zip(pack.POLICIES, rules.RULES, strict=True):
        assert p.enforcement_level == EnforcementLevel(r.enforcement)
        assert p.description == r.description
        assert isinstance(p, ResourceValidationPolicy if r.kind == "resource" else StackValidationPolicy)
    mandatory = {p.name for p in pack.POLICIES if p.enforcement_level == EnforcementLevel.MANDATORY}
    assert "firewall-no-public-ssh-or-database-ports" in mandatory


# ------------------------------------------------------- validate() of each policy


def test_resource_policies_pass_and_fail_through_validate() -> None:
    labels = policy("server-required-labels")
    assert violations(labels, resource_args(SERVER, {"labels": LABELS})) == []
    [(message, urn)] = violations(labels, resource_args(SERVER, {"labels": {"project": "selextract"}}))
    assert "no phase/role labels" in message and urn and urn.endswith("::r")

    fw = policy("firewall-no-public-ssh-or-database-ports")
    good = {"rules": [{"direction": "in", "protocol": "tcp", "port": "443", "sourceIps": ["0.0.0.0/0"]}]}
    bad = {"rules": [{"direction": "in", "protocol": "tcp", "port": "5432", "sourceIps": ["0.0.0.0/0"]}]}
    assert violations(fw, resource_args(FIREWALL, good)) == []
    assert "5432 (postgres)" in violations(fw, resource_args(FIREWALL, bad))[0][0]

    ports = policy("only-entry-publishes-publicly")
    pg = {"name": "phase3-db-01-postgres-1", "ports": [{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}]}
    assert "publishes port 5432" in violations(ports, resource_args(CONTAINER, pg))[0][0]
    pg["ports"][0]["ip"] = "10.0.1.11"
    assert violations(ports, resource_args(CONTAINER, pg)) == []


def test_policy_config_reaches_the_rule() -> None:
    fw = policy("firewall-no-public-ssh-or-database-ports")
    stats = {"rules": [{"direction": "in", "protocol": "tcp", "port": "8404", "sourceIps": ["::/0"]}]}
    assert violations(fw, resource_args(FIREWALL, stats)) == []
    assert violations(fw, resource_args(FIREWALL, stats, {"forbiddenPorts": [8404]}))


def test_unknown_values_do_not_raise_or_report() -> None:
    """pulumi-policy raises UnknownValueError on reading an unknown value (reported as an
    advisory "can't run during preview"); the pack reads around it."""
    ports = policy("only-entry-publishes-publicly")
    pg = {
        "name": "phase3-db-01-postgres-1",
        "ports": [{"internal": 5432, "external": 5432, "ip": UNKNOWN_STRING_VALUE}],
    }
    assert violations(ports, resource_args(CONTAINER, pg)) == []
    labels = policy("server-required-labels")
    assert violations(labels, resource_args(SERVER, {"labels": {**LABELS, "role": UNKNOWN_STRING_VALUE}})) == []
    assert violations(labels, resource_args(SERVER, {"labels": UNKNOWN_STRING_VALUE})) == []


def test_secret_inputs_pass_and_plain_credentials_fail() -> None:
    secrets = policy("secrets-only-as-pulumi-secrets")
    marked = props_as_sdk_gives(pack.unwrap_secret_envelopes({"envs": [secret(f"POSTGRES_PASSWORD={PW}")]}))
    args = ResourceValidationArgs(CONTAINER, marked, "urn:x", "pg", opts(), None)
    assert violations(secrets, args) == []
    [(message, _)] = violations(secrets, resource_args(CONTAINER, {"envs": [f"POSTGRES_PASSWORD={PW}"]}))
    assert "envs[0] is plain text but environment variable POSTGRES_PASSWORD holds a credential" in message
    assert PW not in message


def stack_resource(type_: str, name: str, raw: dict[str, Any], deps: dict[str, list[PolicyResource]] | None = None):
    return PolicyResource(
        type_, props_as_sdk_gives(raw), f"urn:pulumi:t::p::{type_}::{name}", name, opts(), None, None, [], deps or {}
    )


def test_stack_policies_use_property_dependencies() -> None:
    """During preview the attachment's serverIds are unknown; the dependencies say which servers."""
    db = stack_resource(SERVER, "db-01", {"labels": LABELS, "serverType": "ccx23"})
    fw = stack_resource(FIREWALL, "fw-internal", {"rules": []})
    unknown = {"serverIds": UNKNOWN_STRING_VALUE, "firewallId": UNKNOWN_STRING_VALUE}
    attachment = stack_resource(FIREWALL_ATTACHMENT, "att", unknown, {"serverIds": [db], "firewallId": [fw]})
    join = stack_resource(SERVER_NETWORK, "join", {"serverId": UNKNOWN_STRING_VALUE}, {"serverId": [db]})
    p = policy("servers-behind-firewall-and-in-private-network")
    assert violations(p, StackValidationArgs([db, fw, attachment, join], None)) == []
    found = violations(p, StackValidationArgs([db, fw, join], None))
    assert [m for m, _ in found] == [
        "server db-01 (role postgres) is behind no firewall: no FirewallAttachment, firewallIds or firewall "
        "apply_to selects it, so every port on its public address is open"
    ]
    assert found[0][1] == db.urn


def test_budget_from_policy_config_and_captured_stack_config() -> None:
    db = stack_resource(SERVER, "db-01", {"labels": LABELS, "serverType": "ccx23"})  # 24.49 EUR
    p = policy("monthly-budget")
    assert violations(p, StackValidationArgs([db], None)) == []  # no budget anywhere: nothing to check
    assert (
        "exceeds the budget 20.00 EUR (policy config"
        in violations(p, StackValidationArgs([db], {"monthlyBudget": 20}))[0][0]
    )
    pack.STACK_CONFIG.set({"selextract:monthlyBudget": "20", "selextract:phase": "3"}, [])
    assert "(selextract:monthlyBudget)" in violations(p, StackValidationArgs([db], None))[0][0]
    assert violations(p, StackValidationArgs([db], {"monthlyBudget": 30})) == []


# ------------------------------------------- the SDK's analyzer servicer (gRPC layer)


def servicer() -> Any:
    return sdk._PolicyAnalyzerServicer(pack.PACK_NAME, "1.0.0", list(pack.POLICIES), EnforcementLevel.MANDATORY)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def analyze(type_: str, props: dict[str, Any]) -> list[Any]:
    request = proto.AnalyzeRequest(type=type_, properties=struct(props), urn=f"urn:pulumi:t::p::{type_}::r", name="r")
    return list(servicer().Analyze(request, None).diagnostics)


def test_analyze_sees_engine_secret_envelopes_as_secrets() -> None:
    """The engine sends secret inputs wrapped in envelopes; the SDK would unwrap them to
    plain strings, the pack keeps them marked."""
    env = [secret(f"POSTGRES_PASSWORD={PW}"), "POSTGRES_USER=selextract"]
    assert analyze(CONTAINER, {"name": "phase3-db-01-postgres-1", "envs": env}) == []
    whole_list_secret = secret([f"POSTGRES_PASSWORD={PW}", "POSTGRES_USER=selextract"])
    assert analyze(CONTAINER, {"name": "phase3-db-01-postgres-1", "envs": whole_list_secret}) == []

    [diag] = analyze(CONTAINER, {"name": "phase3-db-01-postgres-1", "envs": [f"POSTGRES_PASSWORD={PW}"]})
    assert diag.policyName == "secrets-only-as-pulumi-secrets"
    assert diag.enforcementLevel == proto.MANDATORY
    assert PW not in diag.message


def test_analyze_reports_every_failing_resource_rule_as_mandatory() -> None:
    props = {
        "name": "phase3-db-01-postgres-1",
        "ports": [{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}],
        "envs": [f"POSTGRES_PASSWORD={PW}"],
    }
    diags = analyze(CONTAINER, props)
    assert sorted(d.policyName for d in diags) == ["only-entry-publishes-publicly", "secrets-only-as-pulumi-secrets"]
    assert {d.enforcementLevel for d in diags} == {proto.MANDATORY}


def test_analyze_stack_with_stack_config_from_configure_stack() -> None:
    s = servicer()
    s.ConfigureStack(
        proto.AnalyzerStackConfigureRequest(
            stack="phase4",
            project="selextract",
            config={"selextract:phase": "4", "selextract:monthlyBudget": "50", "selextract:postgresPassword": PW},
            config_secret_keys=["selextract:postgresPassword"],
        ),
        None,
    )
    minio = [
        proto.AnalyzerResource(
            type=SERVER,
            name=f"minio-0{i}",
            urn=f"urn:pulumi:phase4::selextract::{SERVER}::minio-0{i}",
            properties=struct({"labels": {**LABELS, "role": "objectstore", "phase": "4"}, "serverType": "cx42"}),
        )
        for i in (1, 2, 3)
    ]
    leak = proto.AnalyzerResource(
        type=CONTAINER,
        name="debug",
        urn="urn:pulumi:phase4::selextract::c::debug",
        properties=struct({"labels": [{"label": "note", "value": f"pg={PW}"}]}),
    )
    by_policy = by_policy_of(s.AnalyzeStack(proto.AnalyzeStackRequest(resources=[*minio, leak]), None))
    assert by_policy["phase4-object-store-quorum"] == [
        "phase 4 runs 3 object-store servers; the object-store cluster needs at least 4 (MinIO erasure coding; "
        "selextract:objectStore.nodes)"
    ]
    assert "monthly-budget" not in by_policy  # 3 x cx42 = 49.20 EUR, within 50
    [leaked] = by_policy["no-secret-value-in-plain-text"]
    assert "Container debug: labels[0].value contains the value of a Pulumi secret" in leaked
    assert PW not in leaked
    assert len(by_policy["servers-behind-firewall-and-in-private-network"]) == 6  # 3 servers x (firewall, network)

    minio.append(
        proto.AnalyzerResource(
            type=SERVER,
            name="minio-04",
            urn=f"urn:pulumi:phase4::selextract::{SERVER}::minio-04",
            properties=struct({"labels": {**LABELS, "role": "objectstore", "phase": "4"}, "serverType": "cx42"}),
        )
    )
    by_policy = by_policy_of(s.AnalyzeStack(proto.AnalyzeStackRequest(resources=minio), None))
    assert "phase4-object-store-quorum" not in by_policy
    assert by_policy["monthly-budget"][0].startswith(
        "monthly cost 65.60 EUR exceeds the budget 50.00 EUR (selextract:monthlyBudget)"
    )


def by_policy_of(response: Any) -> dict[str, list[str]]:
    """Violation messages per policy, without the policy description the SDK prepends."""
    out: dict[str, list[str]] = {}
    for d in response.diagnostics:
        assert d.enforcementLevel == proto.MANDATORY
        out.setdefault(d.policyName, []).append(d.message.split("\n", 1)[1])
    return out


def test_property_dependencies_arrive_through_the_servicer() -> None:
    db_urn = f"urn:pulumi:t::selextract::{SERVER}::db-01"
    db = proto.AnalyzerResource(type=SERVER, name="db-01", urn=db_urn, properties=struct({"labels": LABELS}))
    attachment = proto.AnalyzerResource(
        type=FIREWALL_ATTACHMENT,
        name="att",
        urn="urn:pulumi:t::selextract::att::att",
        properties=struct({"serverIds": UNKNOWN_STRING_VALUE, "firewallId": UNKNOWN_STRING_VALUE}),
        propertyDependencies={"serverIds": proto.AnalyzerPropertyDependencies(urns=[db_urn])},
    )
    join = proto.AnalyzerResource(
        type=SERVER_NETWORK,
        name="join",
        urn="urn:pulumi:t::selextract::join::join",
        properties=struct({"serverId": UNKNOWN_STRING_VALUE}),
        propertyDependencies={"serverId": proto.AnalyzerPropertyDependencies(urns=[db_urn])},
    )
    diags = servicer().AnalyzeStack(proto.AnalyzeStackRequest(resources=[db, attachment, join]), None).diagnostics
    assert [d.policyName for d in diags] == []
