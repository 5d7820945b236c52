"""Backup → destroy → restore against real Postgres and Redis servers (throwaway ones of
these tests) and real result files / a real S3 bucket, through the `selextract` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from common.models import Base
from ops.access import libpq_url, url_target
from ops.backup import BackupStore, create_backup, verify_backup
from ops.cli import app

runner = CliRunner()
TABLES = ("plans", "users", "api_keys", "tasks", "task_urls", "usage_ledger", "webhook_events")


def seed_database(url: str, users: int = 5, tasks_per_user: int = 8) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(
            "INSERT INTO plans (id, name, monthly_credits, rate_limit_per_minute, max_concurrent_tasks) "
            "VALUES (1, 'free', 100, 60, 2), (2, 'pro', 10000, 600, 20)"
        )
        for u in range(users):
            user_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO users (id, email, name, oidc_issuer, oidc_subject, plan_id, webhook_secret, is_active)"
                " VALUES (%s, %s, %s, 'https://issuer', %s, %s, 'whsec', true)",
                (user_id, f"user{u}@example.com", f"Ünïcode {u} ✓", f"sub-{u}", 1 + u % 2),
            )
            for t in range(tasks_per_user):
                task_id = uuid.uuid4()
                conn.execute(
                    "INSERT INTO tasks (id, user_id, state, rules, options, url_count, succeeded_count, "
                    "failed_count, credits_charged, attempts) VALUES (%s, %s, 'completed', %s, '{}', 2, 2, 0, 2, 1)",
                    (task_id, user_id, json.dumps({"title": "h1", "n": t})),
                )
                for pos in range(2):
                    conn.execute(
                        "INSERT INTO task_urls (task_id, position, url, state, attempts, item_count) "
                        "VALUES (%s, %s, %s, 'succeeded', 1, %s)",
                        (task_id, pos, f"https://example.com/{u}/{t}/{pos}", pos + t),
                    )
                conn.execute(
                    "INSERT INTO usage_ledger (user_id, task_id, kind, credits, period) "
                    "VALUES (%s, %s, 'charge', -2, '2025-06')",
                    (user_id, task_id),
                )


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row's text, per table."""
    out = {}
    with psycopg.connect(libpq_url(url)) as conn:
        for table in TABLES:
            count, digest = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
            ).fetchone()  # type: ignore[misc]
            out[table] = (count, digest)
    return out


