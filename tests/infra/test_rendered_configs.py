"""Every config the program renders, for every stack, checked by the real tool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.config import load_stack_file
from infra.hosts.hardening import cloud_init, hardening_script
from infra.specs.context import SpecContext
from infra.specs.entry import haproxy_config, nginx_config
from infra.specs.monitoring import alertmanager_config, prometheus_config
from infra.topology import Role, plan

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted(ROOT.glob("Pulumi.*.yaml"))


def _ctx(stack_file: Path) -> SpecContext:
    settings = load_stack_file(stack_file)
    return SpecContext(plan(settings), settings)


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:  # .ci/run installs every one of these; this only fires on a bare machine
        pytest.fail(f"{tool} not installed: run `make setup` (or scripts/setup-system.sh)")
    return path


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    _run(
        [
            "openssl",
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ]
    )
    (d / "combined.pem").write_text((d / "cert.pem").read_text() + (d / "key.pem").read_text())
    return d


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_haproxy_config_is_valid(stack_file: Path, cert: Path, tmp_path: Path) -> None:
    ctx = _ctx(stack_file)
    lbs = ctx.plan.placements_of(Role.LB) or ctx.plan.placements_of(Role.ENTRY)
    cfg = haproxy_config(ctx, lbs[0].host, cert_path=str(cert / "combined.pem"))
    _haproxy_check(cfg, tmp_path)
    assert "option httpchk GET /health" in cfg
    assert "insecure-password" not in cfg, "the monitoring login is a second file, written in place"


def _haproxy_check(cfg: str, tmp_path: Path) -> None:
    """`haproxy -c` on the config plus the userlist file the password-sync step writes."""
    (tmp_path / "haproxy.cfg").write_text(cfg)
    (tmp_path / "users.cfg").write_text("userlist monitoring_users\n    user admin insecure-password pw\n")
    _run([_need("haproxy"), "-c", "-f", str(tmp_path / "haproxy.cfg"), "-f", str(tmp_path / "users.cfg")])


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_nginx_config_is_valid(stack_file: Path, cert: Path, tmp_path: Path) -> None:
    ctx = _ctx(stack_file)
    host = ctx.plan.hosts_with(Role.API)[0].name
    conf, proxy = nginx_config(ctx, host)
    _nginx_check(conf, proxy, cert, tmp_path)
    assert f"set $selextract_api http://{ctx.plan.pool_alias(host, Role.API)}:8000;" in conf


def _nginx_check(conf: str, proxy: str, cert: Path, tmp_path: Path) -> None:
    conf = conf.replace("/etc/selextract/tls", str(cert)).replace(
        "/etc/nginx/selextract-proxy.conf", str(tmp_path / "proxy.conf")
    )
    (tmp_path / "proxy.conf").write_text(proxy)
    (tmp_path / "nginx.conf").write_text(conf)
    _run([_need("nginx"), "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "/dev/stderr"])


@pytest.mark.parametrize(
    ("entry", "zone", "limit", "per_10s"),
    [
        (None, "rate=50r/s;", "limit_req zone=api burst=100 nodelay;", 600),
        (
            {"rateLimitPerSecond": 400, "rateLimitBurst": 800},
            "rate=400r/s;",
            "limit_req zone=api burst=800 nodelay;",
            4800,
        ),
        ({"rateLimitPerSecond": 0}, None, None, None),
    ],
)
def test_entry_rate_limit_comes_from_stack_config(
    entry: dict | None, zone: str | None, limit: str | None, per_10s: int | None, cert: Path, tmp_path: Path
) -> None:
    """Both entries take the limit from the stack: nginx as rate + burst, HAProxy (phase 3+)
    as the count over 10 s that rate + burst lets through."""
    doc = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())
    if entry is not None:
        doc["config"]["selextract:entry"] = entry
    stack_file = tmp_path / "Pulumi.ratelimit.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    ctx = _ctx(stack_file)
    conf, proxy = nginx_config(ctx, ctx.plan.hosts_with(Role.API)[0].name)
    _nginx_check(conf, proxy, cert, tmp_path)
    if zone is None:
        assert "limit_req" not in conf + proxy
    else:
        assert f"limit_req_zone $binary_remote_addr zone=api:10m {zone}" in conf
        assert limit in proxy
    host = ctx.plan.hosts_with(Role.API)[0].name
    cfg = haproxy_config(ctx, host, cert_path=str(cert / "combined.pem"))
    _haproxy_check(cfg, tmp_path)
    if per_10s is None:
        assert "sc_http_req_rate" not in cfg
    else:
        assert f"http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {per_10s} }}" in cfg


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_prometheus_config_and_rules_are_valid(stack_file: Path, tmp_path: Path) -> None:
    ctx = _ctx(stack_file)
    host = ctx.plan.placements_of(Role.MONITORING)[0].host
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shutil.copy(ROOT / "configs" / "alert-rules.yml", rules_dir / "alert-rules.yml")
    cfg = prometheus_config(ctx, host).replace("/etc/prometheus/rules", str(rules_dir))
    (tmp_path / "prometheus.yml").write_text(cfg)
    _run([_need("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    jobs = {j["job_name"]: j for j in yaml.safe_load(cfg)["scrape_configs"]}
    api_targets = [t["targets"][0] for t in jobs["api"]["static_configs"]]
    assert api_targets == [e.url for e in ctx.plan.endpoints(Role.API, host)]
    if ctx.plan.target == "hetzner":
        node_hosts = {t["labels"]["host"] for t in jobs["node"]["static_configs"]}
        assert node_hosts == {h.name for h in ctx.plan.hosts}, "every host is scraped"


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_alertmanager_config_is_valid(stack_file: Path, tmp_path: Path) -> None:
    ctx = _ctx(stack_file)
    cfg = alertmanager_config(ctx).replace("@@secret:smtpPassword@@", "pw")
    cfg = cfg.replace("@@secret:slackWebhookUrl@@", "https://hooks.slack.com/services/T/B/X")
    (tmp_path / "alertmanager.yml").write_text(cfg)
    _run([_need("amtool"), "check-config", str(tmp_path / "alertmanager.yml")])


@pytest.mark.parametrize("stack_file", [p for p in STACKS if p.name != "Pulumi.local.yaml"], ids=lambda p: p.name)
def test_cloud_init_schema_and_hardening(stack_file: Path, tmp_path: Path) -> None:
    ctx = _ctx(stack_file)
    for host in ctx.plan.hosts:
        text = cloud_init(ctx.settings, host)
        path = tmp_path / f"{host.name}.yaml"
        path.write_text(text)
        _run([_need("cloud-init"), "schema", "--config-file", str(path)])
        doc = yaml.safe_load(text)
        assert doc["ssh_pwauth"] is False and doc["disable_root"] is True
        files = {f["path"]: f["content"] for f in doc["write_files"]}
        sshd = files["/etc/ssh/sshd_config.d/10-selextract.conf"]
        assert "PermitRootLogin no" in sshd and "PasswordAuthentication no" in sshd
        assert "[sshd]\nenabled = true" in files["/etc/fail2ban/jail.local"]
        assert "net.core.somaxconn = 65535" in files["/etc/sysctl.d/90-selextract.conf"]
        assert "ufw default deny incoming" in doc["runcmd"]
        opened = [c for c in doc["runcmd"] if c.startswith("ufw allow") and "from" not in c]
        assert opened == (["ufw allow 80/tcp", "ufw allow 443/tcp"] if host.is_entry else [])
        assert {"docker.io", "fail2ban", "ufw", "unattended-upgrades"} <= set(doc["packages"])
        # the dedicated-server path applies the same rules
        script = hardening_script(ctx.settings, host)
        _run(["bash", "-n", "-c", script])
        assert sshd.strip() in script and "ufw default deny incoming" in script


def test_alert_rules_fire_at_their_thresholds_and_not_below() -> None:
    # configs/alert-rules.test.yml: each scaling alert just above its threshold (fires after
    # its `for`) beside a series exactly at the threshold (stays silent).
    _run([_need("promtool"), "check", "rules", str(ROOT / "configs" / "alert-rules.yml")])
    proc = _run([_need("promtool"), "test", "rules", str(ROOT / "configs" / "alert-rules.test.yml")])
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_alert_rule_thresholds_match_the_guides() -> None:
    rules = {
        r["alert"]: r
        for g in yaml.safe_load((ROOT / "configs" / "alert-rules.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert (rules["DatabaseCPUHigh"]["expr"], rules["DatabaseCPUHigh"]["for"]) == (
        "postgres_cpu_usage_percent > 80",
        "15m",
    )
    assert (rules["TaskQueueDepthHigh"]["expr"], rules["TaskQueueDepthHigh"]["for"]) == (
        "celery_queue_length > 100",
        "10m",
    )
    assert (rules["APIResponseTimeHigh"]["expr"], rules["APIResponseTimeHigh"]["for"]) == (
        "api_response_time_95th > 2",
        "5m",
    )
    assert (rules["StorageUsageHigh"]["expr"], rules["StorageUsageHigh"]["for"]) == ("disk_usage_percent > 80", "5m")


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_grafana_provisioning_where_an_image_is_configured(stack_file: Path) -> None:
    import json

    from infra.specs import build_specs

    ctx = _ctx(stack_file)
    grafana = [s for s in build_specs(ctx.plan, ctx.settings) if s.name.endswith("-grafana")]
    assert len(grafana) == (1 if ctx.settings.images.grafana else 0)
    for spec in grafana:
        files = {u.path: u.content for u in spec.uploads}
        datasource = yaml.safe_load(files["/etc/grafana/provisioning/datasources/prometheus.yml"])
        assert datasource["datasources"][0]["url"].endswith("-monitoring-1:9090")
        dashboard = json.loads(files["/var/lib/grafana/dashboards/scaling.json"])
        exprs = {t["expr"] for p in dashboard["panels"] for t in p["targets"]}
        assert {"api_response_time_95th", "celery_queue_length", "disk_usage_percent"} <= exprs
        assert spec.env["GF_SECURITY_ADMIN_PASSWORD"] == "@@secret:monitoringPassword@@"


def test_dashboard_queries_are_valid_promql_on_metrics_that_exist(tmp_path: Path) -> None:
    """Every panel query parses (promtool, as recording rules) and every selextract_worker_*
    metric it names is one the workers export (worker/metrics.py)."""
    import json

    from worker import metrics

    dashboard = json.loads((ROOT / "configs/grafana/scaling-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"panel:q{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump(rules))
    _run([_need("promtool"), "check", "rules", str(tmp_path / "dashboard-rules.yml")])
    exported = {
        m.describe()[0].name
        for m in (
            metrics.TASK_DURATION,
            metrics.TASKS,
            metrics.TASKS_IN_PROGRESS,
            metrics.PAGES_FETCHED,
            metrics.FETCH_ERRORS,
        )
    }
    used = {re.sub(r"_(bucket|total)$", "", n) for e in exprs for n in re.findall(r"selextract_worker_\w+", e)}
    assert used and used <= exported, used - exported
    panels = {p["title"] for p in dashboard["panels"]}
    assert any("runtime" in t for t in panels) and any("outcome" in t for t in panels)


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_acme_certbot_beside_the_entry_on_hetzner_only(stack_file: Path, tmp_path: Path) -> None:
    from infra.specs import build_specs

    ctx = _ctx(stack_file)
    specs = build_specs(ctx.plan, ctx.settings)
    certbot = [s for s in specs if s.name.endswith("-certbot-1")]
    if ctx.settings.tls.mode != "acme" or ctx.local:
        assert certbot == []
        return
    (spec,) = certbot
    assert spec.host == ctx.plan.entry_host
    script = spec.uploads[0].content
    _run(["sh", "-n", "-c", script])
    for record in ("app", "api", "monitoring"):
        assert f"-d {record}.{ctx.settings.domain}" in script
    assert f'--email "{ctx.settings.tls.email}"' in script
    entry = next(s for s in specs if s.name.endswith(("-entry-1", "-lb-1")))
    assert set(spec.volumes) & set(entry.volumes), "certbot and the proxy share the certificate volume"
    assert entry.env["RELOAD_EVERY"] == "21600"


@pytest.mark.parametrize(
    "stack_file", [p for p in STACKS if p.name in ("Pulumi.phase3.yaml", "Pulumi.phase4.yaml")], ids=lambda p: p.name
)
def test_api_proxy_config_is_valid(stack_file: Path, tmp_path: Path) -> None:
    from infra.specs.app import api_proxy_config, api_proxy_specs

    ctx = _ctx(stack_file)
    proxies = api_proxy_specs(ctx)
    assert sorted(s.host for s in proxies) == sorted(h.name for h in ctx.plan.hosts_with(Role.API))
    for spec in proxies:
        assert [(p.ip, p.external) for p in spec.ports] == [(ctx.plan.host(spec.host).private_ip, 8000)]
    conf = api_proxy_config(ctx, proxies[0].host)
    (tmp_path / "nginx.conf").write_text(conf)
    _run([_need("nginx"), "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "/dev/stderr"])


def test_app_containers_carry_the_version_and_stable_aliases() -> None:
    from infra.specs import build_specs

    ctx = _ctx(ROOT / "Pulumi.phase2.yaml")
    specs = build_specs(ctx.plan, ctx.settings, version="abc123")
    api = next(s for s in specs if s.role == Role.API and s.image == "build:app")
    assert api.name == "phase2-app-01-api-1-abc123" and api.versioned
    assert api.aliases == ("phase2-app-01-api-1", "phase2-app-01-api")
    assert api.ports == (), "API containers publish nothing: the entry or the host's API proxy fronts them"
    postgres = next(s for s in specs if s.role == Role.POSTGRES)
    assert not postgres.versioned


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_every_worker_container_is_a_prometheus_target(stack_file: Path, tmp_path: Path) -> None:
    """The worker job lists one target per worker container of the plan, each reachable:
    by name on Prometheus' own engine, through the worker host's metrics proxy (private IP,
    one port per container) elsewhere."""
    from infra.specs import build_specs
    from infra.specs.app import worker_metrics_proxy_config

    ctx = _ctx(stack_file)
    plan_ = ctx.plan
    prom_host = plan_.placements_of(Role.MONITORING)[0].host
    jobs = {j["job_name"]: j for j in yaml.safe_load(prometheus_config(ctx, prom_host))["scrape_configs"]}
    targets = [
        (t["targets"][0], t["labels"]["host"], t["labels"]["container"]) for t in jobs["worker"]["static_configs"]
    ]
    slots = [
        (p.host, plan_.container_name(p.host, Role.WORKER, i))
        for p in plan_.placements_of(Role.WORKER)
        for i in range(1, p.containers + 1)
    ]
    assert [(host, name) for _url, host, name in targets] == slots
    assert len(targets) == plan_.worker_containers
    assert {host for _u, host, _n in targets} == {h.name for h in plan_.hosts_with(Role.WORKER)}

    specs = build_specs(plan_, ctx.settings)
    workers = [s for s in specs if s.role == Role.WORKER]
    for spec in workers:
        assert spec.metrics_port == 9808 and spec.env["WORKER_METRICS_PORT"] == "9808"
        assert spec.ports == (), "a versioned worker publishes nothing (old and new overlap on deploy)"
        assert spec.read_only and spec.env["PROMETHEUS_MULTIPROC_DIR"].startswith(tuple(t + "/" for t in spec.tmpfs))
    proxies = {s.host: s for s in specs if s.name.endswith("-metrics-proxy-1")}
    for url, host, name in targets:
        address, port = url.rsplit(":", 1)
        if ctx.local or host == prom_host:
            assert (address, port) == (name, "9808"), "same engine: the worker's alias on the stack network"
            assert host not in proxies
            continue
        assert address == plan_.host(host).private_ip
        published = {(p.ip, p.internal, p.external) for p in proxies[host].ports}
        assert (address, int(port), int(port)) in published
        assert f"listen {port};\n        set $worker http://{name}:9808;" in worker_metrics_proxy_config(ctx, host)
    assert set(proxies) == {h for _u, h, _n in targets if not ctx.local and h != prom_host}
    for host, proxy in proxies.items():
        assert all(p.ip == plan_.host(host).private_ip for p in proxy.ports), "private network only"
        assert proxy.role == Role.MONITORING
    if proxies:
        host = sorted(proxies)[0]
        (tmp_path / "nginx.conf").write_text(worker_metrics_proxy_config(ctx, host))
        _run([_need("nginx"), "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "/dev/stderr"])


def test_adding_a_worker_server_adds_its_targets() -> None:
    from infra.config import load_settings

    base = yaml.safe_load((ROOT / "Pulumi.phase4.yaml").read_text())["config"]

    def worker_targets(servers: int) -> list[str]:
        settings = load_settings(
            {**base, "selextract:workers": {**base["selextract:workers"], "servers": servers}}, stack="phase4"
        )
        ctx = SpecContext(plan(settings), settings)
        host = ctx.plan.placements_of(Role.MONITORING)[0].host
        jobs = {j["job_name"]: j for j in yaml.safe_load(prometheus_config(ctx, host))["scrape_configs"]}
        return [t["targets"][0] for t in jobs["worker"]["static_configs"]]

    four, five = worker_targets(4), worker_targets(5)
    assert len(four) == 16 and five[:16] == four
    assert len({t.rsplit(":", 1)[0] for t in five[16:]}) == 1 and [t.rsplit(":", 1)[1] for t in five[16:]] == [
        "9808",
        "9809",
        "9810",
        "9811",
    ]
