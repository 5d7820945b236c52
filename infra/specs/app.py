"""API and worker containers (the images Pulumi builds from app/ and worker/)."""

from __future__ import annotations

from infra.render import render
from infra.specs.base import ContainerSpec, Healthcheck, Mount, Port, Upload, password_sync_name, secret
from infra.specs.context import BUILD_APP, BUILD_WORKER, SpecContext
from infra.specs.objectstore import (
    ADMIN_KEY_SECRET,
    app_access_key,
    minio_root_user,
    objectstore_dependencies,
    objectstore_url,
)
from infra.specs.objectstore import ROTATION_KEY as OBJECT_STORE_ROTATION_KEY
from infra.specs.postgres import APP_USERS, DB_NAME, app_password_secret, app_slot
from infra.topology import PORTS, WORKER_METRICS_PORT, Role

RESULTS_PATH = "/data/results"
# Celery's pool processes write their samples here (the /tmp tmpfs: the root fs is
# read-only); the worker's main process serves their sum on WORKER_METRICS_PORT.
WORKER_METRICS_DIR = "/tmp/selextract-metrics"


def app_env(ctx: SpecContext, host: str) -> dict[str, str]:
    """Environment shared by API and workers on `host` (addresses as seen from there): only
    what a worker reads too, so a worker holds no secret it never uses (see `api_env`)."""
    plan, settings = ctx.plan, ctx.settings
    pg = plan.endpoint(Role.POSTGRES, host)
    redis = plan.endpoint(Role.REDIS, host)
    scheme = "https" if ctx.tls else "http"
    slot = app_slot(settings.rotation)
    public = (
        f"{scheme}://127.0.0.1:{settings.local.https_port if ctx.tls else settings.local.http_port}"
        if ctx.local
        else f"{scheme}://app.{settings.domain}"
    )
    env = {
        "DATABASE_URL": f"postgresql+psycopg://{APP_USERS[slot]}:{secret(app_password_secret(slot))}@{pg.url}/{DB_NAME}",
        "REDIS_URL": f"redis://:{secret('redisPassword')}@{redis.url}/0",
        "PUBLIC_BASE_URL": public,
        "SELEXTRACT_STACK": plan.stack,
        "SELEXTRACT_PHASE": str(plan.phase),
        "ENVIRONMENT": "production",
        "SCRAPER_CONCURRENCY": str(settings.scraper.concurrency),
        "SCRAPER_DOMAIN_CONCURRENCY": str(settings.scraper.domain_concurrency),
        "SCRAPER_DOMAIN_DELAY_MS": str(settings.scraper.domain_delay_ms),
        "WORKER_CONCURRENCY": str(plan.worker_concurrency),
    }
    if settings.scraper.allowed_networks:
        env["SCRAPER_ALLOWED_NETWORKS"] = ",".join(settings.scraper.allowed_networks)
    if plan.storage_backend == "local":
        env |= {"STORAGE_BACKEND": "local", "STORAGE_PATH": RESULTS_PATH}
    else:
        env |= {
            "STORAGE_BACKEND": "minio",
            "S3_ENDPOINT_URL": objectstore_url(ctx, host),
            "S3_ACCESS_KEY": app_access_key(settings.object_store.access_key, settings.rotation),
            "S3_SECRET_KEY": secret(OBJECT_STORE_ROTATION_KEY),
            "S3_BUCKET": plan.buckets[0],
        }
    return env


def api_env(ctx: SpecContext, host: str) -> dict[str, str]:
    """The API's environment: `app_env` plus what only the API reads (the session and
    checkout-signing key, the sign-in client, the billing webhook's signing secret)."""
    settings = ctx.settings
    env = app_env(ctx, host) | {"SECRET_KEY": secret("appSecretKey"), "OIDC_ISSUER": settings.oidc.issuer}
    if settings.oidc.client_id:
        env["OIDC_CLIENT_ID"] = settings.oidc.client_id
        env["OIDC_CLIENT_SECRET"] = secret("googleClientSecret")
    if settings.billing.enabled:
        env["LEMONSQUEEZY_SIGNING_SECRET"] = secret("lemonSqueezySigningSecret")
    return env


