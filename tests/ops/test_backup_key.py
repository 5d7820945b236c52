"""Backups use the backup key, not the app's: ops hands it to the command it runs in the
API container as `docker exec -e NAME` (the value only in the docker client's
environment, never on a command line), and reads it from the stack's secret output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import load_stack_file
from infra.specs.objectstore import BACKUP_KEY_SECRET, backup_access_key
from infra.topology import plan
from ops import access
from ops.access import Container, OpsError, Results, docker_target, url_target
from ops.cli import backup_secret

ROOT = Path(__file__).resolve().parents[2]
SECRET = "backup-secret-VALUE-7"


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> bytes:
        calls.append({"argv": argv, "env": kwargs.get("env")})
        return b'[{"key": "s/1/manifest.json", "size": 2}]'

    monkeypatch.setattr(access, "run", fake_run)
    return calls


def test_docker_backups_pass_the_backup_key_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture(monkeypatch)
    settings = load_stack_file(ROOT / "Pulumi.phase2.yaml")
    monkeypatch.setattr(access, "find_container", lambda slot, stack, role, host=None: Container(slot, host))
    target = docker_target(plan(settings), settings, backup_secret=lambda: SECRET)
    target.backups.list_objects("backups", "s/")
    target.results.stats()
    backups, results = calls
    argv = backups["argv"]
    assert argv[:2] == ["docker", "exec"] and SECRET not in " ".join(argv)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-e"] == ["S3_ACCESS_KEY", "S3_SECRET_KEY"]
    assert backups["env"]["S3_ACCESS_KEY"] == backup_access_key(settings.object_store.access_key)
    assert backups["env"]["S3_SECRET_KEY"] == SECRET
    # the app's own result storage keeps the container's (app) key
    assert "-e" not in results["argv"] and results["env"] is None


def test_backup_key_comes_from_the_stack_outputs_with_a_clear_error_when_missing() -> None:
    assert backup_secret(lambda: {BACKUP_KEY_SECRET: SECRET}, "s1")() == SECRET
    with pytest.raises(OpsError, match=f"stack s1 has no {BACKUP_KEY_SECRET} output yet"):
        backup_secret(dict, "s1")()


def test_url_mode_uses_the_backup_key_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture(monkeypatch)
    env = {"DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://h", "S3_ENDPOINT_URL": "http://s3"}
    env |= {"S3_ACCESS_KEY": "app", "S3_SECRET_KEY": "app-secret"}
    url_target({**env, "S3_BACKUP_ACCESS_KEY": "bk", "S3_BACKUP_SECRET_KEY": SECRET}).backups.list_objects("backups")
    url_target(env).backups.list_objects("backups")
    given, default = calls
    assert (given["env"]["S3_ACCESS_KEY"], given["env"]["S3_SECRET_KEY"]) == ("bk", SECRET)
    assert SECRET not in " ".join(given["argv"])
    assert (default["env"]["S3_ACCESS_KEY"], default["env"]["S3_SECRET_KEY"]) == ("app", "app-secret")


def test_results_without_a_login_keep_the_place_environment() -> None:
    assert Results(Container("c")).environ() is None
