"""Where the ops CLI finds a stack: its `Pulumi.<stack>.yaml`, settings, plan and state dirs.

The CLI reads the same stack files and builds the same plan as the Pulumi program
(`infra.config`, `infra.topology`), so it never holds a copy of either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.config import PHASES, ConfigError, Settings, load_stack_file
from infra.topology import Plan, plan

DEFAULT_STACK = "local"


def project_dir() -> Path:
    """The Pulumi project (repo root); `SELEXTRACT_PROJECT_DIR` points elsewhere (tests)."""
    env = os.environ.get("SELEXTRACT_PROJECT_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """Operator state (backups, logs); default ~/.local/state/selextract like scripts/lib.sh."""
    env = os.environ.get("SELEXTRACT_STATE")
    return Path(env) if env else Path.home() / ".local" / "state" / "selextract"


def cache_dir() -> Path:
    env = os.environ.get("SELEXTRACT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "selextract"


def stack_file(stack: str, root: Path | None = None) -> Path:
    return (root or project_dir()) / f"Pulumi.{stack}.yaml"


def available_stacks(root: Path | None = None) -> list[str]:
    base = root or project_dir()
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in base.glob("Pulumi.*.yaml"))


def load_stack(stack: str, root: Path | None = None) -> Settings:
    path = stack_file(stack, root)
    if not path.is_file():
        known = ", ".join(available_stacks(root)) or "none"
        raise ConfigError(f"no stack file {path.name} in {path.parent} (stacks: {known})")
    return load_stack_file(path)


def phase_changes(settings: Settings, phase: int) -> dict[str, Any]:
    """The stack config keys (camelCase, as in `Pulumi.<stack>.yaml`) that move `settings`
    to `phase`: the phase itself plus that phase's minimum sizes where the stack is below."""
    if phase not in PHASES:
        raise ConfigError(f"unknown phase {phase}; allowed: {', '.join(str(p) for p in PHASES)}")
    changes: dict[str, Any] = {"phase": phase}
    if phase >= 3 and settings.api.servers < 2:
        changes["api.servers"] = 2
    if phase >= 4 and settings.object_store.nodes < 4:
        changes["objectStore.nodes"] = 4
    return changes


def _describe_changes(settings: Settings, changes: dict[str, Any]) -> list[str]:
    notes = []
    current = {"api.servers": settings.api.servers, "objectStore.nodes": settings.object_store.nodes}
    for key, value in changes.items():
        if key in current:
            notes.append(f"{key} {current[key]} → {value} (phase {changes['phase']} minimum)")
    return notes


def apply_changes(settings: Settings, changes: dict[str, Any]) -> Settings:
    """`settings` with camelCase config `changes` applied, validated like a stack file."""
    data = settings.model_dump(by_alias=True)
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"stack {settings.stack}: {changes} is not a valid config: {exc}") from None


def settings_for_phase(settings: Settings, phase: int) -> tuple[Settings, list[str]]:
    """`settings` moved to `phase`, validated, raised to that phase's minimums if needed.

    Returns the settings and the adjustments made (e.g. "api.servers 1 → 2"), so a cost
    projection says which sizes it assumed instead of failing or silently mis-pricing.
    """
    changes = phase_changes(settings, phase)
    return apply_changes(settings, changes), _describe_changes(settings, changes)


def plan_for_phase(settings: Settings, phase: int) -> Plan:
    return plan(settings_for_phase(settings, phase)[0])
