"""The public entry: nginx on the app host (phases 0-2) or HAProxy on the LB (phase 3+)."""

from __future__ import annotations

from pathlib import Path

from infra.render import CONFIG_DIR, render
from infra.specs.app import api_proxy_specs, api_specs
from infra.specs.base import ContainerSpec, Healthcheck, Mount, PasswordSync, Upload, secret
from infra.specs.context import SpecContext
from infra.topology import Role

TLS_DIR = "/etc/selextract/tls"
ACME_WEBROOT = "/var/www/acme"
ACME_STANDALONE_PORT = 8402  # HAProxy forwards /.well-known/acme-challenge/ here
ENTRYPOINT = "/usr/local/bin/selextract-tls-entrypoint"
MONITORING_USER = "admin"
# The monitoring login lives on the entry's TLS volume, not in its uploads: a new password
# is written there and the proxy reloaded in place (a new upload would replace the only
# public door), and a replaced container finds it again.
MONITORING_HTPASSWD = f"{TLS_DIR}/monitoring.htpasswd"  # nginx; read by its workers
MONITORING_USERLIST = f"{TLS_DIR}/monitoring-users.cfg"  # HAProxy: a second -f file
HAPROXY_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"

# stdin: the password. The file is swapped whole, then nginx reloads gracefully.
NGINX_SET_MONITORING_PASSWORD = f"""set -eu
read -r pw
printf '{MONITORING_USER}:{{PLAIN}}%s\\n' "$pw" > {MONITORING_HTPASSWD}.new
chmod 644 {MONITORING_HTPASSWD}.new
mv {MONITORING_HTPASSWD}.new {MONITORING_HTPASSWD}
nginx -s reload
"""

# stdin: the password. Checked together with haproxy.cfg before the master (PID 1) reloads
# its worker; the listening sockets pass to the new worker (expose-fd listeners).
HAPROXY_SET_MONITORING_PASSWORD = f"""set -eu
read -r pw
umask 077
{{ echo 'userlist monitoring_users'
  printf '    user {MONITORING_USER} insecure-password %s\\n' "$pw"; }} > {MONITORING_USERLIST}.new
haproxy -c -q -f {HAPROXY_CONFIG} -f {MONITORING_USERLIST}.new
mv {MONITORING_USERLIST}.new {MONITORING_USERLIST}
kill -USR2 1
"""


BOOTSTRAP_DIR = "/etc/selextract/tls-bootstrap"


def _tls_uploads() -> tuple[Upload, ...]:
    """The entrypoint wrapper and the bootstrap certificate it installs when none exists."""
    cert, key = secret("tlsBootstrapCert"), secret("tlsBootstrapKey")
    return (
        Upload(ENTRYPOINT, (Path(CONFIG_DIR) / "tls-entrypoint.sh").read_text(), executable=True),
        Upload(f"{BOOTSTRAP_DIR}/cert.pem", cert),
        Upload(f"{BOOTSTRAP_DIR}/key.pem", key),
        Upload(f"{BOOTSTRAP_DIR}/combined.pem", cert + key),
    )


def _grafana_url(ctx: SpecContext) -> str | None:
    # Grafana runs beside Prometheus, which is always on the entry host.
    if not ctx.settings.images.grafana:
        return None
    monitoring = ctx.plan.placements_of(Role.MONITORING)[0].host
    return f"{ctx.plan.container_name(monitoring, Role.MONITORING, 1)}-grafana:3000"


def nginx_config(ctx: SpecContext, host: str) -> tuple[str, str]:
    """(nginx.conf, selextract-proxy.conf) for the entry on `host`."""
    conf = render(
        "nginx.conf.j2",
        tls=ctx.tls,
        domain=ctx.settings.domain,
        api_pool=ctx.plan.pool_alias(host, Role.API),
        # Locally HTTPS is published on another port than 443; redirects must name it.
        https_port_suffix=f":{ctx.settings.local.https_port}" if ctx.local else "",
        monitoring_url=ctx.plan.endpoint(Role.MONITORING, host).url,
        grafana_url=_grafana_url(ctx),
        cert_path=f"{TLS_DIR}/cert.pem",
        key_path=f"{TLS_DIR}/key.pem",
        htpasswd_path=MONITORING_HTPASSWD,
        rate_limit_per_second=ctx.settings.entry.rate_limit_per_second,
    )
    proxy = render(
        "nginx-proxy.conf.j2",
        rate_limit=ctx.settings.entry.rate_limit_per_second > 0,
        rate_limit_burst=ctx.settings.entry.rate_limit_burst,
    )
    return conf, proxy


def haproxy_config(ctx: SpecContext, host: str, *, cert_path: str) -> str:
    return render(
        "haproxy.cfg.j2",
        tls=ctx.tls,
        cert_path=cert_path,
        domain=ctx.settings.domain,
        api_servers=ctx.plan.endpoints(Role.API, host),
        # Locally HAProxy dials API containers by their slot alias, which old and new
        # version share during a deploy; on Hetzner it dials each API host's proxy.
        discover_api=ctx.local,
        monitoring_url=ctx.plan.endpoint(Role.MONITORING, host).url,
        grafana_url=_grafana_url(ctx),
        https_port_suffix=f":{ctx.settings.local.https_port}" if ctx.local else "",
        acme_url=f"{ctx.plan.stack}-{host}-certbot-1:{ACME_STANDALONE_PORT}" if _acme(ctx) else None,
        stats_bind="127.0.0.1:8404" if ctx.local else f"{ctx.plan.host(host).private_ip}:8404",
        rate_limit_per_10s=10 * ctx.settings.entry.rate_limit_per_second + ctx.settings.entry.rate_limit_burst
        if ctx.settings.entry.rate_limit_per_second
        else 0,
    )


