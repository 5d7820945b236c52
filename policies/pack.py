"""The Selextract policy pack: each rule of `policies/rules.py` as a pulumi-policy policy.

The wrappers turn what pulumi-policy hands a validation (proxied properties, policy
config, the other resources of the stack) into the plain data the rules take, and report
what the rules return. Two things pulumi-policy's Python SDK drops are kept here:

- which inputs are Pulumi secrets: the SDK unwraps secret envelopes before a validation
  sees them, so `mark_secrets()` makes secret strings arrive as `rules.SecretText`;
- the stack's config (`selextract:monthlyBudget`, `selextract:phase`, secret values):
  the engine sends it with `ConfigureStack`, which the SDK ignores, so `capture_stack_config()`
  keeps it for the stack rules.

Both hooks fail closed: if a future SDK stopped calling them, secrets would look plain
(and be reported) and the budget would fall back to the policy config.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi_policy
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import policy as _sdk
from pulumi_policy import proxy as _proxy

from policies import rules
from policies.rules import UNKNOWN, Context, Resource, SecretText

PACK_NAME = "selextract"
_UNKNOWN_SENTINELS = frozenset(
    {
        _proxy.UNKNOWN_BOOLEAN_VALUE,
        _proxy.UNKNOWN_NUMBER_VALUE,
        _proxy.UNKNOWN_STRING_VALUE,
        _proxy.UNKNOWN_ARRAY_VALUE,
        _proxy.UNKNOWN_ASSET_VALUE,
        _proxy.UNKNOWN_ARCHIVE_VALUE,
        _proxy.UNKNOWN_OBJECT_VALUE,
    }
)
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


# ------------------------------------------------------------ stack config capture


class _StackConfig:
    """The config of the stack being previewed/updated, as the engine sent it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, str] = {}
        self.secret_keys: frozenset[str] = frozenset()

    def set(self, values: Mapping[str, str], secret_keys: Sequence[str]) -> None:
        with self._lock:
            self.values = dict(values)
            self.secret_keys = frozenset(secret_keys)

    def context(self, policy_config: Mapping[str, Any] | None) -> Context:
        with self._lock:
            plain = {k: v for k, v in self.values.items() if k not in self.secret_keys}
            secrets = frozenset(v for k, v in self.values.items() if k in self.secret_keys and v)
        return Context(policy=dict(policy_config or {}), stack=plain, secret_values=secrets)


STACK_CONFIG = _StackConfig()


def capture_stack_config() -> None:
    """Make the analyzer keep the stack config from `ConfigureStack` (idempotent)."""
    servicer = _sdk._PolicyAnalyzerServicer
    original = servicer.ConfigureStack
    if getattr(original, "_selextract", False):
        return

    def configure_stack(self: Any, request: Any, context: Any) -> Any:
        STACK_CONFIG.set(dict(request.config), list(request.config_secret_keys))
        return original(self, request, context)

    configure_stack._selextract = True  # type: ignore[attr-defined]
    servicer.ConfigureStack = configure_stack


# ------------------------------------------------------------------ secret marking


def _secretize(value: Any) -> Any:
    if isinstance(value, str):
        return SecretText(value)
    if isinstance(value, list):
        return [_secretize(v) for v in value]
    if isinstance(value, dict):
        return {k: _secretize(v) for k, v in value.items()}
    return value


def unwrap_secret_envelopes(value: Any) -> Any:
    """Engine property JSON with each secret envelope replaced by its value, strings in it
    marked `SecretText` (what pulumi-policy's deserializer then passes through)."""
    if isinstance(value, list):
        return [unwrap_secret_envelopes(v) for v in value]
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG and "value" in value:
            return _secretize(unwrap_secret_envelopes(value["value"]))
        return {k: unwrap_secret_envelopes(v) for k, v in value.items()}
    return value


def mark_secrets() -> None:
    """Make validations see secret inputs as `SecretText` instead of plain strings (idempotent)."""
    original = _sdk.deserialize_properties
    if getattr(original, "_selextract", False):
        return

    def deserialize_properties(props: dict[str, Any], proxy_secrets: bool = False) -> Any:
        if proxy_secrets:  # remediations: the SDK's own secret-preserving proxies
            return original(props, proxy_secrets)
        return original(unwrap_secret_envelopes(props), False)

    deserialize_properties._selextract = True  # type: ignore[attr-defined]
    _sdk.deserialize_properties = deserialize_properties


# -------------------------------------------------------------- props → plain data


def to_plain(value: Any) -> Any:
    """pulumi-policy's unknown-checking proxies as plain dicts/lists, without raising on
    unknown values: those become `rules.UNKNOWN`."""
    if isinstance(value, _proxy._DictProxy | _proxy._ListProxy):
        value = value["__target"]
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, str) and value in _UNKNOWN_SENTINELS:
        return UNKNOWN
    return value


def resource_of(res: pulumi_policy.PolicyResource) -> Resource:
    deps = {
        prop: frozenset(d.urn for d in targets if getattr(d, "urn", None))
        for prop, targets in (res.property_dependencies or {}).items()
    }
    return Resource(type=res.resource_type, name=res.name, props=to_plain(res.props), urn=res.urn, deps=deps)


# ----------------------------------------------------------------------- policies


def _resource_validation(rule: rules.Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        ctx = STACK_CONFIG.context(args.get_config())
        for message in rule.check(args.resource_type, to_plain(args.props), ctx):
            report_violation(message, args.urn)

    return validate


def _stack_validation(rule: rules.Rule):
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        ctx = STACK_CONFIG.context(args.get_config())
        for violation in rule.check([resource_of(r) for r in args.resources], ctx):
            report_violation(violation.message, violation.urn)

    return validate


def _policy(rule: rules.Rule) -> ResourceValidationPolicy | StackValidationPolicy:
    common: dict[str, Any] = {
        "name": rule.name,
        "description": rule.description,
        "enforcement_level": EnforcementLevel(rule.enforcement),
        "severity": Severity(rule.severity),
        "config_schema": PolicyConfigSchema(properties=dict(rule.config)) if rule.config else None,
        "remediation_steps": (rule.check.__doc__ or "").strip() or None,
    }
    if rule.kind == "resource":
        return ResourceValidationPolicy(validate=_resource_validation(rule), **common)
    return StackValidationPolicy(validate=_stack_validation(rule), **common)


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [_policy(r) for r in rules.RULES]


def serve() -> None:
    """Run the pack as the engine's analyzer plugin (blocks; `python -m pulumi.policy`)."""
    mark_secrets()
    capture_stack_config()
    pulumi_policy.PolicyPack(
        name=PACK_NAME,
        description="Selextract guard rails: labels, firewalls, private network, placement, public ports, "
        "secrets, object-store quorum and the monthly budget.",
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=list(POLICIES),
    )
