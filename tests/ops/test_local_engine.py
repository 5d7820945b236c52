"""The ops commands against a stack on this machine's Docker engine, reached with
`docker exec` exactly as on a real local deployment: backup/restore/verify, maintenance,
health, logs, workers scale, and `migrate --from 1 --to 2` (dry run, success, and a health
failure that rolls back).

`pulumi up` itself is played by tests/ops/fake_deployer.py (the Pulumi Docker plugin is
not available to these tests); it converges the engine to the plan from the Pulumi
program's own container specs. Postgres, Redis and SeaweedFS are the real images.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable
from typer.testing import CliRunner

from common.models import Base
from infra.topology import Role, plan
from ops import cli
from ops.access import Target, docker_target, stack_containers
from ops.stack import load_stack, project_dir
from tests.e2e.stack import published_port
from tests.ops.fake_deployer import FakeDeployer, docker

pytestmark = [pytest.mark.docker]
runner = CliRunner()

SEED_SQL = """
INSERT INTO plans (id, name, monthly_credits, rate_limit_per_minute, max_concurrent_tasks)
  VALUES (1, 'free', 100, 60, 2);
INSERT INTO users (id, email, name, oidc_issuer, oidc_subject, plan_id, webhook_secret, is_active)
  SELECT md5('u' || i)::uuid, 'user' || i || '@example.com', 'User ' || i, 'https://issuer', 'sub' || i, 1, 'w', true
  FROM generate_series(1, 25) i;
INSERT INTO tasks (id, user_id, state, rules, options, url_count, succeeded_count, failed_count, credits_charged,
                   attempts)
  SELECT md5('t' || i)::uuid, md5('u' || (1 + i % 25))::uuid, 'completed', jsonb_build_object('n', i), '{}', 1, 1, 0,
         1, 1
  FROM generate_series(1, 300) i;
