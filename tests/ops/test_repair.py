"""ops/repair.py on recorded state: what a killed `pulumi up` leaves, and what is done about
it (the real kill-and-converge runs in tests/reliability on a deployed stack)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ops import repair as repair_mod
from ops.access import OpsError
from ops.repair import repair, stale_locks

STACK = "phase1"
PROVIDER = "urn:pulumi:phase1::selextract::pulumi:providers:docker::docker-app-01"


def _pending(kind: str, name: str) -> dict[str, Any]:
    return {
        "type": "creating",
        "resource": {
            "urn": f"urn:pulumi:phase1::selextract::{kind}::{name}",
            "type": kind,
            "inputs": {"name": name},
            "provider": f"{PROVIDER}::1234",
        },
    }


def _export(pending: list[dict[str, Any]]) -> str:
    provider = {"urn": PROVIDER, "type": "pulumi:providers:docker", "inputs": {"host": "ssh://deploy@10.0.0.2"}}
    return json.dumps({"version": 3, "deployment": {"resources": [provider], "pending_operations": pending}})


class FakePulumi:
    def __init__(self, export: str) -> None:
        self.export = export
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        out = self.export if args[:2] == ("stack", "export") else ""
        return subprocess.CompletedProcess(args, 0, out, "")


def _lock(backend: Path, content: dict[str, Any] | str) -> Path:
    path = backend / ".pulumi" / "locks" / "organization" / "selextract" / STACK / "abc.json"
    path.parent.mkdir(parents=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture
def docker_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, tuple[str, ...]]]:
    calls: list[tuple[str | None, tuple[str, ...]]] = []

    def fake(host: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        calls.append((host, args))  # every object the killed run created exists
        return subprocess.CompletedProcess(args, 0, "net-id-1\n" if args[0] == "network" else "", "")

    monkeypatch.setattr(repair_mod, "_docker", fake)
    return calls


def test_nothing_pending_and_no_lock_changes_nothing(tmp_path: Path, docker_calls: list[Any]) -> None:
    pulumi = FakePulumi(_export([]))
    report = repair(STACK, pulumi, f"file://{tmp_path}", progress=lambda _: None)
    assert not report.changed
    assert pulumi.calls == [("stack", "export", "--stack", STACK)]
    assert docker_calls == []


def test_pending_creates_are_imported_removed_or_cleared(tmp_path: Path, docker_calls: list[Any]) -> None:
    pending = [
        _pending("docker:index/volume:Volume", "phase1-db-01-postgres"),
        _pending("docker:index/network:Network", "phase1-net"),
        _pending("docker:index/container:Container", "phase1-db-01-postgres-1"),
        _pending("random:index/randomPassword:RandomPassword", "postgresPassword"),
    ]
    pulumi = FakePulumi(_export(pending))
    report = repair(STACK, pulumi, f"file://{tmp_path}", progress=lambda _: None)
    assert report.imported == ["phase1-db-01-postgres", "phase1-net"]
    assert report.removed == ["phase1-db-01-postgres-1"]
    assert report.cleared == ["postgresPassword"]
    # docker commands go to the host of the resource's provider
    assert ("ssh://deploy@10.0.0.2", ("rm", "-f", "phase1-db-01-postgres-1")) in docker_calls
    refreshes = [c for c in pulumi.calls if c[0] == "refresh"]
    assert refreshes[0][-6:] == (
        "--import-pending-creates",
        pending[0]["resource"]["urn"],
        "phase1-db-01-postgres",
        "--import-pending-creates",
        pending[1]["resource"]["urn"],
        "net-id-1",
    )
    assert refreshes[1][-1] == "--clear-pending-creates"


def test_a_dead_runs_lock_is_removed(tmp_path: Path, docker_calls: list[Any]) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = _lock(tmp_path, {"pid": dead.pid, "hostname": socket.gethostname(), "timestamp": "2026-11-25T10:00:00Z"})
    report = repair(STACK, FakePulumi(_export([])), f"file://{tmp_path}", progress=lambda _: None)
    assert report.stale_locks == ["abc.json"] and not lock.exists()


def test_a_live_or_foreign_lock_is_kept_and_named(tmp_path: Path) -> None:
    lock = _lock(tmp_path, {"pid": os.getpid(), "hostname": "ci-runner-7", "timestamp": "2026-11-25T10:00:00Z"})
    with pytest.raises(OpsError, match=r"locked by a running update .*ci-runner-7"):
        repair(STACK, FakePulumi(_export([])), f"file://{tmp_path}", progress=lambda _: None)
    assert lock.exists()
    stale, held = stale_locks(f"file://{tmp_path}", STACK)
    assert stale == [] and len(held) == 1


def test_a_lock_file_cut_off_mid_write_is_stale(tmp_path: Path) -> None:
    lock = _lock(tmp_path, '{"pid": 12')
    assert stale_locks(f"file://{tmp_path}", STACK) == ([lock], [])


def test_a_starting_container_finishes_its_first_start_before_it_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database removed mid-initdb would leave a volume that looks initialised."""
    states = iter(["running starting", "running starting", "running healthy"])
    calls: list[tuple[str, ...]] = []

    def fake(host: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        out = next(states) if args[0] == "inspect" else ""
        return subprocess.CompletedProcess(args, 0, out, "")

    monkeypatch.setattr(repair_mod, "_docker", fake)
    monkeypatch.setattr(repair_mod.time, "sleep", lambda _: None)
    pending = [_pending("docker:index/container:Container", "phase1-db-01-postgres-1")]
    report = repair(STACK, FakePulumi(_export(pending)), f"file://{tmp_path}", progress=lambda _: None)
    assert report.removed == ["phase1-db-01-postgres-1"]
    assert [c[0] for c in calls] == ["inspect", "inspect", "inspect", "stop", "rm"]
