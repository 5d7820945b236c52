"""Deploy / rollback / rotate logic and the audit trail. The deployer here stands in for
Pulumi only (config + up); the real zero-downtime path, the pin and the lock are
exercised against real deploys in tests/e2e/test_zero_downtime.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import load_settings
from ops.access import OpsError
from ops.release import AuditLog, deploy, rollback, rotate_secret


class StandInDeployer:
    """Pulumi's role: holds stack config; `up` runs the pinned tag or builds the tree."""

    def __init__(self, stack: str = "t", tree_version: str = "v1") -> None:
        self.stack, self.tree_version, self.config, self.ups = stack, tree_version, {}, 0
        self.fail_next = False
        self._outputs: dict[str, Any] = {}

    def get_config(self, key: str) -> Any:
        return self.config.get(key)

    def set_config(self, key: str, value: Any) -> None:
        self.config[key] = value

    def remove_config(self, key: str) -> None:
        self.config.pop(key, None)

    def up(self, progress: Any) -> dict[str, Any]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("pulumi up failed")
        self.ups += 1
        tag = self.config.get("imageTag") or self.tree_version
        self._outputs = {"version": {"tag": tag, "commit": "pinned" if "imageTag" in self.config else "c0ffee"}}
        return {"result": "succeeded", "changes": {"update": 2}}  # what PulumiDeployer.up answers

    def outputs(self) -> dict[str, Any]:
        return self._outputs


def test_rollback_goes_to_the_previous_successful_version(tmp_path: Path) -> None:
    audit, d = AuditLog(tmp_path / "audit.jsonl"), StandInDeployer()
    deploy(d, audit, print)
    d.tree_version = "v2"
    deploy(d, audit, print)
    d.tree_version = "v3"
    d.fail_next = True
    with pytest.raises(RuntimeError):
        deploy(d, audit, print)  # a failed deploy is logged but never a rollback target
    assert [(e.action, e.version, e.result) for e in audit.entries()] == [
        ("deploy", "v1", "succeeded"),
        ("deploy", "v2", "succeeded"),
        ("deploy", None, "failed"),
    ]
    out = rollback(d, audit, print)
    assert out["version"] == {"tag": "v1", "commit": "pinned"} and d.config["imageTag"] == "v1"
    assert audit.entries()[-1].detail == "from v2 to v1"
    # deploying again drops the pin and runs the tree
    assert deploy(d, audit, print)["version"]["tag"] == "v3" and "imageTag" not in d.config


def test_rollback_to_a_named_version_and_refusals(tmp_path: Path) -> None:
    audit, d = AuditLog(tmp_path / "audit.jsonl"), StandInDeployer()
    with pytest.raises(OpsError, match="no earlier successful deploy"):
        rollback(d, audit, print)
    deploy(d, audit, print)
    with pytest.raises(OpsError, match="already running"):
        rollback(d, audit, print, to="v1")
    assert rollback(d, audit, print, to="v0")["version"]["tag"] == "v0"


def test_rotate_bumps_the_keeper_the_program_reads(tmp_path: Path) -> None:
    audit, d = AuditLog(tmp_path / "audit.jsonl"), StandInDeployer()
    rotate_secret(d, audit, "postgresPassword", print)
    rotate_secret(d, audit, "postgresPassword", print)
    assert d.config == {"rotation.postgresPassword": 2}
    settings = load_settings({"selextract:target": "local", "selextract:rotation": {"postgresPassword": 2}}, stack="t")
    assert settings.rotation == {"postgresPassword": 2}
    # `pulumi config set rotation:postgresPassword 1` earlier: the command's bump still wins
    both = {
        "selextract:target": "local",
        "selextract:rotation": {"postgresPassword": 2},
        "rotation:postgresPassword": 1,
    }
    assert load_settings(both, stack="t").rotation == {"postgresPassword": 2}
    assert load_settings({**both, "rotation:postgresPassword": 5}, stack="t").rotation == {"postgresPassword": 5}
    rotate_secret(d, audit, "postgresPassword", print, current=5)
    assert d.config == {"rotation.postgresPassword": 6}
    with pytest.raises(OpsError, match="unknown secret 'hcloudToken'"):
        rotate_secret(d, audit, "hcloudToken", print)
    assert [e.action for e in audit.entries()] == ["rotate", "rotate", "rotate"]


def test_retiring_redis_passwords_keeps_only_the_newest() -> None:
    from ops.release import retire_old_redis_passwords

    old, older, new = "a" * 64, "b" * 64, "c" * 64

    class FakeRedis:
        def __init__(self) -> None:
            self.calls: list[tuple[str, ...]] = []

        def cmd(self, *args: str) -> str:
            self.calls.append(args)
            if args[:2] == ("ACL", "GETUSER"):  # redis-cli's raw output of the nested reply
                return "\n".join(["flags", "on", "passwords", older, old, new, "commands", "+@all", "keys", "~*"])
            return "OK"

    redis = FakeRedis()
    assert retire_old_redis_passwords(redis) == 2
    assert redis.calls[1:] == [
        ("ACL", "SETUSER", "default", f"!{older}"),
        ("ACL", "SETUSER", "default", f"!{old}"),
        ("ACL", "SAVE"),
    ]
    single = FakeRedis()
    single.cmd = lambda *a: "\n".join(["flags", "on", "passwords", new, "commands"]) if a[1] == "GETUSER" else "OK"  # type: ignore[method-assign]
    assert retire_old_redis_passwords(single) == 0
