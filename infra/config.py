"""Typed, validated settings built from a stack's config (`Pulumi.<stack>.yaml`).

Everything downstream (topology, hosts, services) trusts this object, so every rule an
operator can break is checked here, before any resource is planned, and reported as
one message naming the key, the value given and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from infra.catalog import load_catalog

NAMESPACE = "selextract"
ROTATION_NAMESPACE = "rotation"
PHASES = (0, 1, 2, 3, 4)
PHASE_NAMES = {
    0: "all-in-one",
    1: "database decoupling",
    2: "dedicated worker pool",
    3: "load balancer + API servers",
    4: "object-store cluster",
}
# Secrets Selextract can generate itself (RandomPassword) unless the operator sets one.
GENERATED_SECRETS = (
    "postgresPassword",
    "redisPassword",
    "objectStoreSecretKey",
    "objectStoreBackupKey",  # the `backups` bucket's login: only ops holds it
    "objectStoreRootPassword",
    "appSecretKey",
    "monitoringPassword",
)
# Credentials only the operator can supply; required when the feature using them is on.
EXTERNAL_SECRETS = ("googleClientSecret", "lemonSqueezySigningSecret", "smtpPassword", "slackWebhookUrl")
# The login of an external registry (registry.address); the stack's own registry generates it.
REGISTRY_SECRET = "registryPassword"
SECRET_KEYS = (*GENERATED_SECRETS, *EXTERNAL_SECRETS, REGISTRY_SECRET)


class ConfigError(ValueError):
    """A stack config that cannot be deployed; the message is meant for the operator."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _check_server_type(value: str, *, cloud_only: bool = True) -> str:
    catalog = load_catalog()
    name = value.lower()
    st = catalog.server_types.get(name)
    allowed = sorted(n for n, t in catalog.server_types.items() if not cloud_only or t.kind == "cloud")
    if st is None or (cloud_only and st.kind != "cloud"):
        raise ValueError(f"'{value}' is not a Hetzner cloud server type; allowed: {', '.join(allowed)}")
    return name


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid CIDR ({exc}); expected e.g. 10.0.0.0/16") from None


class NetworkSettings(_Model):
    """Private network; every host joins it and internal ports listen only there."""

    cidr: str = "10.0.0.0/16"
    subnet: str = "10.0.1.0/24"
    # A Robot vSwitch joins a dedicated (EX44) server to the same network.
    vswitch_id: int | None = None
    vswitch_subnet: str = "10.0.2.0/24"

    _cidrs = field_validator("cidr", "subnet", "vswitch_subnet")(_check_cidr)

    @model_validator(mode="after")
    def _subnets_inside(self) -> NetworkSettings:
        net = ipaddress.ip_network(self.cidr)
        for key in ("subnet", "vswitch_subnet"):
            sub = ipaddress.ip_network(getattr(self, key))
            if not sub.subnet_of(net):  # type: ignore[arg-type]
                raise ValueError(f"{to_camel(key)} {sub} is not inside the network {net}")
        return self


class SshSettings(_Model):
    public_key: str | None = None
    port: int = Field(22, ge=1, le=65535)
    user: str = "deploy"
    # Path on the operator's machine; used by the Docker provider and pulumi-command over SSH.
    private_key_path: str = "~/.ssh/id_ed25519"

    @field_validator("public_key")
    @classmethod
    def _looks_like_key(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
            raise ValueError("must be an OpenSSH public key line (ssh-ed25519 …, ssh-rsa …, ecdsa-sha2-…)")
        return v


class DedicatedHost(_Model):
    """A bring-your-own server (Hetzner Robot, e.g. EX44): not API-provisionable."""

    public_address: str
    private_address: str | None = None
    server_type: str = "ex44"

    @field_validator("public_address", "private_address")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"'{v}' is not an IP address") from None
        return v

    @field_validator("server_type")
    @classmethod
    def _type(cls, v: str) -> str:
        return _check_server_type(v, cloud_only=False)


class OwnServer(DedicatedHost):
    """One machine of the `servers` target: any server reachable over SSH (a VPS, a Robot
    box, on-prem), named after the plan host it becomes (`app-01`, `db-01`, …).
    `serverType` is what the cost report prices it as; unset, the cloud type the phase
    would use stands in."""

    private_address: str  # type: ignore[assignment]  # required: internal ports listen only there
    server_type: str | None = None  # type: ignore[assignment]

    @field_validator("server_type")
    @classmethod
    def _type(cls, v: str | None) -> str | None:  # type: ignore[override]
        return None if v is None else _check_server_type(v, cloud_only=False)


