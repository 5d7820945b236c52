"""Deploys operators trust: a new app version under steady load sees no failed request and
loses no task, then the previous version comes back the same way (rollback by pinning the
image tag, no rebuild). Deploy, rollback and rotation go through the operator's commands
(`selextract deploy` / `rollback` / `secrets rotate`), so the audit log that names the
previous version is the real one. Also: two deploys of one stack cannot run at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.config import load_stack_file
from ops.access import Container, Postgres, Redis
from ops.release import retire_old_redis_passwords, retire_standby_login
from tests.e2e.load import SteadyLoad
from tests.e2e.stack import LocalStack, docker, remove_leftovers, require_toolchain, stack_resources
from tests.e2e.test_local_deploy import _api_key, _wait_ready, _wait_task

pytestmark = [pytest.mark.e2e, pytest.mark.docker]
NAME = "e2e-zdt"
HTTP, HTTPS, PROM = 16080, 16443, 16090


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_toolchain()
    remove_leftovers(NAME)
    s = LocalStack.create(
        NAME,
        tmp_path_factory.mktemp(NAME),
        {
            "selextract:phase": 0,
            "selextract:local": {"httpPort": HTTP, "httpsPort": HTTPS, "monitoringPort": PROM},
            "selextract:api": {"servers": 2, "containersPerServer": 2, "uvicornWorkers": 1},
            "selextract:workers": {
                "servers": 1,
                "containersPerServer": 1,
                "concurrency": 2,
                "cpus": 1,
                "memoryMb": 768,
            },
            "selextract:scraper": {"allowedNetworks": ["172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8"]},
        },
    )
    try:
        deployed = _selextract(s, "deploy", "--format", "json")  # the first entry of the audit log
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        docker(
            "run",
            "-d",
            "--name",
            f"{NAME}-testsite",
            "--network",
            f"{NAME}-net",
            "--label",
            f"selextract.stack={NAME}",
            "selextract/testsite:1",
        )
        yield s
    finally:
        docker("rm", "-f", f"{NAME}-testsite", check=False)
        s.destroy()
        left = stack_resources(NAME)
        remove_leftovers(NAME)
        assert left == {"containers": [], "networks": [], "volumes": []}


def _deploy_under_load(
    stack: LocalStack, config: tuple[str, str] | None = None, command: tuple[str, ...] | None = None
) -> tuple[SteadyLoad, dict]:
    """A config change and `pulumi up`, or an operator's `selextract` command, under load."""
    client = httpx.Client(base_url=f"https://127.0.0.1:{HTTPS}", verify=False, timeout=30)
    _wait_ready(client)
    headers = {"Authorization": f"Bearer {_api_key(stack, 'zdt@example.com')}"}
    site = f"http://{NAME}-testsite:8080"
    first = client.post(
        "/api/v1/tasks", headers=headers, json={"urls": [f"{site}/products.html"], "extract": {"t": "h1::text"}}
    ).json()
    slow = client.post(
        "/api/v1/tasks",
        headers=headers,
        json={"urls": [f"{site}/slow?ms=4000", f"{site}/table.html"], "extract": {"t": "title::text"}},
    )
    assert slow.status_code == 201, slow.text
    if config is not None:
        stack.pulumi("config", "set", "--stack", NAME, *config)
    with SteadyLoad(f"https://127.0.0.1:{HTTPS}", headers, ("/health", f"/api/v1/tasks/{first['id']}")) as load:
        time.sleep(2)
        if command is None:
            stack.up()
        else:
            proc = _selextract(stack, *command)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        time.sleep(3)
    # every task accepted before and during the deploy completes
    for task_id in (first["id"], slow.json()["id"]):
        assert _wait_task(client, headers, task_id)["state"] == "completed"
    outputs = stack.outputs()
    client.close()
    return load, outputs


def _running(role: str) -> list[str]:
    """Names of the stack's running containers of one role."""
    labels = ("--filter", f"label=selextract.stack={NAME}", "--filter", f"label=selextract.role={role}")
    return docker("ps", "--format", "{{.Names}}", *labels).stdout.split()


def test_new_version_under_load_has_no_failed_request(stack: LocalStack) -> None:
    before = stack.outputs()["version"]["tag"]
    load, outputs = _deploy_under_load(stack, ("selextract:release", "r2"), ("deploy",))
    assert sum(load.results.values()) > 100, load.results
    assert load.failures == [], f"{len(load.failures)} failed of {sum(load.results.values())}: {load.failures[:5]}"
    assert outputs["version"]["tag"] == f"{before}-r2"
    running = _running("api")
    assert running and all(f"-{before}-r2-g" in n for n in running), running


