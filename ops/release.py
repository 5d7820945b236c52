"""Deploy, rollback and secret rotation with an audit trail.

Every change goes through the same `Deployer` (config + `pulumi up`, zero-downtime by
construction of the program) and is appended to `<state>/audit/<stack>.jsonl`: who, when,
what, which image version, and whether it succeeded. Rollback reads that log, so an
operator never has to name the version to go back to.
"""

from __future__ import annotations

import getpass
import itertools
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.config import GENERATED_SECRETS
from infra.specs.objectstore import KEEP_ONLY
from infra.specs.postgres import APP_USERS, ROTATION_KEY, app_slot
from ops.access import Container, OpsError, run

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditEntry:
    time: str
    user: str
    stack: str
    action: str
    version: str | None
    commit: str | None
    result: str  # succeeded | failed
    seconds: float
    detail: str = ""


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_stack(cls, state: Path, stack: str) -> AuditLog:
        return cls(state / "audit" / f"{stack}.jsonl")

    def append(self, entry: AuditEntry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(asdict(entry)) + "\n")

    def entries(self) -> list[AuditEntry]:
        if not self.path.exists():
            return []
        return [AuditEntry(**json.loads(line)) for line in self.path.read_text().splitlines() if line.strip()]

    def previous_version(self, current: str | None) -> str:
        """The newest successfully deployed version other than `current`."""
        for entry in reversed(self.entries()):
            if entry.result == "succeeded" and entry.version and entry.version != current:
                return entry.version
        raise OpsError("no earlier successful deploy in the audit log to roll back to; use --to VERSION")


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _run(deployer: Any, audit: AuditLog, action: str, progress: Progress, detail: str = "") -> dict[str, Any]:
    start = time.monotonic()
    try:
        deployer.up(progress)  # its summary counts resources; the version is a stack output
        outputs = deployer.outputs()
    except Exception as exc:
        audit.append(
            AuditEntry(
                datetime.now(UTC).isoformat(),
                _who(),
                deployer.stack,
                action,
                None,
                None,
                "failed",
                round(time.monotonic() - start, 1),
                f"{detail} {type(exc).__name__}".strip(),
            )
        )
        raise
    version = outputs.get("version") or {}
    audit.append(
        AuditEntry(
            datetime.now(UTC).isoformat(),
            _who(),
            deployer.stack,
            action,
            version.get("tag"),
            version.get("commit"),
            "succeeded",
            round(time.monotonic() - start, 1),
            detail,
        )
    )
    return outputs


def deploy(deployer: Any, audit: AuditLog, progress: Progress) -> dict[str, Any]:
    """Deploy the working tree (dropping any rollback pin)."""
    if deployer.get_config("imageTag"):
        deployer.remove_config("imageTag")
    return _run(deployer, audit, "deploy", progress)


def rollback(deployer: Any, audit: AuditLog, progress: Progress, to: str | None = None) -> dict[str, Any]:
    """Run the previous successful version (or `to`), through the same zero-downtime path."""
    current = (deployer.outputs().get("version") or {}).get("tag")
    target = to or audit.previous_version(current)
    if target == current:
        raise OpsError(f"version {target} is already running")
    deployer.set_config("imageTag", target)
    return _run(deployer, audit, "rollback", progress, f"from {current} to {target}")


def rotate_secret(
    deployer: Any, audit: AuditLog, name: str, progress: Progress, current: int | None = None
) -> dict[str, Any]:
    """Bump the RandomPassword keeper of `name` and deploy: a new password everywhere.

    `current` is the generation the program sees now (`Settings.rotation`, which counts
    both `rotation:<name>` and `selextract:rotation.<name>`); without it, the latter."""
    if name not in GENERATED_SECRETS:
        raise OpsError(f"unknown secret '{name}'; rotatable: {', '.join(GENERATED_SECRETS)}")
    if current is None:
        current = int(deployer.get_config(f"rotation.{name}") or 0)
    deployer.set_config(f"rotation.{name}", current + 1)
    return _run(deployer, audit, "rotate", progress, f"{name} -> generation {current + 1}")


def retire_standby_login(postgres: Any, generation: int) -> str:
    """After a rotation's `pulumi up` (old containers gone): the app login the previous
    version used may no longer log in, and its remaining sessions end. The next rotation
    gives it a new password and LOGIN again (infra/services/rotation.py)."""
    standby = APP_USERS[(app_slot({ROTATION_KEY: generation}) + 1) % len(APP_USERS)]
    postgres.query(
        f"DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{standby}') "
        f'THEN ALTER ROLE "{standby}" NOLOGIN; END IF; END$$;\n'
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{standby}';"
    )
    return standby


def retire_old_redis_passwords(redis: Any) -> int:
    """After a rotation's `pulumi up` (old containers gone): drop every password of Redis's
    `default` user but the newest, the one the running version uses. Redis keeps a user's
    passwords (as SHA-256) in the order they were added (infra/services/rotation.py)."""
    lines = [line.strip() for line in redis.cmd("ACL", "GETUSER", "default").splitlines()]
    hashes = lines[lines.index("passwords") + 1 :] if "passwords" in lines else []
    hashes = [h for h in itertools.takewhile(lambda x: re.fullmatch(r"[0-9a-f]{64}", x), hashes)]
    for old in hashes[:-1]:
        redis.cmd("ACL", "SETUSER", "default", f"!{old}")
    if hashes[:-1]:
        redis.cmd("ACL", "SAVE")
    return len(hashes[:-1])


def retire_old_object_store_keys(store: Container, implementation: str, current: str, base: str) -> list[str]:
    """After a rotation's `pulumi up` (old containers gone): remove every app key of the
    object store but `current`, the one the running version uses (infra/specs/objectstore.py).
    Refuses, changing nothing, if `current` is not configured there."""
    if implementation not in KEEP_ONLY:
        raise OpsError(f"unknown object store implementation {implementation!r}")
    out = run(
        store.argv(["sh", "-c", KEEP_ONLY[implementation]]),
        what=f"removing old object-store keys in {store.describe()}",
        input=f"{current} {base}\n".encode(),
        timeout=300,
    )
    return out.decode().split()