def destroy_database(url: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _db(client, db: int):  # type: ignore[no-untyped-def]
    """Another database of the same Redis server."""
    kwargs = client.connection_pool.connection_kwargs
    return client.__class__(host=kwargs["host"], port=kwargs["port"], password=kwargs["password"], db=db)


def seed_redis(client) -> None:  # type: ignore[no-untyped-def]
    client.set("selextract:ratelimit:k1", "7", ex=3600)
    client.rpush("scrape", *[json.dumps({"task": i}) for i in range(5)])
    client.hset("selextract:stats", mapping={"a": "1", "b": "ü"})
    r3 = _db(client, 3)
    r3.set("db3-key", b"\x00\xffbinary")
    r3.close()


def seed_results(root: Path) -> dict[str, bytes]:
    files = {
        f"tasks/{uuid.uuid4()}/results.json": json.dumps({"items": list(range(50))}).encode(),
        f"tasks/{uuid.uuid4()}/results.csv": b"title,price\nfoo,1\n",
        "tasks/x/nested/deep.bin": os.urandom(4096),
    }
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.fixture
def deployment(tmp_path: Path, pg_db: str, redis_server, redis_client):  # type: ignore[no-untyped-def]
    """A seeded deployment reached by its env vars, with a backup directory."""
    results = tmp_path / "results"
    results.mkdir()
    env_file = tmp_path / "service.env"
    env_file.write_text(
        f"DATABASE_URL={pg_db}\nREDIS_URL={redis_server.url(0)}\nSTORAGE_BACKEND=local\nSTORAGE_PATH={results}\n"
    )
    seed_database(pg_db)
    seed_redis(redis_client)
    files = seed_results(results)
    args = ["--stack", "itest", "--env-file", str(env_file), "--backup-dir", str(tmp_path / "backups")]
    return {
        "url": pg_db,
        "redis": redis_client,
        "results": results,
        "files": files,
        "args": args,
        "env_file": env_file,
        "backups": tmp_path / "backups",
    }


def cli(d, *argv: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [*d["args"], *argv])
    return result


def redis_state(client) -> dict[str, object]:  # type: ignore[no-untyped-def]
    r3 = _db(client, 3)
    state = {
        "ratelimit": client.get("selextract:ratelimit:k1"),
        "ttl_positive": client.ttl("selextract:ratelimit:k1") > 3000,
        "queue": client.lrange("scrape", 0, -1),
        "stats": client.hgetall("selextract:stats"),
        "db3": r3.get("db3-key"),
        "maintenance": client.exists("selextract:maintenance"),
    }
    r3.close()
    return state


def test_backup_destroy_restore_gives_back_the_same_rows(deployment) -> None:  # type: ignore[no-untyped-def]
    d = deployment
    before_db = fingerprint(d["url"])
    before_redis = redis_state(d["redis"])
    assert before_db["task_urls"][0] == 5 * 8 * 2

    created = cli(d, "backup", "create", "--format", "json")
    assert created.exit_code == 0, created.output
    manifest = json.loads(created.output)
    assert manifest["kind"] == "full"
    counts = manifest["components"]["database"]["details"]["row_counts"]
    assert {k.removeprefix("public."): v for k, v in counts.items() if k.removeprefix("public.") in TABLES} == {
        t: before_db[t][0] for t in TABLES
    }
    assert manifest["components"]["redis"]["details"]["keys"] == {"db0": 3, "db3": 1}
    # the rate-limit window has a TTL: it may be gone by a verify or restore, so it is not checked then
    assert manifest["components"]["redis"]["details"]["persistent"] == {"db0": 2, "db3": 1}
    assert manifest["components"]["results"]["details"]["objects"] == 3
    assert Path(manifest["path"], "database", "selextract.dump").read_bytes()[:5] == b"PGDMP"

    # destroy everything
    destroy_database(d["url"])
    d["redis"].flushall()
    for path in d["results"].rglob("*"):
        if path.is_file():
            path.unlink()
    assert fingerprint.__name__ and not any(p.is_file() for p in d["results"].rglob("*"))

    restored = cli(d, "restore", manifest["id"], "--yes", "--format", "json")
    assert restored.exit_code == 0, restored.output
    report = json.loads(restored.output)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"database", "redis", "results"}

    assert fingerprint(d["url"]) == before_db
    after_redis = redis_state(d["redis"])
    assert after_redis == {**before_redis, "maintenance": 0}  # restore's maintenance window is closed again
    for key, data in d["files"].items():
        assert (d["results"] / key).read_bytes() == data


