"""End to end with the real Pulumi CLI on this machine's Docker engine: a throwaway stack
(its own work dir, state backend and ports) deployed in phase 0 and seeded, then
`selextract migrate --from 0 --to 1` (Postgres and Redis move to their own hosts: dump
and restore through the pre-migration backup) and `selextract migrate --from 1 --to 2`
where the new phase's workers die right after `pulumi up`, so the health gate fails and
the migration rolls back to phase 1 with every row and result file in place.

Nothing is faked: the deployer is `PulumiDeployer`; the only addition is the fault (a
`docker kill` of the new workers after the real `pulumi up`)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from infra.topology import Role, plan
from ops import cli
from ops.access import Target, docker_target, stack_containers
from ops.deploy import PulumiDeployer
from ops.stack import cache_dir, load_stack, project_dir
from tests.e2e.stack import published_port

pytestmark = [pytest.mark.e2e, pytest.mark.docker]
runner = CliRunner()
STACK = "e2e-ops"
PASSPHRASE = "selextract-e2e-ops"
SEED_SQL = """
INSERT INTO plans (id, name, monthly_credits, rate_limit_per_minute, max_concurrent_tasks)
  VALUES (9001, 'ops-e2e', 100, 60, 2) ON CONFLICT DO NOTHING;
INSERT INTO users (id, email, name, oidc_issuer, oidc_subject, plan_id, webhook_secret, is_active)
  SELECT md5('e2e-u' || i)::uuid, 'e2e' || i || '@example.com', 'E2E ' || i, 'https://issuer', 'e2e' || i, 9001,
         'w', true
  FROM generate_series(1, 12) i;
INSERT INTO tasks (id, user_id, state, rules, options, url_count, succeeded_count, failed_count, credits_charged,
                   attempts)
  SELECT md5('e2e-t' || i)::uuid, md5('e2e-u' || (1 + i % 12))::uuid, 'completed', jsonb_build_object('n', i), '{}',
         1, 1, 0, 1, 1
  FROM generate_series(1, 150) i;