"""
FINGERPRINT_SQL = (
    "SELECT (SELECT count(*) FROM tasks), (SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM tasks t), "
    "(SELECT md5(string_agg(u::text, '|' ORDER BY u.id)) FROM users u)"
)


@dataclass
class LocalStack:
    name: str
    project: Path
    deployer: FakeDeployer
    results: dict[str, bytes]

    def target(self) -> Target:
        settings = load_stack(self.name)
        return docker_target(plan(settings), settings)

    def cli(self, *args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli.app, ["--stack", self.name, *args])


def results_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fingerprint(target: Target) -> list[str]:
    return target.postgres.query(FINGERPRINT_SQL)[0]


@pytest.fixture
def local_stack(docker_ready, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:  # type: ignore[no-untyped-def]
    name = f"opst{uuid.uuid4().hex[:6]}"
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(project_dir() / "Pulumi.yaml", project / "Pulumi.yaml")
    text = (project_dir() / "Pulumi.local.yaml").read_text()
    assert 'selextract:phase: "0"' in text
    # phase 1, and ports of its own: the real `local` stack may be up on 8443 beside it
    ports = f"  selextract:local:\n    httpPort: {published_port()}\n    httpsPort: {published_port()}\n"
    text = text.replace('selextract:phase: "0"', 'selextract:phase: "1"').replace("config:\n", "config:\n" + ports, 1)
    (project / f"Pulumi.{name}.yaml").write_text(text)
    monkeypatch.setenv("SELEXTRACT_PROJECT_DIR", str(project))
    monkeypatch.setenv("SELEXTRACT_STATE", str(tmp_path / "state"))
    deployer = FakeDeployer(project, name)
    monkeypatch.setattr(cli, "make_deployer", lambda stack: deployer)
    try:
        deployer.up(lambda line: None)
        stack = LocalStack(name, project, deployer, {})
        target = stack.target()
        ddl = ";\n".join(str(CreateTable(t).compile(dialect=postgresql.dialect())) for t in Base.metadata.sorted_tables)
        target.postgres.query(ddl + ";\n" + SEED_SQL)
        stack.results = {f"tasks/{uuid.uuid4()}/results.json": json.dumps({"i": i}).encode() for i in range(7)}
        archive = tmp_path / "seed.tar"
        archive.write_bytes(results_tar(stack.results))
        target.results.import_from(archive)
        target.redis.cmd("SET", "selextract:probe", "kept")
        target.redis.cmd("RPUSH", "scrape", "m1", "m2", "m3")
        yield stack
    finally:
        deployer.destroy()


def _results_stats(target: Target) -> dict[str, int]:
    return target.results.stats()


def test_backup_restore_maintenance_health_logs_on_the_engine(local_stack: LocalStack) -> None:
    s = local_stack
    target = s.target()
    assert target.postgres.place.name == f"{s.name}-db-01-postgres-1"  # type: ignore[union-attr]
    assert target.api_container is not None and target.api_container.name.startswith(f"{s.name}-app-01-api-1-")
    before = fingerprint(target)
    assert before[0] == "300"

    created = s.cli("backup", "create", "--format", "json")
    assert created.exit_code == 0, created.output
    manifest = json.loads(created.output)
    assert manifest["phase"] == 1
    assert manifest["components"]["database"]["details"]["row_counts"]["public.tasks"] == 300
    assert manifest["components"]["redis"]["details"]["keys"] == {"db0": 2}
    assert manifest["components"]["results"]["details"]["objects"] == 7
    assert manifest["remote"] is None  # phase 1 has no object storage

    target.postgres.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    target.redis.cmd("FLUSHALL")
    empty = s.project / "empty.tar"
    empty.write_bytes(results_tar({}))
    target.results.import_from(empty, clear=True)
    assert _results_stats(target)["objects"] == 0

    restored = s.cli("restore", "latest", "--yes", "--format", "json")
    assert restored.exit_code == 0, restored.output
    assert fingerprint(target) == before
    assert _results_stats(target) == {"objects": 7, "bytes": sum(len(v) for v in s.results.values())}
    assert target.redis.cmd("GET", "selextract:probe").strip() == "kept"
    assert target.redis.cmd("LLEN", "scrape").strip() == "3"

    verify = s.cli("backup", "verify", manifest["id"])
    assert verify.exit_code == 0, verify.output
    assert "rows match the manifest" in verify.output and f"backup {manifest['id']}: verified" in verify.output

    on = s.cli("maintenance", "on", "--message", "window", "--retry-after", "30")
    assert on.exit_code == 0, on.output
    assert on.output.strip() == "maintenance: on (retry after 30s): window"
    assert target.redis.cmd("EXISTS", "selextract:maintenance").strip() == "1"
    assert s.cli("maintenance", "off").output.strip() == "maintenance: off"

    health = s.cli("health", "--critical-only", "--format", "json", "--no-alert")
    assert health.exit_code == 1  # no API server and no Celery in the stand-ins
    checks = {c["name"]: c["status"] for c in json.loads(health.output)["checks"]}
    assert checks == {"api": "fail", "database": "ok", "redis": "ok", "workers": "fail", "storage": "ok"}
    disk = json.loads(s.cli("health", "--format", "json", "--no-alert").output)
    disk_check = next(c for c in disk["checks"] if c["name"] == "disk")
    assert "postgres" in disk_check["detail"] and "redis" in disk_check["detail"]

    logs = s.cli("logs", "worker", "--tail", "5")
    assert logs.exit_code == 0, logs.output
    lines = [line for line in logs.output.splitlines() if "ready" in line]
    assert len(lines) == 2 and all(line.startswith(f"{s.name}-app-01-worker-") for line in lines)
    assert s.cli("logs", "nonsense").exit_code == 1


def test_workers_scale_through_the_deployer(local_stack: LocalStack) -> None:
    s = local_stack
    result = s.cli("workers", "scale", "3", "--yes", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["changes"] == {"workers.containersPerServer": 3}
    assert load_stack(s.name).workers.containers_per_server == 3
    workers = stack_containers(s.name, Role.WORKER)
    assert len(workers) == 3 and all(up for _, up in workers)


def test_migrate_dry_run_changes_nothing(local_stack: LocalStack) -> None:
    s = local_stack
    result = s.cli("migrate", "--from", "1", "--to", "2", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "dry-run"
    moves = {m["component"]: m for m in data["plan"]["moves"]}
    assert moves["results"]["moved"] and not moves["database"]["moved"]
    assert f"+ {s.name}-db-01-objectstore-1" in data["preview"]
    assert load_stack(s.name).phase == 1 and s.deployer.ups == [1]


def test_migrate_1_to_2_with_a_failing_health_gate_rolls_back(local_stack: LocalStack) -> None:
    s = local_stack
    before = fingerprint(s.target())

    def crash_redis(p) -> None:  # type: ignore[no-untyped-def]
        if p.phase == 2:  # the new deployment comes up with a dead Redis
            docker("stop", "-t", "1", f"{s.name}-redis-01-redis-1")
        if s.deployer.ups == [1, 2, 1]:  # and the first `pulumi up` of the rollback fails
            raise RuntimeError("docker provider: context deadline exceeded")

    s.deployer.sabotage = crash_redis
    result = s.cli(
        "migrate",
        "--from",
        "1",
        "--to",
        "2",
        "--force",
        "--gate",
        "database,redis,storage",
        "--gate-timeout",
        "6",
        "--format",
        "json",
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["status"] == "rolled-back"
    assert "health gate failed: redis" in data["error"]
    steps = {st["name"]: st["status"] for st in data["steps"]}
    assert steps["backup"] == "ok"
    assert steps["deploy: pulumi up (phase 2)"] == "ok"
    assert steps["data: move and verify"] == "ok"  # results went to the bucket
    assert steps["gate: health of the new deployment"] == "failed"
    assert steps["rollback: pulumi up (phase 1)"] == "ok"
    assert steps["rollback: data"] == "ok"
    assert steps["rollback: health of the previous deployment"] == "ok"
    assert steps["resume: maintenance off"] == "ok"
    assert s.deployer.ups == [1, 2, 1, 1]  # the rollback's up was tried again

    # back on phase 1, in the config and on the engine, with every row and result file
    assert load_stack(s.name).phase == 1
    names = {n for n, _ in stack_containers(s.name, Role.OBJECT_STORE)}
    assert names == set()
    target = s.target()
    assert fingerprint(target) == before
    assert _results_stats(target) == {"objects": 7, "bytes": sum(len(v) for v in s.results.values())}
    assert target.redis.cmd("EXISTS", "selextract:maintenance").strip() == "0"
    assert all(up for _, up in stack_containers(s.name, Role.WORKER))
    log = Path(data["log"]).read_text().splitlines()
    events = [json.loads(line) for line in log]
    assert any(e["event"] == "rollback" for e in events)
    assert any(
        "rollback pulumi up failed (docker provider: context deadline exceeded)" in e.get("message", "") for e in events
    )
    assert events[-1] == {**events[-1], "event": "result", "status": "rolled-back"}
    listed = json.loads(s.cli("backup", "list", "--format", "json").output)["backups"]
    assert listed[0]["label"] == "pre-migration-1-to-2" and listed[0]["pinned"] is True


def test_migrate_1_to_2_moves_results_into_object_storage(local_stack: LocalStack) -> None:
    s = local_stack
    before = fingerprint(s.target())
    result = s.cli(
        "migrate", "--from", "1", "--to", "2", "--force", "--gate", "database,redis,storage", "--gate-timeout", "60"
    )
    assert result.exit_code == 0, result.output
    assert "migrated" in result.output
    assert load_stack(s.name).phase == 2
    target = s.target()
    assert target.storage_backend == "minio"
    assert fingerprint(target) == before
    assert _results_stats(target) == {"objects": 7, "bytes": sum(len(v) for v in s.results.values())}
    volumes = docker("volume", "ls", "-q", "--filter", f"label=selextract.stack={s.name}").split()
    assert f"{s.name}-app-01-results" not in volumes  # phase 2 keeps results in the bucket only
    workers = stack_containers(s.name, Role.WORKER)
    assert sorted(n.rsplit("-", 1)[0] for n, _ in workers) == [
        f"{s.name}-worker-01-worker-1",
        f"{s.name}-worker-01-worker-2",
        f"{s.name}-worker-02-worker-1",
        f"{s.name}-worker-02-worker-2",
    ]
    assert all(up for _, up in workers)
    assert target.redis.cmd("EXISTS", "selextract:maintenance").strip() == "0"
    # phase 2 has a backups bucket: a new backup lands there too
    created = json.loads(s.cli("backup", "create", "--format", "json").output)
    assert created["remote"] == f"{s.name}/{created['id']}/"
    remote = json.loads(s.cli("backup", "list", "--remote", "--format", "json").output)
    assert any(b["id"] == created["id"] and b["in_bucket"] for b in remote["backups"])
