"""The resources the real program declares for a stack file, as the policy rules see them:
run under Pulumi mocks (tests/infra/pulumi_harness.py) with secret inputs kept marked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from policies.pack import unwrap_secret_envelopes
from policies.rules import RANDOM_PASSWORD, Resource, SecretText
from tests.infra import pulumi_harness
from tests.infra.pulumi_harness import ROOT, ProgramRun

STACK_FILES = sorted(p.name for p in ROOT.glob("Pulumi.*.yaml"))


@contextmanager
def secrets_kept_marked() -> Iterator[None]:
    """The harness opens secret envelopes when it records inputs; keep them as SecretText,
    exactly as the policy pack sees them through the engine."""
    original = pulumi_harness.unwrap_secrets
    pulumi_harness.unwrap_secrets = unwrap_secret_envelopes  # type: ignore[assignment]
    try:
        yield
    finally:
        pulumi_harness.unwrap_secrets = original  # type: ignore[assignment]


def run_marked(stack_file: Path, **kwargs: Any) -> ProgramRun:
    with secrets_kept_marked():
        return pulumi_harness.run_program(stack_file, **kwargs)


def as_resources(run: ProgramRun, stack: str) -> list[Resource]:
    out = []
    for rec in run.resources:
        props = dict(rec.inputs)
        if rec.type == RANDOM_PASSWORD and "result" in rec.outputs:
            # the provider marks `result` secret; the engine hands it to stack policies so
            props["result"] = SecretText(rec.outputs["result"])
        out.append(
            Resource(
                type=rec.type,
                name=rec.name,
                props=props,
                urn=f"urn:pulumi:{stack}::selextract::{rec.type}::{rec.name}",
                id=rec.id,
            )
        )
    return out