def test_rollback_to_previous_version_under_load(stack: LocalStack) -> None:
    current = stack.outputs()["version"]["tag"]
    previous = current.removesuffix("-r2")
    load, outputs = _deploy_under_load(stack, command=("rollback",))  # the previous version from the audit log
    assert load.failures == [], load.failures[:5]
    assert outputs["version"] == {"tag": previous, "commit": "pinned"}
    audit = (stack.workdir / "ops-state" / "audit" / f"{NAME}.jsonl").read_text().splitlines()
    assert [(e["action"], e["version"], e["result"]) for e in map(json.loads, audit)] == [
        ("deploy", previous, "succeeded"),
        ("deploy", current, "succeeded"),
        ("rollback", previous, "succeeded"),
    ]


def test_second_concurrent_deploy_is_refused_by_the_state_lock(stack: LocalStack) -> None:
    stack.pulumi("config", "set", "--stack", NAME, "selextract:release", "r3")
    first = subprocess.Popen(
        [str(stack.env["PATH"].split(":")[0] + "/pulumi"), "up", "--yes", "--stack", NAME, "--non-interactive"],
        cwd=stack.workdir,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(4)  # the first update holds the lock while it builds and replaces containers
        second = stack.pulumi("up", "--yes", "--stack", NAME, check=False)
        assert second.returncode != 0
        assert "locked" in (second.stdout + second.stderr).lower()
    finally:
        out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:]


def _env_of(container_filter: str, key: str) -> str:
    cid = docker("ps", "-q", "--filter", f"label=selextract.stack={NAME}", "--filter", container_filter).stdout.split()[
        0
    ]
    env = docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", cid).stdout
    return next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith(f"{key}="))