class AppHostSettings(_Model):
    """The all-in-one / application host: an hcloud server type or a dedicated box."""

    server_type: str = "cx32"
    dedicated: DedicatedHost | None = None

    _type = field_validator("server_type")(_check_server_type)


class ServerTypes(_Model):
    postgres: str = "cx32"
    redis: str = "cx22"
    worker: str = "cx42"
    api: str = "cx32"
    lb: str = "cx22"
    object_store: str = "cx32"

    _types = field_validator("*")(_check_server_type)


class ApiSettings(_Model):
    servers: int = Field(2, ge=0, le=50)
    containers_per_server: int = Field(1, ge=1, le=16)
    uvicorn_workers: int = Field(2, ge=1, le=64)


class WorkerSettings(_Model):
    servers: int = Field(3, ge=1, le=1000)
    containers_per_server: int = Field(4, ge=1, le=64)
    cpus: float = Field(2.0, gt=0, le=64)
    memory_mb: int = Field(8192, ge=256)
    concurrency: int = Field(4, ge=1, le=256)


class ObjectStoreSettings(_Model):
    nodes: int = Field(4, ge=1, le=32)
    volume_gb: int = Field(100, ge=10, le=10240)
    # minio on Hetzner; seaweedfs where MinIO cannot be built (local simulation).
    implementation: Literal["minio", "seaweedfs"] = "minio"
    buckets: tuple[str, ...] = ("task-results", "backups", "logs")
    # the app's S3 access key (generation N of its rotation appends "-N"; MinIO's root is "-admin")
    access_key: str = Field("selextract", pattern=r"^[A-Za-z][A-Za-z0-9-]{2,30}$")


class VolumeSettings(_Model):
    postgres_gb: int = Field(50, ge=10, le=10240)
    redis_gb: int = Field(10, ge=10, le=10240)


class DnsSettings(_Model):
    enabled: bool = False
    zone: str | None = None
    ttl: int = Field(300, ge=60, le=86400)
    records: tuple[str, ...] = ("app", "api", "monitoring")


class ImageSettings(_Model):
    """Image names per service; point them at official images when a registry is reachable."""

    postgres: str = "postgres:15"
    redis: str = "redis:7"
    haproxy: str = "haproxy:2.6"
    nginx: str = "nginx:1.22"
    prometheus: str = "prom/prometheus:v2.53.0"
    alertmanager: str = "prom/alertmanager:v0.27.0"
    node_exporter: str = "prom/node-exporter:v1.8.1"
    postgres_exporter: str = "prometheuscommunity/postgres-exporter:v0.15.0"
    redis_exporter: str = "oliver006/redis_exporter:v1.61.0"
    object_store: str = "minio/minio:RELEASE.2024-06-13T22-53-53Z"
    grafana: str | None = "grafana/grafana:11.0.0"
    certbot: str = "certbot/certbot:v2.11.0"
    python_base: str = "selextract/python:3.11"
    # the stack's own registry on multi-host stacks: CNCF Distribution
    registry: str = "registry:2"


class RegistrySettings(_Model):
    """Where the hosts of a multi-host stack pull the app, worker and locally built
    (`selextract/*`) service images from, so each image is built once on this machine.
    Unset `address`: the stack runs its own registry (CNCF Distribution, htpasswd login)
    on the entry host's private address. Set: a registry you run, reachable under that
    address from this machine and from every host, with `username` and the
    `registryPassword` secret."""

    address: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?(/[a-z0-9._-]+)*$")
    username: str = Field("selextract", pattern=r"^[A-Za-z0-9._-]{1,64}$")


LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


class TlsSettings(_Model):
    mode: Literal["acme", "selfsigned", "off"] = "acme"
    email: str | None = None
    # The ACME directory certbot talks to: Let's Encrypt; its staging directory while a new
    # stack is tried out (no rate limits, untrusted certificates); any RFC 8555 server.
    acme_server: str = LETSENCRYPT

    @field_validator("acme_server")
    @classmethod
    def _https_directory(cls, value: str) -> str:
        if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d+)?(/\S*)?", value):
            raise ValueError(f"'{value}' is not an https:// ACME directory URL; e.g. {LETSENCRYPT_STAGING}")
        return value