def certbot_spec(ctx: SpecContext, host: str, *, standalone: bool) -> ContainerSpec:
    """Let's Encrypt (HTTP-01) beside the entry: webroot behind nginx, standalone behind HAProxy."""
    domains = [f"{r}.{ctx.settings.domain}" for r in ctx.settings.dns.records]
    challenge = f"--standalone --http-01-port {ACME_STANDALONE_PORT}" if standalone else f"--webroot -w {ACME_WEBROOT}"
    tls = ctx.settings.tls
    script = render(
        "certbot-loop.sh.j2", domains=domains, email=tls.email, acme_server=tls.acme_server, challenge_args=challenge
    )
    mounts = [
        Mount(f"{ctx.plan.stack}-{host}-tls", TLS_DIR),
        Mount(f"{ctx.plan.stack}-{host}-letsencrypt", "/etc/letsencrypt"),
    ]
    if not standalone:
        mounts.append(Mount(f"{ctx.plan.stack}-{host}-acme", ACME_WEBROOT))
    return ContainerSpec(
        name=f"{ctx.plan.stack}-{host}-certbot-1",
        host=host,
        role=Role.ENTRY,
        image=ctx.settings.images.certbot,
        entrypoint=("/bin/sh",),
        command=("/usr/local/bin/selextract-certbot",),
        mounts=tuple(mounts),
        uploads=(Upload("/usr/local/bin/selextract-certbot", script, executable=True),),
    )


def _acme(ctx: SpecContext) -> bool:
    return ctx.settings.tls.mode == "acme" and not ctx.local


def _api_dependencies(ctx: SpecContext) -> tuple[str, ...]:
    """What the entry proxies to, on whichever hosts: every API container and each API
    host's proxy (what the entry dials there). Pulumi orders resources across providers."""
    return tuple(s.logical_name for s in (*api_specs(ctx), *api_proxy_specs(ctx)))


def entry_specs(ctx: SpecContext) -> list[ContainerSpec]:
    plan = ctx.plan
    specs = []
    common_env = {"TLS_COMMON_NAME": "localhost" if ctx.local else ctx.settings.domain}
    if _acme(ctx):
        common_env["RELOAD_EVERY"] = "21600"  # pick up renewed certificates every 6 h
    api_names = _api_dependencies(ctx)
    for placement in plan.placements_of(Role.ENTRY):
        host = placement.host
        conf, proxy = nginx_config(ctx, host)
        specs.append(
            ContainerSpec(
                name=plan.container_name(host, Role.ENTRY, 1),
                host=host,
                role=Role.ENTRY,
                image=ctx.settings.images.nginx,
                entrypoint=("/bin/sh", ENTRYPOINT),
                command=("nginx", "-g", "daemon off;"),
                env=common_env,
                ports=ctx.entry_ports(),
                mounts=(
                    Mount(f"{plan.stack}-{host}-tls", TLS_DIR),
                    *((Mount(f"{plan.stack}-{host}-acme", ACME_WEBROOT),) if _acme(ctx) else ()),
                ),
                uploads=(
                    *_tls_uploads(),
                    Upload("/etc/nginx/nginx.conf", conf),
                    Upload("/etc/nginx/selextract-proxy.conf", proxy),
                ),
                healthcheck=Healthcheck(("CMD-SHELL", "nginx -t -q")),
                depends_on=api_names,
                password_sync=PasswordSync(NGINX_SET_MONITORING_PASSWORD, secret("monitoringPassword") + "\n"),
            )
        )
        if _acme(ctx):
            specs.append(certbot_spec(ctx, host, standalone=False))
    for placement in plan.placements_of(Role.LB):
        host = placement.host
        specs.append(
            ContainerSpec(
                name=plan.container_name(host, Role.LB, 1),
                host=host,
                role=Role.LB,
                image=ctx.settings.images.haproxy,
                entrypoint=("/bin/sh", ENTRYPOINT),
                command=("haproxy", "-W", "-db", "-f", HAPROXY_CONFIG, "-f", MONITORING_USERLIST),
                user="root",  # the entrypoint writes the certificate; haproxy.cfg drops to haproxy
                env={**common_env, "MONITORING_USERLIST": MONITORING_USERLIST},
                ports=ctx.entry_ports(),
                mounts=(Mount(f"{plan.stack}-{host}-tls", TLS_DIR),),
                uploads=(
                    *_tls_uploads(),
                    Upload(HAPROXY_CONFIG, haproxy_config(ctx, host, cert_path=f"{TLS_DIR}/combined.pem")),
                ),
                healthcheck=Healthcheck(("CMD-SHELL", f"haproxy -c -q -f {HAPROXY_CONFIG} -f {MONITORING_USERLIST}")),
                depends_on=api_names,
                password_sync=PasswordSync(HAPROXY_SET_MONITORING_PASSWORD, secret("monitoringPassword") + "\n"),
            )
        )
        if _acme(ctx):
            specs.append(certbot_spec(ctx, host, standalone=True))
    return specs