def test_verify_restores_into_a_scratch_database(deployment, pg_server) -> None:  # type: ignore[no-untyped-def]
    d = deployment
    assert cli(d, "backup", "create").exit_code == 0
    result = cli(d, "backup", "verify", "latest", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    names = {c["name"]: c for c in report["checks"]}
    assert names["database restore"]["ok"] and "rows match the manifest" in names["database restore"]["detail"]
    assert names["redis snapshot"]["ok"] and names["results archive"]["ok"]
    with psycopg.connect(pg_server.libpq("postgres")) as conn:
        leftovers = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'selextract_verify_%'").fetchall()
    assert leftovers == []


def test_a_damaged_backup_fails_verify_and_is_not_restored(deployment) -> None:  # type: ignore[no-untyped-def]
    d = deployment
    manifest = json.loads(cli(d, "backup", "create", "--format", "json").output)
    dump = Path(manifest["path"], "database", "selextract.dump")
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    verify = cli(d, "backup", "verify", manifest["id"])
    assert verify.exit_code == 1
    assert "DIFFERS" in verify.output and "NOT verified" in verify.output
    before = fingerprint(d["url"])
    restore = cli(d, "restore", manifest["id"], "--yes")
    assert restore.exit_code == 1 and "damaged; nothing was restored" in restore.output
    assert fingerprint(d["url"]) == before


def test_database_only_backup_and_list(deployment) -> None:  # type: ignore[no-untyped-def]
    d = deployment
    first = json.loads(cli(d, "backup", "create", "--database-only", "--format", "json").output)
    assert set(first["components"]) == {"database"} and first["kind"] == "database-only"
    second = json.loads(cli(d, "backup", "create", "--label", "before-upgrade", "--format", "json").output)
    assert second["pinned"] is True
    listed = json.loads(cli(d, "backup", "list", "--format", "json").output)
    assert [b["id"] for b in listed["backups"]] == [second["id"], first["id"]]
    text = cli(d, "restore", "--list")
    assert text.exit_code == 0
    assert first["id"] in text.output and "before-upgrade" in text.output and "database-only" in text.output


def test_restore_only_some_components(deployment) -> None:  # type: ignore[no-untyped-def]
    d = deployment
    manifest = json.loads(cli(d, "backup", "create", "--format", "json").output)
    d["redis"].set("new-after-backup", "1")
    destroy_database(d["url"])
    result = cli(d, "restore", manifest["id"], "--yes", "--only", "database")
    assert result.exit_code == 0, result.output
    assert d["redis"].get("new-after-backup") == b"1"  # redis untouched
    assert fingerprint(d["url"])["tasks"][0] == 40
    bad = cli(d, "restore", manifest["id"], "--yes", "--only", "database,bogus")
    assert bad.exit_code == 2 and "unknown bogus" in bad.output


def test_snapshot_counts_hold_under_concurrent_writes(deployment) -> None:  # type: ignore[no-untyped-def]
    """Rows inserted while pg_dump runs are in neither the dump nor the manifest's counts."""
    d = deployment
    env = {"DATABASE_URL": d["url"], "REDIS_URL": "redis://unused", "STORAGE_PATH": str(d["results"])}
    target = url_target(env)
    store = BackupStore(d["backups"], "concurrent")
    stop = threading.Event()
    inserted = 0

    def writer() -> None:
        nonlocal inserted
        with psycopg.connect(libpq_url(d["url"]), autocommit=True) as conn:
            user = conn.execute("SELECT id FROM users LIMIT 1").fetchone()[0]  # type: ignore[index]
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO usage_ledger (user_id, kind, credits, period) VALUES (%s, 'adjustment', 1, '2025-07')",
                    (user,),
                )
                inserted += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        manifest = create_backup(target, store, phase=None, database_only=True)
    finally:
        stop.set()
        thread.join()
    assert inserted > 0
    report = verify_backup(target, store, manifest.id)
    assert report.ok, report.to_dict()
    with psycopg.connect(libpq_url(d["url"])) as conn:
        now = conn.execute("SELECT count(*) FROM usage_ledger").fetchone()[0]  # type: ignore[index]
    assert manifest.components["database"].details["row_counts"]["public.usage_ledger"] <= now


def test_retention_runs_after_create(deployment) -> None:  # type: ignore[no-untyped-def]
    d = deployment
    ids = []
    for _ in range(3):
        ids.append(
            json.loads(
                cli(
                    d,
                    "backup",
                    "create",
                    "--database-only",
                    "--format",
                    "json",
                    "--keep-last",
                    "1",
                    "--keep-daily",
                    "0",
                    "--keep-weekly",
                    "0",
                    "--keep-monthly",
                    "0",
                ).output
            )
        )
    # keep only the last one: each run removes the one before
    assert ids[-1]["pruned"] == [ids[1]["id"]]
    listed = json.loads(cli(d, "backup", "list", "--format", "json").output)
    assert [b["id"] for b in listed["backups"]] == [ids[-1]["id"]]