"""
FINGERPRINT_SQL = (
    "SELECT (SELECT count(*) FROM tasks), (SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM tasks t), "
    "(SELECT count(*) FROM users), (SELECT md5(string_agg(u::text, '|' ORDER BY u.id)) FROM users u)"
)


def _docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def _remove_leftovers() -> None:
    label = f"label=selextract.stack={STACK}"
    ids = _docker("ps", "-aq", "--filter", label).split()
    if ids:
        _docker("rm", "-f", *ids)
    for kind in ("network", "volume"):
        names = _docker(kind, "ls", "-q", "--filter", label).split()
        if names:
            _docker(kind, "rm", *names, check=False)


def _target() -> Target:
    settings = load_stack(STACK)
    return docker_target(plan(settings), settings)


def _fingerprint() -> list[str]:
    return _target().postgres.query(FINGERPRINT_SQL)[0]


def _wait_api(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/health/ready", verify=False, timeout=10)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(3)
    raise AssertionError(f"API at {url} not ready: {last!r}")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (cache_dir() / "pulumi" / "bin" / "pulumi").exists():
        pytest.skip("the offline Pulumi CLI is not built (make setup)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine")
    _remove_leftovers()
    workdir = tmp_path_factory.mktemp(STACK)
    project = yaml.safe_load((project_dir() / "Pulumi.yaml").read_text())
    project["main"] = str(project_dir() / "stacks")
    project["runtime"]["options"]["virtualenv"] = str(project_dir() / ".venv")
    (workdir / "Pulumi.yaml").write_text(yaml.safe_dump(project))
    config = yaml.safe_load((project_dir() / "Pulumi.local.yaml").read_text())["config"]
    https = published_port()
    config.update(
        {
            "selextract:phase": "0",
            "selextract:local": {"httpPort": published_port(), "httpsPort": https, "monitoringPort": published_port()},
            "selextract:api": {"servers": 2, "containersPerServer": 1, "uvicornWorkers": 1},
            "selextract:workers": {
                "servers": 2,
                "containersPerServer": 1,
                "concurrency": 2,
                "cpus": 1,
                "memoryMb": 768,
            },
        }
    )
    (workdir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    env = {
        "PULUMI_BACKEND_URL": f"file://{workdir / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "SELEXTRACT_PROJECT_DIR": str(workdir),
        "SELEXTRACT_STATE": str(workdir / "ops-state"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    deployer = PulumiDeployer(STACK, workdir, create=True)
    api = f"https://127.0.0.1:{https}"
    try:
        deployer.up(lambda line: None)
        _wait_api(api)
        target = _target()
        target.postgres.query(SEED_SQL)
        files = {f"tasks/{uuid.uuid4()}/results.json": json.dumps({"n": i}).encode() for i in range(5)}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        archive = workdir / "seed.tar"
        archive.write_bytes(buf.getvalue())
        target.results.import_from(archive)
        yield {"workdir": workdir, "api": api, "files": files, "deployer": deployer}
    finally:
        try:
            deployer._select().destroy(on_output=lambda line: None, suppress_progress=True)
        finally:
            _remove_leftovers()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _migrate(*args: str) -> dict[str, Any]:
    result = runner.invoke(cli.app, ["--stack", STACK, "migrate", *args, "--force", "--format", "json"])
    try:
        return {"exit": result.exit_code, **json.loads(result.output)}
    except json.JSONDecodeError:
        raise AssertionError(result.output) from None


def test_migrate_0_to_1_moves_the_database_to_its_own_host(e2e: dict[str, Any]) -> None:
    before = _fingerprint()
    assert before[0] == "150"
    result = _migrate("--from", "0", "--to", "1", "--gate-timeout", "240")
    assert result["exit"] == 0, result
    assert result["status"] == "migrated"
    steps = {s["name"]: s for s in result["steps"]}
    assert steps["data: move and verify"]["detail"].startswith("database restored (")
    assert "redis: " in steps["data: move and verify"]["detail"]
    assert load_stack(STACK).phase == 1
    target = _target()
    assert target.postgres.place.name == f"{STACK}-db-01-postgres-1"  # type: ignore[union-attr]
    assert _fingerprint() == before
    assert target.results.stats() == {"objects": 5, "bytes": sum(len(v) for v in e2e["files"].values())}
    assert _docker("ps", "-aq", "--filter", f"name=^{STACK}-app-01-postgres-1$").strip() == ""
    assert target.redis.cmd("EXISTS", "selextract:maintenance").strip() == "0"
    assert httpx.get(f"{e2e['api']}/health/ready", verify=False, timeout=10).status_code == 200


class KillNewWorkers:
    """The real Pulumi deployer; after it brings phase 2 up, its workers die."""

    def __init__(self, inner: PulumiDeployer) -> None:
        self.inner = inner
        self.stack = inner.stack

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def up(self, progress: Any) -> dict[str, Any]:
        summary = self.inner.up(progress)
        if load_stack(self.stack).phase == 2:
            for name, _ in stack_containers(self.stack, Role.WORKER):
                _docker("kill", name, check=False)
        return summary


def test_migrate_1_to_2_rolls_back_when_the_gate_fails(e2e: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    if load_stack(STACK).phase != 1:
        pytest.skip("needs the stack on phase 1 (the 0→1 migration test)")
    before = _fingerprint()
    monkeypatch.setattr(cli, "make_deployer", lambda stack: KillNewWorkers(PulumiDeployer(stack, e2e["workdir"])))
    result = _migrate("--from", "1", "--to", "2", "--gate-timeout", "45")
    steps = {s["name"]: s for s in result["steps"]}
    assert result["exit"] == 1, result
    assert result["status"] == "rolled-back", (result.get("error"), [s for s in result["steps"] if s["status"] != "ok"])
    assert steps["deploy: pulumi up (phase 2)"]["status"] == "ok"
    assert steps["data: move and verify"]["status"] == "ok"  # results went into the bucket
    assert steps["gate: health of the new deployment"]["status"] == "failed"
    assert "workers" in steps["gate: health of the new deployment"]["detail"]
    for name in (
        "rollback: pulumi up (phase 1)",
        "rollback: data",
        "rollback: health of the previous deployment",
        "resume: maintenance off",
    ):
        assert steps[name]["status"] == "ok", steps[name]
    assert load_stack(STACK).phase == 1
    target = _target()
    assert target.storage_backend == "local"
    assert _fingerprint() == before
    assert target.results.stats() == {"objects": 5, "bytes": sum(len(v) for v in e2e["files"].values())}
    assert stack_containers(STACK, Role.OBJECT_STORE) == []
    assert httpx.get(f"{e2e['api']}/health/ready", verify=False, timeout=10).status_code == 200
    health = runner.invoke(cli.app, ["--stack", STACK, "health", "--critical-only", "--no-alert"])
    assert health.exit_code == 0, health.output
    shutil.rmtree(e2e["workdir"] / "ops-state" / "backups", ignore_errors=True)