def _results_mounts(ctx: SpecContext, host: str) -> tuple[Mount, ...]:
    if ctx.plan.storage_backend != "local":
        return ()
    return (Mount(f"{ctx.plan.stack}-{host}-results", RESULTS_PATH),)


def api_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan = ctx.plan
    specs = []
    for placement in plan.placements_of(Role.API):
        host = plan.host(placement.host)
        for i in range(1, placement.containers + 1):
            slot = plan.container_name(host.name, Role.API, i)
            specs.append(
                ContainerSpec(
                    name=f"{slot}-{ctx.version}",
                    resource_name=slot,
                    aliases=(slot, plan.pool_alias(host.name, Role.API)),
                    host=host.name,
                    role=Role.API,
                    image=BUILD_APP,
                    # Migrations run before the server starts (advisory-locked, so N API
                    # containers migrate once); a failed migration keeps the container
                    # unhealthy and the deploy stops with the old version serving.
                    command=(
                        "sh",
                        "-c",
                        "python -m app.migrate && exec uvicorn app.main:app --host 0.0.0.0 --port 8000 "
                        f"--workers {plan.api_workers} --proxy-headers --forwarded-allow-ips '*'",
                    ),
                    env=api_env(ctx, host.name),
                    mounts=_results_mounts(ctx, host.name),
                    user="10001",
                    read_only=True,
                    tmpfs=("/tmp",),
                    healthcheck=Healthcheck(
                        ("CMD-SHELL", "curl -fsS http://127.0.0.1:8000/health || exit 1"), start_period_s=20
                    ),
                    wait_healthy=True,
                    depends_on=_deps(ctx, host.name),
                )
            )
    return specs


def worker_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan = ctx.plan
    specs = []
    for placement in plan.placements_of(Role.WORKER):
        host = plan.host(placement.host)
        for i in range(1, placement.containers + 1):
            slot = plan.container_name(host.name, Role.WORKER, i)
            specs.append(
                ContainerSpec(
                    name=f"{slot}-{ctx.version}",
                    resource_name=slot,
                    aliases=(slot,),
                    host=host.name,
                    role=Role.WORKER,
                    image=BUILD_WORKER,
                    command=(
                        "celery",
                        "-A",
                        "worker.celery_app",
                        "worker",
                        "--loglevel=INFO",
                        f"--concurrency={plan.worker_concurrency}",
                        f"--hostname={host.name}-{i}@%h",
                    ),
                    env=app_env(ctx, host.name)
                    | {"PROMETHEUS_MULTIPROC_DIR": WORKER_METRICS_DIR, "WORKER_METRICS_PORT": str(WORKER_METRICS_PORT)},
                    mounts=_results_mounts(ctx, host.name),
                    metrics_port=WORKER_METRICS_PORT,
                    cpus=placement.cpus,
                    memory_mb=placement.memory_mb,
                    user="10001",
                    read_only=True,
                    tmpfs=("/tmp",),
                    # Warm shutdown: running tasks finish or go back to the queue (acks_late).
                    stop_grace_s=120,
                    depends_on=_deps(ctx, host.name),
                )
            )
    return specs


def api_proxy_specs(ctx: SpecContext) -> list[ContainerSpec]:
    """On Hetzner API hosts reached from the LB: nginx on the private IP, port 8000, in
    front of the host's API containers (found by DNS alias, so old and new versions can
    overlap during a deploy). Kamal puts its proxy on each host for the same reason."""
    plan = ctx.plan
    if ctx.local:
        return []
    specs = []
    for placement in plan.placements_of(Role.API):
        host = plan.host(placement.host)
        if host.is_entry:
            continue  # the entry nginx on this host already is the API's proxy
        specs.append(
            ContainerSpec(
                name=plan.container_name(host.name, Role.API, 0).removesuffix("-0") + "-proxy-1",
                host=host.name,
                role=Role.API,
                image=ctx.settings.images.nginx,
                command=("nginx", "-g", "daemon off;"),
                ports=ctx.internal_port(host, PORTS[Role.API]),
                uploads=(Upload("/etc/nginx/nginx.conf", api_proxy_config(ctx, host.name)),),
                healthcheck=Healthcheck(("CMD-SHELL", "nginx -t -q")),
            )
        )
    return specs


