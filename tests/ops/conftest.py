"""Fixtures for the ops tests: throwaway Postgres and Redis servers of our own (the backup
and restore tests destroy data, so they never touch the shared test services), the
shared SeaweedFS S3 of scripts/services.sh when it runs, and a Docker check."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.access import free_port, read_env_file

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVICES_ENV = Path(os.environ.get("SELEXTRACT_SERVICES_DIR", "/tmp/selextract-services")) / "env"
REPO = Path(__file__).resolve().parents[2]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


@dataclass
class PgServer:
    port: int
    user: str
    password: str

    def url(self, db: str = "selextract") -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def libpq(self, db: str = "selextract") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="selextract-ops-pg-"))
    base.chmod(0o755)
    data, run = base / "data", base / "run"
    run.mkdir()
    pwfile = base / "pw"
    pwfile.write_text("ops-secret\n")
    if os.getuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(run, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "selextract",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses='127.0.0.1'\nport={port}\nunix_socket_directories='{run}'\n"
            "fsync=off\nsynchronous_commit=off\nfull_page_writes=off\nmax_connections=50\n"
        )
    subprocess.run(
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
    )
    server = PgServer(port, "selextract", "ops-secret")
    subprocess.run(
        ["psql", "-X", "-q", "-d", server.libpq("postgres"), "-c", "CREATE DATABASE selextract"],
        check=True,
        capture_output=True,
    )
    try:
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[str]:
    """A fresh database on the throwaway server; yields its SQLAlchemy URL."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["psql", "-X", "-q", "-d", pg_server.libpq("postgres"), "-c", f'CREATE DATABASE "{name}"'],
        check=True,
        capture_output=True,
    )
    yield pg_server.url(name)
    subprocess.run(
        ["psql", "-X", "-q", "-d", pg_server.libpq("postgres"), "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
        capture_output=True,
    )


@dataclass
class RedisServer:
    port: int
    password: str
    proc: subprocess.Popen[bytes]

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed")
    base = Path(tempfile.mkdtemp(prefix="selextract-ops-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--requirepass",
            "ops-redis-secret",
            "--dir",
            str(base),
            "--save",
            "",
            "--appendonly",
            "no",
            "--databases",
            "16",
            # the default 5 s wait for more replicas would make every `redis-cli --rdb` 5 s slower
            "--repl-diskless-sync-delay",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password="ops-redis-secret")
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    server = RedisServer(port, "ops-redis-secret", proc)
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[object]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def s3_env() -> dict[str, str]:
    """The shared SeaweedFS S3 of scripts/services.sh (tests use their own bucket/prefix)."""
    if not SERVICES_ENV.exists():
        pytest.skip("scripts/services.sh has not been started (no S3)")
    env = read_env_file(SERVICES_ENV)
    if not env.get("S3_ENDPOINT_URL"):
        pytest.skip("the test services run without S3")
    import httpx

    try:
        httpx.get(env["S3_ENDPOINT_URL"], timeout=3)
    except httpx.HTTPError:
        pytest.skip(f"S3 at {env['S3_ENDPOINT_URL']} does not answer")
    return {k: v for k, v in env.items() if k.startswith("S3_")}


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def docker_ready() -> None:
    if not docker_available():
        pytest.skip("no Docker engine")
    missing = [
        i
        for i in ("selextract/postgres:15", "selextract/redis:7", "selextract/python:3.11", "selextract/seaweedfs:3")
        if not image_exists(i)
    ]
    if missing:
        pytest.skip(f"images not built yet ({', '.join(missing)}): scripts/build-images.sh")
