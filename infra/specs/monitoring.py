"""Prometheus, Alertmanager and exporters; scrape targets come from the plan, so adding a
worker server adds its targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.render import CONFIG_DIR, render
from infra.specs.base import ContainerSpec, Healthcheck, HostMount, Mount, Upload, secret
from infra.specs.context import SpecContext
from infra.specs.objectstore import node_endpoints
from infra.specs.postgres import DB_NAME, DB_USER
from infra.topology import EXPORTER_PORTS, PORTS, Endpoint, Role


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    targets: tuple[Endpoint, ...]
    metrics_path: str | None = None


def _exporter_endpoint(ctx: SpecContext, name: str, host: str, kind: str, from_host: str) -> Endpoint:
    port = EXPORTER_PORTS[kind]
    if ctx.local or host == from_host:
        return Endpoint(name, host, name, port)
    return Endpoint(name, host, str(ctx.plan.host(host).private_ip), port)


def node_exporter_hosts(ctx: SpecContext) -> tuple[str, ...]:
    # Locally every plan host is the same machine: one exporter tells the truth.
    return (ctx.plan.hosts[0].name,) if ctx.local else tuple(h.name for h in ctx.plan.hosts)


def scrape_jobs(ctx: SpecContext, from_host: str) -> tuple[ScrapeJob, ...]:
    plan = ctx.plan
    jobs = [
        ScrapeJob("prometheus", (Endpoint("prometheus", from_host, "localhost", PORTS[Role.MONITORING]),)),
        ScrapeJob("api", plan.endpoints(Role.API, from_host)),
        ScrapeJob("worker", plan.worker_metrics_endpoints(from_host)),
        ScrapeJob(
            "node",
            tuple(
                _exporter_endpoint(ctx, f"{plan.stack}-{h}-node-exporter-1", h, "node", from_host)
                for h in node_exporter_hosts(ctx)
            ),
        ),
        ScrapeJob(
            "postgres",
            tuple(
                _exporter_endpoint(ctx, f"{plan.stack}-{p.host}-postgres-exporter-1", p.host, "postgres", from_host)
                for p in plan.placements_of(Role.POSTGRES)
            ),
        ),
        ScrapeJob(
            "redis",
            tuple(
                _exporter_endpoint(ctx, f"{plan.stack}-{p.host}-redis-exporter-1", p.host, "redis", from_host)
                for p in plan.placements_of(Role.REDIS)
            ),
        ),
    ]
    if plan.placements_of(Role.OBJECT_STORE) and ctx.settings.object_store_impl == "minio":
        jobs.append(ScrapeJob("minio", node_endpoints(ctx, from_host), "/minio/v2/metrics/cluster"))
    return tuple(jobs)


def prometheus_config(ctx: SpecContext, host: str) -> str:
    return render(
        "prometheus.yml.j2",
        stack=ctx.plan.stack,
        phase=ctx.plan.phase,
        alertmanager=_exporter_endpoint(
            ctx, ctx.plan.container_name(host, Role.MONITORING, 1) + "-alertmanager", host, "alertmanager", host
        ).url,
        jobs=scrape_jobs(ctx, host),
        host_roles={h.name: ",".join(r.value for r in h.roles) for h in ctx.plan.hosts},
    )


def alertmanager_config(ctx: SpecContext) -> str:
    alerts = ctx.settings.alerts
    return render(
        "alertmanager.yml.j2",
        smtp_host=alerts.smtp_host,
        smtp_from=alerts.smtp_from,
        smtp_password=secret("smtpPassword") if "smtpPassword" in ctx.settings.secrets else "",
        email_to=alerts.email_to,
        slack=alerts.slack,
        slack_webhook_url=secret("slackWebhookUrl") if alerts.slack else "",
    )


GRAFANA_ENTRYPOINT = "/usr/local/bin/selextract-grafana"


def grafana_spec(ctx: SpecContext, host: str, prometheus_name: str) -> ContainerSpec:
    """Grafana with the Prometheus datasource and the scaling dashboard provisioned. It starts
    through a wrapper that sets the stored admin password to the monitoring password (Grafana
    itself reads it only on its first start), then runs the image's own entrypoint."""
    grafana_dir = Path(CONFIG_DIR) / "grafana"
    return ContainerSpec(
        name=f"{prometheus_name}-grafana",
        host=host,
        role=Role.MONITORING,
        image=str(ctx.settings.images.grafana),
        entrypoint=("/bin/sh", GRAFANA_ENTRYPOINT),
        command=("/run.sh",),
        env={
            "GF_SECURITY_ADMIN_USER": "admin",
            "GF_SECURITY_ADMIN_PASSWORD": secret("monitoringPassword"),
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_SERVER_ROOT_URL": f"https://monitoring.{ctx.settings.domain}/grafana/",
            "GF_SERVER_SERVE_FROM_SUB_PATH": "true",
        },
        mounts=(Mount(f"{ctx.plan.stack}-{host}-grafana-data", "/var/lib/grafana"),),
        uploads=(
            Upload(GRAFANA_ENTRYPOINT, (grafana_dir / "entrypoint.sh").read_text(), executable=True),
            Upload(
                "/etc/grafana/provisioning/datasources/prometheus.yml",
                render("grafana/datasource.yml.j2", prometheus_url=f"{prometheus_name}:9090"),
            ),
            Upload("/etc/grafana/provisioning/dashboards/selextract.yml", (grafana_dir / "dashboards.yml").read_text()),
            Upload("/var/lib/grafana/dashboards/scaling.json", (grafana_dir / "scaling-dashboard.json").read_text()),
        ),
        depends_on=(prometheus_name,),
    )