def test_backup_errors_are_clear(tmp_path: Path) -> None:
    env_file = tmp_path / "e.env"
    env_file.write_text(
        "DATABASE_URL=postgresql+psycopg://x:y@127.0.0.1:1/nope\nREDIS_URL=redis://127.0.0.1:1/0\n"
        f"STORAGE_PATH={tmp_path}\n"
    )
    result = runner.invoke(app, ["--env-file", str(env_file), "--backup-dir", str(tmp_path / "b"), "backup", "create"])
    assert result.exit_code == 1
    assert "psql on postgresql://x@127.0.0.1:1/nope" in result.output and "y@" not in result.output
    assert not any((tmp_path / "b").rglob("manifest.json"))


@pytest.fixture
def s3_deployment(tmp_path: Path, pg_db: str, redis_server, redis_client, s3_env):  # type: ignore[no-untyped-def]
    # One fixed bucket, deleted afterwards: every new bucket takes volumes of the shared SeaweedFS.
    bucket = "ops-test-results"
    env = {
        **s3_env,
        "S3_BUCKET": bucket,
        "STORAGE_BACKEND": "s3",
        "DATABASE_URL": pg_db,
        "REDIS_URL": redis_server.url(0),
    }
    env_file = tmp_path / "s3.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    target = url_target(env)
    target.results.ensure_buckets(bucket, "backups")
    seed_database(pg_db, users=2, tasks_per_user=3)
    staging = tmp_path / "staging"
    files = seed_results(staging)
    archive = tmp_path / "seed.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(staging), "."], check=True)
    target.results.import_from(archive)
    stack = f"ops-s3-{uuid.uuid4().hex[:6]}"
    yield {
        "target": target,
        "files": files,
        "url": pg_db,
        "stack": stack,
        "args": ["--stack", stack, "--env-file", str(env_file), "--backup-dir", str(tmp_path / "backups")],
    }
    target.results.delete_prefix("backups", f"{stack}/")
    target.results.delete_prefix(bucket, "")
    _delete_bucket(s3_env, bucket)


def _delete_bucket(s3_env: dict[str, str], bucket: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3_env["S3_ENDPOINT_URL"],
        aws_access_key_id=s3_env["S3_ACCESS_KEY"],
        aws_secret_access_key=s3_env["S3_SECRET_KEY"],
        region_name=s3_env.get("S3_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )
    client.delete_bucket(Bucket=bucket)


@pytest.mark.services
def test_backups_go_to_the_bucket_and_come_back(s3_deployment) -> None:  # type: ignore[no-untyped-def]
    d = s3_deployment
    created = runner.invoke(app, [*d["args"], "backup", "create", "--format", "json"])
    assert created.exit_code == 0, created.output
    manifest = json.loads(created.output)
    assert manifest["remote"] == f"{d['stack']}/{manifest['id']}/"
    assert manifest["components"]["results"]["details"]["objects"] == 3
    keys = {o["key"] for o in d["target"].results.list_objects("backups", d["stack"] + "/")}
    assert {k.split("/", 2)[2] for k in keys} == {
        "manifest.json",
        "database/selextract.dump",
        "redis/dump.rdb",
        "results/results.tar.gz",
    }
    # lose the local copy and the data; restore fetches the backup from the bucket
    import shutil

    shutil.rmtree(manifest["path"])
    before = fingerprint(d["url"])
    destroy_database(d["url"])
    d["target"].results.delete_prefix(d["target"].results.place.env["S3_BUCKET"], "")
    assert d["target"].results.stats()["objects"] == 0
    listed = json.loads(runner.invoke(app, [*d["args"], "backup", "list", "--remote", "--format", "json"]).output)
    assert listed["remote_only"] == [manifest["id"]]
    restored = runner.invoke(app, [*d["args"], "restore", manifest["id"], "--yes", "--format", "json"])
    assert restored.exit_code == 0, restored.output
    assert fingerprint(d["url"]) == before
    assert d["target"].results.stats() == {"objects": 3, "bytes": sum(len(v) for v in d["files"].values())}
