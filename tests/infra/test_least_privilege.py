"""Least privilege in what the deployment hands out: workers get only the secrets they
read, and rotation steps never put a secret on a command line (`ps` inside the container
or on the host would show it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.specs.objectstore import MINIO_ADD_KEY, MINIO_KEEP_ONLY, SEAWEED_ADD_KEY, minio_policy
from infra.specs.redis import ADD_PASSWORD, ADMIN_PASSWORD_FILE
from infra.topology import Role, plan
from ops.access import REDIS_CLI_IN_CONTAINER
from tests.infra.pulumi_harness import ROOT, run_program

STACKS = sorted(p.name for p in ROOT.glob("Pulumi.*.yaml"))
# the external logins that only the API uses (console sign-in, billing webhooks)
SECRETS = {"googleClientSecret": "oidc-client-secret-x", "lemonSqueezySigningSecret": "ls-signing-secret-x"}
API_ONLY = {"SECRET_KEY", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "LEMONSQUEEZY_SIGNING_SECRET"}
API_ONLY_SECRETS = {"appSecretKey", *SECRETS}


def with_everything_on(tmp_path: Path, stack_file: str) -> Path:
    """`stack_file` with sign-in and billing configured, their secrets set as `--secret` would."""
    doc = yaml.safe_load((ROOT / stack_file).read_text())
    doc["config"] |= {
        "selextract:oidc": {"clientId": "abc.apps.googleusercontent.com"},
        "selextract:billing": {"enabled": True},
        **{f"selextract:{name}": {"secure": "v1:placeholder"} for name in SECRETS},
    }
    path = tmp_path / stack_file
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("stack_file", STACKS)
def test_workers_get_no_secret_they_never_read(stack_file: str, tmp_path: Path) -> None:
    settings = load_stack_file(with_everything_on(tmp_path, stack_file), secret_values=SECRETS)
    specs = build_specs(plan(settings), settings)
    workers = [s for s in specs if s.role == Role.WORKER and "DATABASE_URL" in s.env]
    apis = [s for s in specs if s.role == Role.API and "DATABASE_URL" in s.env]
    assert workers and apis
    for worker in workers:
        assert not API_ONLY & set(worker.env), worker.name
        assert not API_ONLY_SECRETS & set(worker.secrets), worker.name
        assert {"DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "SCRAPER_CONCURRENCY"} <= set(worker.env)
    for api in apis:  # the API still signs sessions and checks sign-ins and billing events
        assert set(api.env) >= API_ONLY, api.name
    # the one-shot bucket step needs the object store only
    for step in (s for s in specs if s.one_shot and "S3_ACCESS_KEY" in s.env):
        assert not API_ONLY & set(step.env), step.name


def test_worker_containers_under_the_pulumi_mocks_carry_none_of_the_api_secrets(tmp_path: Path) -> None:
    run = run_program(with_everything_on(tmp_path, "Pulumi.phase2.yaml"), secret_values=SECRETS)
    containers = run.of_type("docker:index/container:Container")
    workers = [c for c in containers if re.search(r"-worker-\d+$", c.name)]
    apis = [c for c in containers if re.search(r"-api-\d+$", c.name)]
    assert workers and apis
    for worker in workers:
        assert not API_ONLY & {e.split("=", 1)[0] for e in worker.inputs["envs"]}, worker.name
        assert not any(v in e for e in worker.inputs["envs"] for v in SECRETS.values())
    for api in apis:
        assert {e.split("=", 1)[0] for e in api.inputs["envs"]} >= API_ONLY
        assert any(SECRETS["lemonSqueezySigningSecret"] in e for e in api.inputs["envs"])


# --------------------------------------------------- secrets never on a command line

SECRET = "s3cr3t-VALUE-42"


def _stub_bin(tmp: Path, log: Path, scripts: dict[str, str]) -> dict[str, str]:
    """A PATH of stub commands that log their argv (one line per call) and then act."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> {log}\n{body}\n')
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp)}


