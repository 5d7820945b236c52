"""Fixtures for the service tests: real Postgres, Redis and S3 started by
``scripts/services.sh start`` (their addresses come from $SELEXTRACT_SERVICES_DIR/env),
a local test website, a fake OpenID Connect issuer and real Celery worker processes.

Each session gets its own database, Redis db, S3 bucket and queue name, so runs do not
see each other's data.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from svc_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    LS_SECRET,
    SERVICES_DIR,
    Account,
    WorkerProcess,
    make_account,
    read_env_file,
    reset_caches,
)
from svc_oidc import FakeIssuer
from svc_site import LocalSite

with warnings.catch_warnings():
    # authlib warns (and forces its warnings to "always") when it falls back from httpx2 to
    # httpx, the client this project pins; import it once here, quietly.
    import authlib.deprecate

    warnings.simplefilter("ignore")
    import authlib.integrations.starlette_client  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    # starlette's TestClient nudges towards httpx2; httpx is what this project pins
    config.addinivalue_line("filterwarnings", "ignore:.*httpx2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    env_file = SERVICES_DIR / "env"
    if not env_file.exists():
        pytest.skip(f"backing services are not started ({env_file} missing): run scripts/services.sh start")
    values = read_env_file(env_file)
    if "S3_ENDPOINT_URL" not in values:
        pytest.skip("the S3 server is not running (scripts/services.sh start could not start SeaweedFS)")
    return values


@pytest.fixture(scope="session")
def site() -> Iterator[LocalSite]:
    server = LocalSite().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def issuer() -> Iterator[FakeIssuer]:
    server = FakeIssuer(CLIENT_ID, CLIENT_SECRET).start()
    yield server
    server.stop()


def _free_redis_db(url: str, run_id: str) -> int:
    admin = redis.Redis.from_url(url)
    for db in range(10, 64):
        if admin.set(f"selextract-test-db:{db}", run_id, nx=True, ex=3 * 3600):
            return db
    raise RuntimeError("no free Redis database for the test session")


@pytest.fixture(scope="session", autouse=True)
def service_env(
    services: dict[str, str], site: LocalSite, issuer: FakeIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:8]
    base_db_url = services["DATABASE_URL"]
    db_name = f"selextract_test_{run_id}"
    libpq_url = base_db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    redis_base = services["REDIS_URL"].rsplit("/", 1)[0]
    redis_db = _free_redis_db(services["REDIS_URL"], run_id)
    redis_url = f"{redis_base}/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "ENVIRONMENT": "test",
        "GIT_COMMIT": "test-commit",
        "DATABASE_URL": base_db_url.rsplit("/", 1)[0] + "/" + db_name,
        "REDIS_URL": redis_url,
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": services["S3_ENDPOINT_URL"],
        "S3_ACCESS_KEY": services["S3_ACCESS_KEY"],
        "S3_SECRET_KEY": services["S3_SECRET_KEY"],
        "S3_REGION": services.get("S3_REGION", "us-east-1"),
        "S3_BUCKET": f"test-{run_id}",
        "STORAGE_PATH": str(tmp_path_factory.mktemp("results")),
        "SECRET_KEY": "test-secret-key-" + run_id,
        "PUBLIC_BASE_URL": "http://testserver",
        "OIDC_ISSUER": issuer.url,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "LEMONSQUEEZY_SIGNING_SECRET": LS_SECRET,
        "LEMONSQUEEZY_VARIANT_PLANS": "1001=starter,1002=professional",
        "SCRAPER_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SCRAPER_DOMAIN_CONCURRENCY": "4",
        "SCRAPER_DOMAIN_DELAY_MS": "0",
        "SCRAPER_RETRY_BACKOFF": "0.5",
        "SCRAPER_RETRY_BACKOFF_MAX": "2",
        "TASK_LEASE_SECONDS": "4",
        "TASK_SOFT_TIME_LIMIT": "60",
        "TASK_TIME_LIMIT": "90",
        "CELERY_VISIBILITY_TIMEOUT": "10",
        "CELERY_QUEUE": f"scrape-{run_id}",
        "REAPER_INTERVAL": "2",
        "WEBHOOK_MAX_ATTEMPTS": "3",
        "LOG_LEVEL": "INFO",
    }
    saved = {k: os.environ.get(k) for k in env}
    for name in ("PROXY_LIST", "RENDERER_URL", "MAINTENANCE_MODE"):
        os.environ.pop(name, None)
    os.environ.update(env)
    reset_caches()
    from app.migrate import upgrade
    from common.storage import get_storage

    upgrade()
    get_storage().ensure_ready()
    yield env
    reset_caches()
    try:
        from common.config import Settings
        from common.storage import S3Storage, build_storage

        storage = build_storage(Settings())
        if isinstance(storage, S3Storage):
            storage.delete_prefix("tasks")
            storage.client.delete_bucket(Bucket=storage.bucket)
    except Exception as exc:  # cleanup only
        print(f"bucket cleanup failed: {exc}")
    reset_caches()
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    redis.Redis.from_url(redis_url).flushdb()
    redis.Redis.from_url(services["REDIS_URL"]).delete(f"selextract-test-db:{redis_db}")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def app(service_env: dict[str, str]) -> Any:
    from app.main import create_app

    return create_app()


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def account(service_env: dict[str, str]) -> Account:
    return make_account()


@pytest.fixture(scope="module")
def worker(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(tmp_path_factory.mktemp("worker"), "main", concurrency=2).start()
    yield proc
    proc.stop()