def _psql_ok(user: str, password: str) -> bool:
    probe = docker(
        "exec",
        "-e",
        f"PGPASSWORD={password}",
        f"{NAME}-app-01-postgres-1",
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        user,
        "-d",
        "selextract",
        "-tAc",
        "select 1",
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "1"


def _login(container_filter: str, key: str) -> tuple[str, str]:
    """(user, password) of the database URL in a container's environment."""
    credentials = _env_of(container_filter, key).split("://", 1)[1].split("@", 1)[0]
    user, password = credentials.split(":", 1)
    return user, password


def test_postgres_password_rotation_under_load(stack: LocalStack) -> None:
    """The new version logs in as the other app role with a fresh password, the old one
    keeps its login until it is gone: no failed request. Then the old login is retired
    (what `selextract secrets rotate` does after the deploy) and the owner's old password
    stopped working at once."""
    old = _login("label=selextract.role=api", "DATABASE_URL")
    old_owner = _login("name=postgres-exporter", "DATA_SOURCE_NAME")
    assert _psql_ok(*old) and _psql_ok(*old_owner)
    load, _ = _deploy_under_load(stack, ("rotation:postgresPassword", "1"))
    new = _login("label=selextract.role=api", "DATABASE_URL")
    new_owner = _login("name=postgres-exporter", "DATA_SOURCE_NAME")
    assert {old[0], new[0]} == {"selextract_app_0", "selextract_app_1"}
    assert new[1] != old[1] and len(new[1]) == 32 and new_owner[1] != old_owner[1]
    assert load.failures == [], f"{len(load.failures)} failed of {sum(load.results.values())}: {load.failures[:5]}"
    assert _psql_ok(*new), "the app's new login works"
    assert not _psql_ok(*old_owner), "the owner's old password stopped working"
    assert _psql_ok(*old), "the previous version's login stays usable until it is retired"
    retired = retire_standby_login(Postgres(Container(f"{NAME}-app-01-postgres-1")), generation=1)
    assert retired == old[0]
    assert not _psql_ok(*old), "the old login stopped working"
    assert _psql_ok(*new)


def _redis_ok(password: str) -> bool:
    probe = docker(
        "exec", f"{NAME}-app-01-redis-1", "redis-cli", "-a", password, "--no-auth-warning", "ping", check=False
    )
    return probe.stdout.strip() == "PONG"


def test_redis_password_rotation_under_load(stack: LocalStack) -> None:
    """The new password is added to the running Redis before the new version starts, the
    old version keeps its own until it is gone: no failed request, Redis not restarted.
    Then the older password is dropped (what `selextract secrets rotate` does after it)."""

    def current() -> str:
        return _env_of("label=selextract.role=api", "REDIS_URL").split("://:", 1)[1].split("@", 1)[0]

    redis_started = docker("inspect", "-f", "{{.State.StartedAt}}", f"{NAME}-app-01-redis-1").stdout
    old = current()
    load, _ = _deploy_under_load(stack, ("rotation:redisPassword", "1"))
    new = current()
    assert new != old and len(new) == 32
    assert load.failures == [], f"{len(load.failures)} failed of {sum(load.results.values())}: {load.failures[:5]}"
    assert docker("inspect", "-f", "{{.State.StartedAt}}", f"{NAME}-app-01-redis-1").stdout == redis_started
    assert _redis_ok(new) and _redis_ok(old), "both work until the old one is dropped"
    assert retire_old_redis_passwords(Redis(Container(f"{NAME}-app-01-redis-1"))) == 1
    assert _redis_ok(new) and not _redis_ok(old)
    docker("restart", f"{NAME}-app-01-redis-1")  # the ACL file on the volume is the truth, not the env
    deadline = time.monotonic() + 30
    while not _redis_ok(new) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _redis_ok(new) and not _redis_ok(old)


def _selextract(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's command, as a process, against this stack's project dir and state."""
    env = {
        **stack.env,
        "SELEXTRACT_PROJECT_DIR": str(stack.workdir),
        "SELEXTRACT_STATE": str(stack.workdir / "ops-state"),
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "selextract"), "--stack", NAME, *args],
        cwd=stack.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_secrets_rotate_command_deploys_and_retires_the_old_credentials(stack: LocalStack) -> None:
    """`selextract secrets rotate` end to end, for the two stores this layout has: bump the
    keeper, `pulumi up`, then retire the old login / password. Afterwards only the new
    credentials work, the service is ready, and no password is printed or audited."""
    old_pg = _login("label=selextract.role=api", "DATABASE_URL")
    old_redis = _env_of("label=selextract.role=api", "REDIS_URL").split("://:", 1)[1].split("@", 1)[0]

    def generation() -> int:  # as the program sees it: `rotation:` and `selextract:rotation.` both count
        return load_stack_file(stack.workdir / f"Pulumi.{NAME}.yaml").rotation.get("postgresPassword", 0)

    before = generation()
    outputs, reports = [], []
    for name in ("postgresPassword", "redisPassword"):
        proc = _selextract(stack, "secrets", "rotate", name, "--format", "json")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outputs.append(proc.stdout + proc.stderr)
        reports.append(json.loads(proc.stdout))
    assert generation() == before + 1
    new_pg = _login("label=selextract.role=api", "DATABASE_URL")
    new_redis = _env_of("label=selextract.role=api", "REDIS_URL").split("://:", 1)[1].split("@", 1)[0]
    assert new_pg[0] != old_pg[0] and new_redis != old_redis
    assert reports[0]["retired"] == f"retired the previous app database login {old_pg[0]}"
    assert reports[1]["retired"] == "dropped 1 earlier Redis password(s)"
    assert reports[0]["version"] == stack.outputs()["version"], reports[0]
    assert _psql_ok(*new_pg) and not _psql_ok(*old_pg)
    assert _redis_ok(new_redis) and not _redis_ok(old_redis)
    client = httpx.Client(base_url=f"https://127.0.0.1:{HTTPS}", verify=False, timeout=30)
    _wait_ready(client)
    client.close()
    audit = (stack.workdir / "ops-state" / "audit" / f"{NAME}.jsonl").read_text()
    assert [json.loads(line)["action"] for line in audit.splitlines()][-2:] == ["rotate", "rotate"]
    for secret in (old_pg[1], new_pg[1], old_redis, new_redis):
        assert all(secret not in text for text in (*outputs, audit))


def _workers_check(stack: LocalStack, timeout: float = 90) -> str:
    """The `workers` line of `selextract health`, once it is ok (Celery answers the ping)."""
    deadline = time.monotonic() + timeout
    while True:
        proc = _selextract(stack, "health", "--critical-only", "--no-alert", "--format", "json")
        check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "workers")
        if check["status"] == "ok" or time.monotonic() > deadline:
            return f"{check['status']}: {check['detail']}"
        time.sleep(3)


def test_workers_scale_command_resizes_the_pool_through_pulumi(stack: LocalStack) -> None:
    """`selextract workers scale N` writes the stack config and runs `pulumi up`: the pool
    has N containers, Celery sees N workers, and a preview afterwards has nothing to do
    (the config the command wrote is the one Pulumi reads)."""
    assert len(_running("worker")) == 1
    for n in (2, 1):
        proc = _selextract(stack, "workers", "scale", str(n), "--yes", "--format", "json")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        data = json.loads(proc.stdout)
        assert data["applied"] and data["changes"] == {"workers.containersPerServer": n}, data
        assert len(_running("worker")) == n
        assert _workers_check(stack).startswith(f"ok: {n} worker(s) answered"), n
        assert stack.preview_no_changes().returncode == 0
    again = json.loads(_selextract(stack, "workers", "scale", "1", "--format", "json").stdout)
    assert again["applied"] is False and again["note"] == "the stack already runs 1 worker containers"
