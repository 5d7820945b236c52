"""Typed settings shared by the API and the worker.

Everything comes from environment variables (names are the upper-case field names).
Secrets may instead come from a file named by ``<NAME>_FILE`` (the deploy passes
secrets that way) or from a secrets directory (``SECRETS_DIR``, default
``/run/secrets`` when present) holding one file per setting.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"


class FileEnvSettingsSource(PydanticBaseSettingsSource):
    """Read ``FOO`` from the file named by ``FOO_FILE`` (Docker/Compose secret convention)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().strip(), field_name, False
        except OSError as exc:
            raise ValueError(f"{field_name.upper()}_FILE={path!r} cannot be read: {exc}") from exc

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All runtime knobs of the service; see the deployment guide for the env var list."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, validate_default=True)

    environment: Literal["development", "test", "production"] = "development"
    git_commit: str = Field(default="unknown", description="Image revision, shown in /health")
    log_level: str = "INFO"

    # --- backing services -------------------------------------------------------------
    database_url: SecretStr = SecretStr("postgresql+psycopg://selextract:selextract@localhost:5432/selextract")
    database_pool_size: int = Field(default=5, ge=1)
    redis_url: SecretStr = SecretStr("redis://localhost:6379/0")
    celery_broker_url: SecretStr | None = None
    celery_visibility_timeout: int = Field(
        default=3600, ge=5, description="Seconds before an unacked task of a dead worker is redelivered"
    )
    celery_queue: str = "scrape"

    # --- result storage -----------------------------------------------------------------
    storage_backend: Literal["local", "s3", "minio"] = "local"
    storage_path: Path = Path("/var/lib/selextract/results")
    s3_endpoint_url: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "task-results"
    s3_region: str = "us-east-1"

    # --- web / auth ---------------------------------------------------------------------
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    public_base_url: str = "http://localhost:8000"
    session_max_age: int = 14 * 24 * 3600
    oidc_issuer: str = "https://accounts.google.com"
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid email profile"
    maintenance_mode: bool = Field(default=False, description="Static maintenance flag (env)")
    maintenance_retry_after: int = 300
    cors_origins: Annotated[list[str], NoDecode] = []

    # --- quotas and billing -------------------------------------------------------------
    default_plan: str = "free"
    lemonsqueezy_signing_secret: SecretStr | None = None
    lemonsqueezy_variant_plans: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="variant_id=plan pairs, comma separated"
    )
    lemonsqueezy_checkout_urls: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="plan=checkout URL pairs shown in the console"
    )
    max_urls_per_task: int = Field(default=100, ge=1)
    refund_budget_per_day: int = Field(
        default=100,
        ge=0,
        description="Credits per account and UTC day refunded for URLs fetched without success "
        "(at least a tenth of the plan's monthly credits); beyond it failures cost their credit",
    )

    # --- scraper ------------------------------------------------------------------------
    proxy_list: SecretStr | None = Field(
        default=None, description="Webshare-style list: host:port:user:pass or URLs, one per line/comma"
    )
    renderer_url: str | None = None
    renderer_egress_guarded: bool = Field(
        default=False,
        description="Set only when the renderer can reach nothing but the public internet (its own "
        "requests are outside the SSRF guard); render_js is refused until then",
    )
    scraper_allowed_networks: Annotated[list[IPNetwork], NoDecode] = []
    scraper_user_agent: str = "SelextractBot/1.0 (+https://selextract.com/bot)"
    scraper_concurrency: int = Field(default=8, ge=1, description="Parallel fetches inside one task")
    scraper_domain_concurrency: int = Field(default=2, ge=1, description="Parallel fetches per domain")
    scraper_domain_delay_ms: int = Field(default=250, ge=0, description="Pause between hits on a domain")
    scraper_max_page_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    scraper_max_redirects: int = Field(default=5, ge=0)
    scraper_default_timeout: float = Field(default=30.0, gt=0)
    scraper_retry_backoff: float = Field(default=5.0, ge=0, description="Base seconds of exponential backoff")
    scraper_retry_backoff_max: float = Field(default=300.0, ge=0)
    robots_cache_seconds: int = Field(default=3600, ge=1)
    robots_redis_budget_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="robots.txt bytes admitted to Redis per ROBOTS_CACHE_SECONDS window (live: at most twice this)",
    )

    # --- per-URL budgets (what one page may cost a worker; see app/README.md) ----------
    scraper_fetch_budget: float = Field(
        default=120.0, gt=0, description="Seconds to download one URL in all (redirects included): url_budget_exceeded"
    )
    scraper_extract_seconds: float = Field(
        default=10.0, gt=0, description="Wall-clock and CPU seconds to extract one page: extraction_timeout"
    )
    scraper_extract_processes: int = Field(default=2, ge=1, description="Extraction helpers per worker process")
    scraper_extract_memory_mb: int = Field(default=1024, ge=256, description="Address space of one helper")
    scraper_max_result_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Extracted data (JSON) per page: result_too_large"
    )
    scraper_max_task_result_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Extracted data per task, shared out evenly over its URLs"
    )
    results_retention_days: int = Field(
        default=30, ge=0, description="Finished tasks and their results are deleted this long after; 0 = never"
    )

    # --- worker -------------------------------------------------------------------------
    worker_concurrency: int = Field(default=2, ge=1)
    worker_prefetch_multiplier: int = Field(default=1, ge=1)
    task_soft_time_limit: int = Field(default=600, ge=1)
    task_time_limit: int = Field(default=780, ge=1, description="Hard limit; leave room for one slow fetch")
    task_lease_seconds: int = Field(default=60, ge=2, description="A running task not renewed for this long is retried")
    reaper_interval: int = Field(default=30, ge=1, description="Seconds between stale-task sweeps in the worker")
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 5

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, FileEnvSettingsSource(settings_cls), file_secret_settings

    @field_validator("cors_origins", "scraper_allowed_networks", mode="before")
    @classmethod
    def _csv_list(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("scraper_allowed_networks", mode="after")
    @classmethod
    def _networks(cls, value: list[Any]) -> list[IPNetwork]:
        return [ipaddress.ip_network(v, strict=False) for v in value]

    @field_validator("lemonsqueezy_variant_plans", "lemonsqueezy_checkout_urls", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in _split_csv(value):
            key, sep, val = item.partition("=")
            if not sep or not key.strip() or not val.strip():
                raise ValueError(f"expected key=value pairs, got {item!r}")
            pairs[key.strip()] = val.strip()
        return pairs

    @field_validator("database_url", mode="before")
    @classmethod
    def _psycopg_driver(cls, value: Any) -> Any:
        """Accept plain postgres:// DSNs (what most tools hand out) and use psycopg 3."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            for prefix in ("postgres://", "postgresql://"):
                if raw.startswith(prefix):
                    return "postgresql+psycopg://" + raw[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _consistency(self) -> Settings:
        if self.celery_broker_url is None:
            self.celery_broker_url = self.redis_url
        if self.task_time_limit <= self.task_soft_time_limit:
            raise ValueError("TASK_TIME_LIMIT must be greater than TASK_SOFT_TIME_LIMIT")
        if self.storage_backend in ("s3", "minio") and not (self.s3_access_key and self.s3_secret_key):
            raise ValueError(f"STORAGE_BACKEND={self.storage_backend} needs S3_ACCESS_KEY and S3_SECRET_KEY")
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

    def require_secret_key(self) -> str:
        """SECRET_KEY, checked where it is used (the API signs console sessions and checkout
        links with it): workers never read it, so they are not given one."""
        value = self.secret_key.get_secret_value()
        if self.environment == "production" and value == DEV_SECRET_KEY:
            raise ValueError("SECRET_KEY must be set in production: the API signs console sessions with it")
        return value

    # --- derived values -----------------------------------------------------------------
    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_client_id and self.oidc_client_secret)

    @property
    def oidc_metadata_url(self) -> str:
        return self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def proxies_configured(self) -> bool:
        return bool(self.proxy_list and self.proxy_list.get_secret_value().strip())

    @property
    def renderer_available(self) -> bool:
        """render_js is offered only with a renderer whose own traffic cannot reach inside."""
        return bool(self.renderer_url) and self.renderer_egress_guarded

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")

    @property
    def broker_url(self) -> str:
        assert self.celery_broker_url is not None
        return self.celery_broker_url.get_secret_value()


def _secrets_dir() -> str | None:
    configured = os.environ.get("SECRETS_DIR")
    if configured:
        return configured
    return "/run/secrets" if Path("/run/secrets").is_dir() else None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once (tests clear the cache to change them)."""
    return Settings(_secrets_dir=_secrets_dir())