class OidcSettings(_Model):
    issuer: str = "https://accounts.google.com"
    client_id: str | None = None


class BillingSettings(_Model):
    enabled: bool = False


class AlertSettings(_Model):
    email_to: str | None = None
    smtp_host: str | None = None
    smtp_from: str | None = None
    slack: bool = False


class ScraperSettings(_Model):
    """Passed to the workers; private targets stay refused unless listed here (SSRF guard)."""

    allowed_networks: tuple[str, ...] = ()
    concurrency: int = Field(8, ge=1, le=256)
    domain_concurrency: int = Field(2, ge=1, le=64)
    domain_delay_ms: int = Field(250, ge=0, le=60000)

    _cidrs = field_validator("allowed_networks")(lambda v: tuple(_check_cidr(c) for c in v))


class EntrySettings(_Model):
    """The entry (nginx in phases 0-2, HAProxy from phase 3): per-client-address request
    limit in front of the API, answered with 429.

    Every client behind one NAT address shares it. ``rateLimitPerSecond: 0`` turns it off
    (the API's per-account limits still apply)."""

    rate_limit_per_second: int = Field(50, ge=0, le=100_000)
    rate_limit_burst: int = Field(100, ge=0, le=1_000_000)


class LocalSettings(_Model):
    """Ports the local stack publishes on 127.0.0.1 (nothing is published elsewhere)."""

    http_port: int = Field(8080, ge=1024, le=65535)
    https_port: int = Field(8443, ge=1024, le=65535)
    monitoring_port: int = Field(9090, ge=1024, le=65535)


