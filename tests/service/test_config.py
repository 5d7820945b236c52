"""Settings: env vars, *_FILE secrets, secrets dir, validation messages."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.config import Settings


def test_secrets_from_file_env_and_secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret-key").write_text("from-file\n")
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "oidc_client_secret").write_text("from-dir")
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "secret-key"))
    monkeypatch.setenv("OIDC_CLIENT_ID", "client")
    monkeypatch.delenv("OIDC_CLIENT_SECRET", raising=False)
    settings = Settings(_secrets_dir=secrets_dir)
    assert settings.secret_key.get_secret_value() == "from-file"
    assert settings.oidc_client_secret is not None
    assert settings.oidc_client_secret.get_secret_value() == "from-dir"
    assert "from-file" not in repr(settings)


def test_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setenv("SECRET_KEY_FILE", "/nonexistent/secret")
    with pytest.raises(ValueError, match="SECRET_KEY_FILE"):
        Settings()


def test_lists_pairs_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRAPER_ALLOWED_NETWORKS", "10.0.0.0/8, 192.168.1.7")
    monkeypatch.setenv("LEMONSQUEEZY_VARIANT_PLANS", "11=starter,12=professional")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/x")
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    settings = Settings()
    assert settings.scraper_allowed_networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    ]
    assert settings.lemonsqueezy_variant_plans == {"11": "starter", "12": "professional"}
    assert settings.database_url.get_secret_value() == "postgresql+psycopg://u:p@db:5432/x"
    assert settings.broker_url == settings.redis_url.get_secret_value()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORAGE_BACKEND": "ftp"}, "storage_backend"),
        ({"STORAGE_BACKEND": "minio", "S3_ACCESS_KEY": "", "S3_SECRET_KEY": ""}, "S3_ACCESS_KEY"),
        ({"TASK_SOFT_TIME_LIMIT": "100", "TASK_TIME_LIMIT": "50"}, "TASK_TIME_LIMIT"),
        ({"SCRAPER_ALLOWED_NETWORKS": "not-a-network"}, "scraper_allowed_networks"),
    ],
)
def test_bad_settings_name_the_key(env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if env.get("S3_ACCESS_KEY") == "":
        monkeypatch.delenv("S3_ACCESS_KEY")
        monkeypatch.delenv("S3_SECRET_KEY")
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_secret_key_is_required_in_production_where_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker is given no SECRET_KEY (it never signs anything) and starts; the API refuses
    to start without one, naming it."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("SECRET_KEY")
    worker = Settings()
    with pytest.raises(ValueError, match="SECRET_KEY must be set in production"):
        worker.require_secret_key()
    from app.main import create_app
    from common.config import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="SECRET_KEY"):
            create_app()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    monkeypatch.setenv("SECRET_KEY", "a-real-secret")
    monkeypatch.setenv("ENVIRONMENT", "production")
    assert Settings().require_secret_key() == "a-real-secret"