def _exporter(ctx: SpecContext, name: str, host: str, image: str, kind: str, **kw: object) -> ContainerSpec:
    h = ctx.plan.host(host)
    return ContainerSpec(
        name=name,
        host=host,
        role=Role.MONITORING,
        image=image,
        ports=ctx.internal_port(h, EXPORTER_PORTS[kind]),
        # exporters only read: nothing in the container needs to be writable but /tmp
        read_only=True,
        tmpfs=("/tmp",),
        **kw,  # type: ignore[arg-type]
    )


# node_exporter's README (Docker): `-v "/:/host:ro,rslave" --pid=host --path.rootfs=/host`.
# The filesystem collector reads PID 1's mount table and statfs()es each mount point under
# /host, so the labels carry host paths (mountpoint="/", "/mnt/HC_Volume_…"); rslave lets a
# volume mounted after the exporter started appear too. Its README also passes --net=host;
# here the exporter stays on the bridge, published on the private IP only (the policy pack
# refuses host networking: every port would listen on the public address too), so the
# network collectors see the container's interface, not the host's (no alert reads them).
HOST_ROOT = HostMount(source="/", target="/host", read_only=True, propagation="rslave")


def node_exporter_spec(ctx: SpecContext, host: str) -> ContainerSpec:
    """The host's exporter; locally the one exporter reports its own container (every plan
    host is this machine, whose root is not the project's to mount)."""
    name = f"{ctx.plan.stack}-{host}-node-exporter-1"
    if ctx.local:
        return _exporter(ctx, name, host, ctx.settings.images.node_exporter, "node")
    return _exporter(
        ctx,
        name,
        host,
        ctx.settings.images.node_exporter,
        "node",
        command=(f"--path.rootfs={HOST_ROOT.target}",),
        host_mounts=(HOST_ROOT,),
        pid_host=True,
    )


def monitoring_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan, images = ctx.plan, ctx.settings.images
    specs: list[ContainerSpec] = []
    for placement in plan.placements_of(Role.MONITORING):
        host = placement.host
        base = plan.container_name(host, Role.MONITORING, 1)
        ports = (
            (ctx.entry_ports()[0].__class__(9090, ctx.settings.local.monitoring_port, "127.0.0.1"),)
            if ctx.local
            else ctx.internal_port(plan.host(host), PORTS[Role.MONITORING])
        )
        specs.append(
            ContainerSpec(
                name=base,
                host=host,
                role=Role.MONITORING,
                image=images.prometheus,
                command=(
                    "--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    "--storage.tsdb.retention.time=30d",
                    "--web.enable-lifecycle",
                ),
                ports=ports,
                mounts=(Mount(f"{plan.stack}-{host}-prometheus-data", "/prometheus"),),
                uploads=(
                    Upload("/etc/prometheus/prometheus.yml", prometheus_config(ctx, host)),
                    Upload("/etc/prometheus/rules/alert-rules.yml", (Path(CONFIG_DIR) / "alert-rules.yml").read_text()),
                ),
                # promtool ships with Prometheus (its images have no curl or wget); a query
                # answers only once the TSDB is ready.
                healthcheck=Healthcheck(("CMD", "promtool", "query", "instant", "http://127.0.0.1:9090", "vector(1)")),
            )
        )
        specs.append(
            ContainerSpec(
                name=f"{base}-alertmanager",
                host=host,
                role=Role.MONITORING,
                image=images.alertmanager,
                command=("--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"),
                mounts=(Mount(f"{plan.stack}-{host}-alertmanager-data", "/alertmanager"),),
                uploads=(Upload("/etc/alertmanager/alertmanager.yml", alertmanager_config(ctx)),),
            )
        )
        if images.grafana:
            specs.append(grafana_spec(ctx, host, base))
    for host in node_exporter_hosts(ctx):
        specs.append(node_exporter_spec(ctx, host))
    for p in plan.placements_of(Role.POSTGRES):
        pg = plan.endpoint(Role.POSTGRES, p.host)
        specs.append(
            _exporter(
                ctx,
                f"{plan.stack}-{p.host}-postgres-exporter-1",
                p.host,
                images.postgres_exporter,
                "postgres",
                env={
                    "DATA_SOURCE_NAME": f"postgresql://{DB_USER}:{secret('postgresPassword')}@{pg.url}/{DB_NAME}?sslmode=disable"
                },
                depends_on=(pg.name,),
            )
        )
    for p in plan.placements_of(Role.REDIS):
        redis = plan.endpoint(Role.REDIS, p.host)
        specs.append(
            _exporter(
                ctx,
                f"{plan.stack}-{p.host}-redis-exporter-1",
                p.host,
                images.redis_exporter,
                "redis",
                env={"REDIS_ADDR": f"redis://{redis.url}", "REDIS_PASSWORD": secret("redisPassword")},
                depends_on=(redis.name,),
            )
        )
    return specs