def api_proxy_config(ctx: SpecContext, host: str) -> str:
    return render("api-proxy.conf.j2", api_pool=ctx.plan.pool_alias(host, Role.API))


def worker_metrics_proxy_specs(ctx: SpecContext) -> list[ContainerSpec]:
    """On Hetzner worker hosts Prometheus does not run on: nginx on the private IP, port
    WORKER_METRICS_PORT+n-1 forwarding to the host's n-th worker container (found by its
    stable alias). The workers themselves publish nothing, so a new version can start
    beside the old one (both answer to the alias during the overlap)."""
    plan = ctx.plan
    monitoring = plan.placements_of(Role.MONITORING)
    if not monitoring:
        return []
    specs = []
    for placement in plan.remote_worker_hosts(monitoring[0].host):
        host = plan.host(placement.host)
        ports = tuple(
            Port(port, port, str(host.private_ip))
            for port in range(WORKER_METRICS_PORT, WORKER_METRICS_PORT + placement.containers)
        )
        specs.append(
            ContainerSpec(
                name=f"{plan.stack}-{host.name}-metrics-proxy-1",
                host=host.name,
                role=Role.MONITORING,
                image=ctx.settings.images.nginx,
                command=("nginx", "-g", "daemon off;"),
                ports=ports,
                uploads=(Upload("/etc/nginx/nginx.conf", worker_metrics_proxy_config(ctx, host.name)),),
                healthcheck=Healthcheck(("CMD-SHELL", "nginx -t -q")),
            )
        )
    return specs


def worker_metrics_proxy_config(ctx: SpecContext, host: str) -> str:
    plan = ctx.plan
    placement = next(p for p in plan.placements_of(Role.WORKER) if p.host == host)
    workers = [
        (WORKER_METRICS_PORT + i - 1, plan.container_name(host, Role.WORKER, i))
        for i in range(1, placement.containers + 1)
    ]
    return render("worker-metrics-proxy.conf.j2", workers=workers, worker_port=WORKER_METRICS_PORT)


def bucket_specs(ctx: SpecContext) -> list[ContainerSpec]:
    """One-shot bucket creation once the object store answers."""
    plan = ctx.plan
    if not plan.buckets:
        return []
    host = plan.hosts_with(Role.API)[0].name
    return [
        ContainerSpec(
            name=f"{plan.stack}-{host}-buckets-1",
            host=host,
            role=Role.OBJECT_STORE,
            image=BUILD_APP,
            command=("python", "-m", "common.storage", "ensure-buckets", *plan.buckets),
            # the admin login: the app's own key may not create buckets (infra/specs/objectstore.py)
            env=app_env(ctx, host)
            | {
                "S3_ACCESS_KEY": minio_root_user(ctx.settings.object_store.access_key),
                "S3_SECRET_KEY": secret(ADMIN_KEY_SECRET),
            },
            user="10001",
            one_shot=True,
            depends_on=(
                *(ctx.plan.container_name(p.host, Role.OBJECT_STORE, 1) for p in plan.placements_of(Role.OBJECT_STORE)),
                password_sync_name(plan.endpoint(Role.OBJECT_STORE, host).name),
                *objectstore_dependencies(ctx, host),
            ),
        )
    ]


def _deps(ctx: SpecContext, host: str) -> tuple[str, ...]:
    plan = ctx.plan
    deps = [e.name for e in plan.endpoints(Role.POSTGRES) + plan.endpoints(Role.REDIS)]
    deps += [password_sync_name(e.name) for e in plan.endpoints(Role.POSTGRES) + plan.endpoints(Role.REDIS)]
    if plan.buckets:
        deps.append(f"{plan.stack}-{plan.hosts_with(Role.API)[0].name}-buckets-1")
        deps.append(password_sync_name(plan.endpoint(Role.OBJECT_STORE).name))
        deps += objectstore_dependencies(ctx, host)
    return tuple(deps)