def test_minio_key_sync_passes_the_secret_on_stdin_only(tmp_path: Path) -> None:
    log = tmp_path / "argv.log"
    env = _stub_bin(
        tmp_path,
        log,
        {
            # `mc admin user add ALIAS KEY` reads the secret from stdin when it is not an argument
            "mc": 'case "$*" in "admin user add self selextract-3") read -r sk; '
            f'[ "$sk" = "{SECRET}" ] || exit 3; echo added >> {log};; esac\n'
            'case "$*" in "admin user info"*) echo "PolicyName: readwrite";; esac\n'
            f'case "$*" in "admin policy create self selextract-3 "*) cp "$6" {tmp_path}/policy.json;; esac\nexit 0',
        },
    )
    env |= {"MINIO_ROOT_USER": "selextract-admin", "MINIO_ROOT_PASSWORD": "root-pw"}
    done = subprocess.run(
        ["sh", "-c", MINIO_ADD_KEY],
        input=f"selextract-3 {SECRET} {minio_policy(['task-results', 'logs'])}\n",
        env=env,
        text=True,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text()
    assert "added" in calls and "mc admin user add self selextract-3" in calls
    # its own policy (task-results and logs only), not readwrite (every bucket)
    assert "mc admin policy attach self selextract-3 --user selextract-3" in calls
    assert "mc admin policy attach self readwrite" not in calls
    assert json.loads((tmp_path / "policy.json").read_text()) == json.loads(minio_policy(["task-results", "logs"]))
    assert SECRET not in calls and "root-pw" not in calls
    keep = subprocess.run(
        ["sh", "-c", MINIO_KEEP_ONLY], input="selextract-3 selextract\n", env=env, text=True, capture_output=True
    )
    assert keep.returncode == 0, keep.stderr
    assert "root-pw" not in log.read_text()


def test_seaweedfs_key_sync_handles_the_secret_in_shell_builtins_only() -> None:
    """Its script is run inside the node (kill -HUP 1 is not for this machine), so it is
    checked as data: the secret variable appears only in `read` and `printf` (builtins)."""
    lines = [line.strip() for line in SEAWEED_ADD_KEY.splitlines() if "$sk" in line or "${sk" in line]
    assert lines and all(line.startswith(("read ", "printf ", "{ grep")) for line in lines), lines
    for line in lines:
        if line.startswith("{ grep"):  # the one pipeline: grep gets the access key, printf the secret
            grep, _, rest = line.partition(";")
            assert "$sk" not in grep and rest.strip().startswith("printf ")


@pytest.fixture
def scratch_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    server = shutil.which("redis-server")
    if not server or not shutil.which("redis-cli"):
        pytest.skip("needs redis-server and redis-cli (Debian's redis-server package)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    admin = "admin-pw-1"
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default on >old-pw ~* &* +@all\nuser selextract-admin on >{admin} ~* &* +@all\n")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--aclfile",
            str(acl),
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            ping = subprocess.run(
                [
                    "redis-cli",
                    "-p",
                    str(port),
                    "--user",
                    "selextract-admin",
                    "--pass",
                    admin,
                    "--no-auth-warning",
                    "PING",
                ],
                capture_output=True,
                text=True,
            )
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        yield port, admin
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_password_sync_passes_the_password_on_stdin_only(tmp_path: Path, scratch_redis: tuple[int, str]) -> None:
    port, admin = scratch_redis
    log = tmp_path / "argv.log"
    real = shutil.which("redis-cli")
    env = _stub_bin(tmp_path, log, {"redis-cli": f'exec {real} -p {port} "$@"', "cat": f"echo {admin}"})
    script = ADD_PASSWORD.replace(ADMIN_PASSWORD_FILE, str(tmp_path / "admin-password"))
    done = subprocess.run(["sh", "-c", script], input=f"{SECRET}\n", env=env, text=True, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text()
    assert "ACL SETUSER default on" in calls and "ACL SAVE" in calls
    assert SECRET not in calls
    for password in ("old-pw", SECRET):  # added beside the old one
        auth = subprocess.run(
            [real, "-p", str(port), "--no-auth-warning", "-a", password, "PING"], capture_output=True, text=True
        )
        assert auth.stdout.strip() == "PONG", (password, auth.stdout)


def test_ops_redis_cli_in_a_container_never_takes_the_password_as_an_argument(tmp_path: Path) -> None:
    """Without the admin file (older volumes) the container's REDIS_PASSWORD is used: through
    REDISCLI_AUTH, not `-a`."""
    log = tmp_path / "argv.log"
    env = _stub_bin(tmp_path, log, {"redis-cli": f'printf "auth=%s\\n" "$REDISCLI_AUTH" >> {log}'})
    script = REDIS_CLI_IN_CONTAINER.replace(ADMIN_PASSWORD_FILE, str(tmp_path / "absent"))
    done = subprocess.run(
        ["sh", "-c", script, "redis-cli", "PING"], env={**env, "REDIS_PASSWORD": SECRET}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    argv, auth = log.read_text().splitlines()
    assert argv.startswith("redis-cli ") and "PING" in argv and SECRET not in argv
    assert auth == f"auth={SECRET}"
    assert not os.environ.get("REDISCLI_AUTH")
