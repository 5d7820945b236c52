"""What the public entry lets through, proven by running the real proxy with the rendered
config: nginx (phases 0-2) and HAProxy (phase 3+) on 127.0.0.1, with small HTTP servers in
place of the API, Prometheus, Grafana and certbot. The API's `/metrics` is refused on the
public hostnames (Prometheus scrapes API containers on the private network, never through
the entry), everything on `monitoring.<domain>` (Grafana included) needs the monitoring
login, and the browser hardening headers are set by both entries."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra.config import load_stack_file
from infra.specs.app import api_proxy_config
from infra.specs.context import SpecContext
from infra.specs.entry import MONITORING_USER, haproxy_config, nginx_config
from infra.topology import Role, plan
from ops.access import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "monitoring-pw-123"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH, WRONG_AUTH = _basic(MONITORING_USER, PASSWORD), _basic(MONITORING_USER, "wrong")
# Every spelling the API (uvicorn percent-decodes the path; Starlette redirects a trailing
# slash) would answer as its own /metrics, plus a query string and a case variant.
METRICS_PROBES = ("/metrics", "/metrics/", "/metrics?name[]=x", "//metrics", "/%6detrics", "/Metrics")


@dataclass
class Backend:
    """A stand-in upstream that answers 200 to everything and records what reached it."""

    name: str
    port: int = 0
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # (host, path, authorization)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def _backends(*names: str) -> Iterator[dict[str, Backend]]:
    servers, out = [], {}
    for name in names:
        backend = Backend(name)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self, backend: Backend = backend) -> None:
                backend.seen.append((self.headers.get("Host", ""), self.path, self.headers.get("Authorization")))
                body = f"{backend.name} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        backend.port = server.server_port
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out[name] = backend
    try:
        yield out
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _swap(text: str, old: str, new: str) -> str:
    """Replace `old`, which must be in the rendered config (a template change fails here, not
    as a proxy that silently dials production names)."""
    assert old in text, f"{old!r} not in the rendered config"
    return text.replace(old, new)


@contextmanager
def _running(cmd: list[str], *ports: int) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        for port in ports:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"{cmd[0]} did not listen on {port} within 15 s")
                    time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(
    port: int, target: str, host: str, *, tls: bool = True, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One request with the target sent byte for byte (no client-side normalisation)."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:  # .ci/run installs it; this only fires on a bare machine
        pytest.fail(f"{tool} not installed: run `make setup` (or scripts/setup-system.sh)")
    return path


def _ctx(stack: str) -> SpecContext:
    settings = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    return SpecContext(plan(settings), settings)


@pytest.fixture()
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "tls"
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=test",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (d / "combined.pem").write_text((d / "cert.pem").read_text() + (d / "key.pem").read_text())
    return d


def _assert_metrics_refused(port: int, hosts: tuple[str, ...], api: Backend) -> None:
    for host in hosts:
        for target in METRICS_PROBES:
            status, _headers, _body = _get(port, target, host)
            assert status == 404, f"{host}{target} answered {status}"
    reached = [seen for seen in api.seen if seen[1] != "/health"]  # HAProxy's health checks
    assert reached == [], f"the API saw {reached}"
    # the harness reaches the API at all (the 404s above are the entry's, not a dead upstream)
    status, headers, body = _get(port, "/api/v1/account", hosts[0])
    assert (status, body) == (200, "api /api/v1/account")
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


def _assert_monitoring_needs_the_login(port: int, host: str, up: dict[str, Backend]) -> None:
    for target, backend in (("/graph", "prometheus"), ("/grafana/", "grafana"), ("/grafana/api/health", "grafana")):
        assert _get(port, target, host)[0] == 401, f"{host}{target} without the login"
        assert _get(port, target, host, headers=WRONG_AUTH)[0] == 401, f"{host}{target} with a wrong password"
        assert up[backend].seen == [], f"{backend} was reached without the login"
        status, _headers, body = _get(port, target, host, headers=AUTH)
        assert (status, body) == (200, f"{backend} {target}")
        up[backend].seen.clear()


def test_nginx_entry_refuses_api_metrics_and_guards_monitoring(certs: Path, tmp_path: Path) -> None:
    """Phases 0-2 (phase2: TLS, Grafana configured)."""
    ctx = _ctx("phase2")
    host = ctx.plan.hosts_with(Role.API)[0].name
    conf, proxy = nginx_config(ctx, host)
    domain = ctx.settings.domain
    p80, p443 = free_port(), free_port()
    with _backends("api", "prometheus", "grafana") as up:
        conf = _swap(conf, " /tmp/nginx", f" {tmp_path}/nginx")  # pid and temp files
        conf = _swap(conf, "listen 80 default_server;", f"listen 127.0.0.1:{p80} default_server;")
        conf = _swap(conf, "listen 443 ssl default_server;", f"listen 127.0.0.1:{p443} ssl default_server;")
        conf = _swap(conf, "listen 443 ssl;", f"listen 127.0.0.1:{p443} ssl;")
        conf = _swap(conf, f"http://{ctx.plan.pool_alias(host, Role.API)}:8000", f"http://{up['api'].url}")
        conf = _swap(conf, f"http://{ctx.plan.endpoint(Role.MONITORING, host).url};", f"http://{up['prometheus'].url};")
        conf = _swap(
            conf,
            f"http://{ctx.plan.container_name(host, Role.MONITORING, 1)}-grafana:3000",
            f"http://{up['grafana'].url}",
        )
        conf = _swap(conf, "/etc/selextract/tls", str(certs))
        conf = _swap(conf, "/etc/nginx/selextract-proxy.conf", str(tmp_path / "proxy.conf"))
        (certs / "monitoring.htpasswd").write_text(f"{MONITORING_USER}:{{PLAIN}}{PASSWORD}\n")
        (tmp_path / "proxy.conf").write_text(proxy)
        (tmp_path / "nginx.conf").write_text(conf)
        cmd = [_need("nginx"), "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "/dev/stderr",
               "-g", "daemon off; user root;"]  # fmt: skip
        with _running(cmd, p80, p443):
            _assert_metrics_refused(p443, (f"api.{domain}", f"app.{domain}", "127.0.0.1"), up["api"])
            _assert_monitoring_needs_the_login(p443, f"monitoring.{domain}", up)


def test_haproxy_entry_refuses_api_metrics_and_guards_monitoring(certs: Path, tmp_path: Path) -> None:
    """Phase 3+ (phase3: TLS, ACME, Grafana configured, three API servers)."""
    ctx = _ctx("phase3")
    lb = ctx.plan.placements_of(Role.LB)[0].host
    cfg = haproxy_config(ctx, lb, cert_path=str(certs / "combined.pem"))
    domain = ctx.settings.domain
    p80, p443 = free_port(), free_port()
    with _backends("api", "prometheus", "grafana", "acme") as up:
        cfg = _swap(cfg, "bind *:80", f"bind 127.0.0.1:{p80}")
        cfg = _swap(cfg, "bind *:443", f"bind 127.0.0.1:{p443}")
        for endpoint in ctx.plan.endpoints(Role.API, lb):
            cfg = _swap(cfg, f" {endpoint.url} check", f" {up['api'].url} check")
        cfg = _swap(cfg, f" {ctx.plan.endpoint(Role.MONITORING, lb).url} check", f" {up['prometheus'].url} check")
        cfg = _swap(cfg, f"{ctx.plan.container_name(lb, Role.MONITORING, 1)}-grafana:3000", up["grafana"].url)
        cfg = _swap(cfg, f"{ctx.plan.stack}-{lb}-certbot-1:8402", up["acme"].url)
        cfg = _swap(cfg, "/run/haproxy-admin.sock", str(tmp_path / "admin.sock"))
        cfg = _swap(cfg, f"bind {ctx.plan.host(lb).private_ip}:8404", f"bind 127.0.0.1:{free_port()}")
        (tmp_path / "haproxy.cfg").write_text(cfg)
        (tmp_path / "users.cfg").write_text(
            f"userlist monitoring_users\n    user {MONITORING_USER} insecure-password {PASSWORD}\n"
        )
        cmd = [_need("haproxy"), "-db", "-f", str(tmp_path / "haproxy.cfg"), "-f", str(tmp_path / "users.cfg")]
        with _running(cmd, p80, p443):
            _assert_metrics_refused(p443, (f"api.{domain}", f"app.{domain}", "127.0.0.1"), up["api"])
            _assert_monitoring_needs_the_login(p443, f"monitoring.{domain}", up)
            # certificate renewal for monitoring.<domain> still reaches certbot without a login
            status, _headers, body = _get(p80, "/.well-known/acme-challenge/tok", f"monitoring.{domain}", tls=False)
            assert (status, body) == (200, "acme /.well-known/acme-challenge/tok")


@pytest.mark.parametrize("stack", ["local", "phase1", "phase2", "phase3", "phase4"])
def test_prometheus_scrapes_the_api_without_the_public_entry(stack: str) -> None:
    """The `api` scrape targets are API containers on Prometheus' own engine or, across hosts,
    the API host's private proxy: never an entry, so refusing /metrics there costs nothing."""
    from infra.specs.monitoring import scrape_jobs

    ctx = _ctx(stack)
    prom_host = ctx.plan.placements_of(Role.MONITORING)[0].host
    api_job = next(j for j in scrape_jobs(ctx, prom_host) if j.name == "api")
    assert api_job.targets and api_job.metrics_path is None  # /metrics
    entry_names = {
        ctx.plan.container_name(p.host, p.role, 1) for r in (Role.ENTRY, Role.LB) for p in ctx.plan.placements_of(r)
    }
    for target in api_job.targets:
        assert target.address not in entry_names
        if target.address == str(ctx.plan.host(target.host).private_ip):
            assert target.port == 8000 and Role.API in ctx.plan.host(target.host).roles
        else:
            assert target.address in {e.address for e in ctx.plan.endpoints(Role.API, target.host)}


def test_private_api_proxy_still_serves_metrics_to_prometheus(tmp_path: Path) -> None:
    """Phase 3+ on Hetzner: Prometheus dials each API host's proxy on its private address;
    that proxy passes /metrics through (it is not on a public hostname)."""
    ctx = _ctx("phase3")
    host = ctx.plan.hosts_with(Role.API)[0].name
    port = free_port()
    with _backends("api") as up:
        conf = api_proxy_config(ctx, host)
        conf = _swap(conf, "listen 8000;", f"listen 127.0.0.1:{port};")
        conf = _swap(conf, f"http://{ctx.plan.pool_alias(host, Role.API)}:8000", f"http://{up['api'].url}")
        conf = _swap(conf, " /tmp/nginx", f" {tmp_path}/nginx")
        (tmp_path / "nginx.conf").write_text(conf)
        cmd = [_need("nginx"), "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "/dev/stderr",
               "-g", "daemon off; user root;"]  # fmt: skip
        with _running(cmd, port):
            status, _headers, body = _get(port, "/metrics", f"{ctx.plan.host(host).private_ip}:8000", tls=False)
            assert (status, body) == (200, "api /metrics")