class Settings(_Model):
    """The whole deployment, one object; built by `load_settings`."""

    stack: str
    phase: int = 0
    # hetzner: hcloud creates the machines; servers: machines you have, over SSH; local:
    # every host collapsed onto this Docker engine (a simulation)
    target: Literal["hetzner", "servers", "local"] = "hetzner"
    # target servers: plan host name -> its addresses (`selextract:servers`)
    servers: dict[str, OwnServer] = {}
    location: str = "fsn1"
    domain: str = "selextract.example"
    admin_cidrs: tuple[str, ...] = ()
    network: NetworkSettings = NetworkSettings()
    ssh: SshSettings = SshSettings()
    app_host: AppHostSettings = AppHostSettings()
    server_types: ServerTypes = ServerTypes()
    api: ApiSettings = ApiSettings()
    workers: WorkerSettings = WorkerSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    volumes: VolumeSettings = VolumeSettings()
    dns: DnsSettings = DnsSettings()
    images: ImageSettings = ImageSettings()
    registry: RegistrySettings = RegistrySettings()
    tls: TlsSettings = TlsSettings()
    oidc: OidcSettings = OidcSettings()
    billing: BillingSettings = BillingSettings()
    alerts: AlertSettings = AlertSettings()
    local: LocalSettings = LocalSettings()
    entry: EntrySettings = EntrySettings()
    scraper: ScraperSettings = ScraperSettings()
    monthly_budget: float | None = Field(None, gt=0)
    # Bump to roll the app and workers onto fresh containers without a code change.
    release: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    # Run this already-built app/worker image version instead of building the tree
    # (what `selextract rollback` sets); unset to deploy the working tree again.
    image_tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    secrets: dict[str, SecretStr] = {}
    rotation: dict[str, int] = {}

    @field_validator("phase")
    @classmethod
    def _phase(cls, v: int) -> int:
        if v not in PHASES:
            allowed = ", ".join(f"{p} ({n})" for p, n in PHASE_NAMES.items())
            raise ValueError(f"unknown phase; allowed: {allowed}")
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        locations = load_catalog().locations
        if v not in locations:
            raise ValueError(f"'{v}' is not a Hetzner location; allowed: {', '.join(sorted(locations))}")
        return v

    @field_validator("admin_cidrs")
    @classmethod
    def _admin_cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_cidr(c) for c in v)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if name not in SECRET_KEYS:
                raise ValueError(f"unknown secret '{name}'; allowed: {', '.join(SECRET_KEYS)}")
            # These travel inside connection URLs and SQL: keep them to URL-safe characters.
            if name in GENERATED_SECRETS and not re.fullmatch(r"[A-Za-z0-9._~-]{16,128}", value.get_secret_value()):
                raise ValueError(f"secret '{name}' must be 16-128 characters of A-Z a-z 0-9 . _ ~ -")
        return v

    @model_validator(mode="after")
    def _phase_rules(self) -> Settings:
        if self.phase >= 3 and self.api.servers < 2:
            raise _KeyError("api.servers", self.api.servers, "phase 3+ needs at least 2 API servers behind the LB")
        if self.phase >= 4 and self.object_store.nodes < 4:
            raise _KeyError(
                "objectStore.nodes",
                self.object_store.nodes,
                "phase 4 needs at least 4 object-store nodes (erasure coding)",
            )
        if self.target in ("hetzner", "servers"):
            if not self.ssh.public_key:
                raise _KeyError(
                    "ssh.publicKey", None, f"an OpenSSH public key is required to deploy to {self.target} hosts"
                )
            if not self.admin_cidrs:
                raise _KeyError("adminCidrs", "[]", "at least one CIDR allowed to reach SSH is required")
            if self.tls.mode == "acme" and not self.tls.email:
                raise _KeyError("tls.email", None, "Let's Encrypt (tls.mode acme) needs a contact e-mail")
            if self.dns.enabled and not self.dns.zone:
                raise _KeyError("dns.zone", None, "dns.enabled needs the zone name, e.g. selextract.com")
        self._servers_rules()
        dedicated = self.app_host.dedicated
        if self.target == "hetzner" and dedicated and self.phase >= 1:
            if dedicated.private_address is None:
                raise _KeyError(
                    "appHost.dedicated.privateAddress",
                    None,
                    "from phase 1 on the dedicated host must join the private network (vSwitch address)",
                )
            if self.network.vswitch_id is None:
                raise _KeyError("network.vswitchId", None, "a dedicated host in phase 1+ needs the Robot vSwitch ID")
            if ipaddress.ip_address(dedicated.private_address) not in ipaddress.ip_network(self.network.vswitch_subnet):
                raise _KeyError(
                    "appHost.dedicated.privateAddress",
                    dedicated.private_address,
                    f"must be inside network.vswitchSubnet {self.network.vswitch_subnet}",
                )
        self._registry_rules()
        if self.oidc.client_id and "googleClientSecret" not in self.secrets:
            raise _KeyError("googleClientSecret", None, _secret_hint("googleClientSecret", "oidc.clientId is set"))
        if self.billing.enabled and "lemonSqueezySigningSecret" not in self.secrets:
            raise _KeyError(
                "lemonSqueezySigningSecret", None, _secret_hint("lemonSqueezySigningSecret", "billing is enabled")
            )
        if self.alerts.slack and "slackWebhookUrl" not in self.secrets:
            raise _KeyError("slackWebhookUrl", None, _secret_hint("slackWebhookUrl", "alerts.slack is on"))
        return self

    def _servers_rules(self) -> None:
        """Addresses of the `servers` target: each private one inside network.cidr, none
        used twice. Which hosts must be listed is the plan's business (it knows them)."""
        if self.target != "servers":
            if self.servers:
                raise _KeyError("servers", sorted(self.servers), "only used with target: servers")
            return
        if self.app_host.dedicated:
            raise _KeyError("appHost.dedicated", None, "with target: servers, list the app host under servers")
        network = ipaddress.ip_network(self.network.cidr)
        seen: dict[str, str] = {}
        for name, server in self.servers.items():
            if ipaddress.ip_address(server.private_address) not in network:
                raise _KeyError(
                    f"servers.{name}.privateAddress",
                    server.private_address,
                    f"must be inside network.cidr {network} (internal ports listen only there)",
                )
            for address in (server.public_address, server.private_address):
                if address in seen:
                    raise _KeyError(f"servers.{name}", address, f"address already used by servers.{seen[address]}")
                seen[address] = name

    def _registry_rules(self) -> None:
        """An external registry needs its login; the stack's own registry makes its own,
        and the local target builds on the one engine it runs on, with no registry."""
        address = self.registry.address
        if address and self.target == "local":
            raise _KeyError("registry.address", address, "the local target builds on this engine; it uses no registry")
        if address and REGISTRY_SECRET not in self.secrets:
            raise _KeyError(REGISTRY_SECRET, None, _secret_hint(REGISTRY_SECRET, f"registry.address is {address}"))
        if not address and REGISTRY_SECRET in self.secrets:
            raise _KeyError(
                REGISTRY_SECRET,
                "[secret]",
                "only used with an external registry (registry.address); the stack's own registry generates "
                f"its password (renew it with `pulumi config set rotation:{REGISTRY_SECRET} N`)",
            )

    @property
    def object_store_impl(self) -> str:
        return self.object_store.implementation

    def secret(self, name: str) -> str | None:
        value = self.secrets.get(name)
        return value.get_secret_value() if value is not None else None


