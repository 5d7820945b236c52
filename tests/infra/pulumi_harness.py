"""Runs the real Pulumi program (`stacks/__main__.py`) against `pulumi.runtime.set_mocks`,
recording every resource and the Outputs it was given, so tests can assert the graph and
that secret values only ever travel as Pulumi secrets. Needs no Pulumi CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime.stack import run_pulumi_func

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "stacks" / "__main__.py"
MOCK_PASSWORD_PREFIX = "MockSecretValue"


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    id: str


@dataclass
class ProgramRun:
    resources: list[Recorded] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    secret_values: set[str] = field(default_factory=set)
    secret_exports: set[str] = field(default_factory=set)  # outputs exported as Pulumi secrets
    # (resource type, name, property path, is_secret, value) of every string input
    leaf_inputs: list[tuple[str, str, str, bool, str]] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def count(self, typ: str) -> int:
        return len(self.of_type(typ))

    def named(self, typ: str, name: str) -> Recorded:
        return next(r for r in self.of_type(typ) if r.name == name)


SECRET_SIG = pulumi.runtime.rpc._special_sig_key  # type: ignore[attr-defined]


def unwrap_secrets(value: Any) -> Any:
    """Inputs as the engine sees them, with secret envelopes opened (tests read values)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == pulumi.runtime.rpc._special_secret_sig:  # type: ignore[attr-defined]
            return unwrap_secrets(value["value"])
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, run: ProgramRun) -> None:
        self.run = run
        self._ids = itertools.count(1000)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        rid = str(next(self._ids))
        if args.typ == "random:index/randomPassword:RandomPassword":
            value = f"{MOCK_PASSWORD_PREFIX}{rid}x"
            self.run.secret_values.add(value)
            outputs["result"] = value
        elif args.typ == "random:index/randomId:RandomId":
            outputs["hex"] = f"{int(rid) % 65536:04x}"
        elif args.typ == "hcloud:index/server:Server":
            outputs["ipv4Address"] = f"198.51.100.{int(rid) % 250}"
        elif args.typ == "docker:index/image:Image":
            outputs["repoDigest"] = f"sha256:{rid}"
        self.run.resources.append(Recorded(args.typ, args.name, unwrap_secrets(dict(args.inputs)), outputs, rid))
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def stack_config(stack_file: Path, secret_values: dict[str, str]) -> tuple[dict[str, str], set[str]]:
    doc = yaml.safe_load(stack_file.read_text())
    config: dict[str, str] = {}
    secret_keys: set[str] = set()
    for key, value in (doc.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = secret_values[key.partition(":")[2]]
            secret_keys.add(key)
        config[key] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


def _record_transform(run: ProgramRun):
    async def walk(typ: str, name: str, path: str, value: Any, secret: bool) -> None:
        if isinstance(value, pulumi.Output):
            is_secret = secret or await value.is_secret()
            inner = await value.future(with_unknowns=True)
            await walk(typ, name, path, inner, is_secret)
        elif isinstance(value, dict):
            for k, v in value.items():
                await walk(typ, name, f"{path}.{k}", v, secret)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                await walk(typ, name, f"{path}[{i}]", v, secret)
        elif isinstance(value, str):
            run.leaf_inputs.append((typ, name, path, secret, value))
        elif hasattr(value, "__dict__") and not isinstance(value, pulumi.Resource):
            await walk(
                typ,
                name,
                path,
                pulumi.runtime.rpc._types.input_type_to_dict(value)
                if pulumi.runtime.rpc._types.is_input_type(type(value))
                else {},
                secret,
            )

    pending: list[asyncio.Task] = []

    def transform(args: pulumi.ResourceTransformationArgs) -> None:
        if isinstance(args.resource, pulumi.CustomResource):
            pending.append(asyncio.ensure_future(walk(args.type_, args.name, "", dict(args.props), False)))
        return None

    return transform, pending


def run_program(
    stack_file: Path, *, secret_values: dict[str, str] | None = None, extra_config: dict[str, Any] | None = None
) -> ProgramRun:
    """Run the program for `Pulumi.<stack>.yaml` under mocks and return what it declared."""
    stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    run = ProgramRun()
    secret_values = secret_values or {}
    config, secret_keys = stack_config(stack_file, secret_values)
    for key, value in (extra_config or {}).items():
        config[key] = value if isinstance(value, str) else json.dumps(value)
    run.secret_values.update(v for v in secret_values.values())

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(RecordingMocks(run), project="selextract", stack=stack, preview=False)
    runtime_config.set_all_config(config, sorted(secret_keys))
    transform, pending = _record_transform(run)

    captured: dict[str, Any] = {}
    original_export = pulumi.export
    pulumi.export = lambda key, value: captured.__setitem__(key, value)  # type: ignore[assignment]

    async def program() -> None:
        pulumi.runtime.register_stack_transformation(transform)
        runpy.run_path(str(PROGRAM), run_name="__main__")

    async def collect() -> None:
        for task in pending:
            await task
        for key, value in captured.items():
            if isinstance(value, pulumi.Output) and await value.is_secret():
                run.secret_exports.add(key)
            run.exports[key] = await _resolve(value)

    try:
        loop.run_until_complete(run_pulumi_func(program))
        loop.run_until_complete(collect())
    finally:
        pulumi.export = original_export  # type: ignore[assignment]
        loop.close()
    return run


async def _resolve(value: Any) -> Any:
    if isinstance(value, pulumi.Output):
        return await _resolve(await value.future())
    if isinstance(value, dict):
        return {k: await _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [await _resolve(v) for v in value]
    return value