def _secret_hint(name: str, why: str) -> str:
    return f"required secret missing because {why}; set it with `pulumi config set --secret {name} …`"


class _KeyError(ValueError):
    """Carries the exact key a cross-field rule is about, for the error message."""

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.key, self.value, self.message = key, value, message


def _format(key: str, value: Any, message: str, source: str) -> str:
    shown = "(not set)" if value is None else json.dumps(value) if not isinstance(value, str) else value
    return f"{source}: {NAMESPACE}:{key} = {shown}: {message}"


def _errors_to_message(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _KeyError):
            lines.append(_format(ctx_error.key, ctx_error.value, ctx_error.message, source))
            continue
        loc = [str(p) for p in err["loc"] if p != "__root__"]
        key = ".".join(loc)
        value: Any = raw
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else None
        if loc and loc[0] == "secrets":
            value = "[secret]"
        if err["type"] == "extra_forbidden":
            message = "unknown key; check the spelling (keys are camelCase, see README 'Stack config')"
        else:
            message = err["msg"].removeprefix("Value error, ")
        lines.append(_format(key, value, message, source))
    return "\n".join(lines)


def _newest_generations(nested: Any, flat: dict[str, Any]) -> Any:
    if not isinstance(nested, dict):
        return flat if nested is None else nested  # not a mapping: validation names it
    merged = dict(nested)
    for key, value in flat.items():
        old = merged.get(key)
        both_int = isinstance(old, int) and isinstance(value, int)
        merged[key] = max(old, value) if both_int else value
    return merged


def load_settings(
    config: dict[str, Any], *, stack: str, secret_keys: set[str] | None = None, source: str | None = None
) -> Settings:
    """Build Settings from flat Pulumi config (`{"selextract:phase": 2, "rotation:postgres": 1, ...}`).

    Values may be JSON strings (as the Pulumi engine passes them) or already-parsed data
    (as in a stack YAML). Secret keys go to `secrets`; unknown namespaces are left alone
    because providers (`hcloud:token`, `docker:host`) read their own.
    """
    source = source or f"Pulumi.{stack}.yaml"
    raw: dict[str, Any] = {"stack": stack}
    secrets: dict[str, Any] = {}
    rotation: dict[str, Any] = {}
    for full_key, value in config.items():
        namespace, _, key = full_key.partition(":")
        parsed = _parse(value)
        if namespace == NAMESPACE:
            if key in SECRET_KEYS:
                if secret_keys is not None and full_key not in secret_keys:
                    raise ConfigError(
                        f"{source}: {full_key} is stored in plain text; "
                        f"set it with `pulumi config set --secret {key} …`"
                    )
                secrets[key] = parsed
            else:
                raw[key] = parsed
        elif namespace == ROTATION_NAMESPACE:
            rotation[key] = parsed
    if secrets:
        raw["secrets"] = secrets
    if rotation:
        # `pulumi config set rotation:<name> N` and `selextract:rotation.<name>` both count;
        # a generation only goes up, so where both are set the higher one is in force
        raw["rotation"] = _newest_generations(raw.get("rotation"), rotation)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_errors_to_message(exc, raw, source)) from None


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def load_stack_file(
    path: Path, *, secret_values: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Load `Pulumi.<stack>.yaml` directly (tests, ops CLI) without the Pulumi engine.

    Encrypted values (`{secure: …}`) cannot be read without the stack's passphrase; they
    count as present and are replaced by `secret_values[name]` or a placeholder.
    `overrides` are set on top, as `pulumi config set` would.
    """
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise ConfigError(f"{path.name}: expected a mapping with a 'config:' section")
    config: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for key, value in (doc.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            name = key.partition(":")[2]
            value = (secret_values or {}).get(name, f"encrypted-{name}")
            secret_keys.add(key)
        config[key] = value
    config.update(overrides or {})
    return load_settings(config, stack=stack, secret_keys=secret_keys, source=path.name)


def load_from_pulumi() -> Settings:
    """Settings for the stack being deployed, read from the engine's config."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    config = dict(runtime_config.CONFIG.get())
    return load_settings(config, stack=pulumi.get_stack(), secret_keys=set(runtime_config._SECRET_KEYS.get()))
