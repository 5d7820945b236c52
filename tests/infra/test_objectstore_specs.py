"""The object store's containers as data, on real separate hosts and locally.

MinIO (AGPL: never run here) is checked the way MinIO decides it: every node gets the same
pool `http://minio-{01...N}.internal:9000/data`; a node serves the drive whose host name
resolves to an address of its own container (its Docker hostname), and dials the others'
names, which must resolve to a private IP where that node publishes the port. SeaweedFS
(run for real elsewhere) is checked the same way for master, volume and S3 addresses. The
app, workers, buckets step and backups reach the store through one URL per host: a
load-balancing proxy on that host when several nodes serve S3, so losing any one node
does not stop storage.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.config import Settings, load_stack_file
from infra.specs import build_specs
from infra.specs.base import ContainerSpec
from infra.specs.context import SpecContext
from infra.specs.monitoring import scrape_jobs
from infra.specs.objectstore import (
    LB_ALIAS,
    node_endpoints,
    node_name,
    objectstore_url,
    s3_proxy_config,
)
from infra.topology import Role, plan
from tests.infra.pulumi_harness import ROOT

PHASE4 = ROOT / "Pulumi.phase4.yaml"
MINIO_HOSTS = [f"minio-{i:02d}" for i in range(1, 5)]


def _settings(stack: Path = PHASE4, phase: int | None = None, **store: object) -> Settings:
    overrides: dict[str, object] = {} if phase is None else {"selextract:phase": phase}
    if store:
        overrides["selextract:objectStore"] = {"nodes": 4, "volumeGb": 500, **store}
    return load_stack_file(stack, overrides=overrides)


def _specs(settings: Settings) -> dict[str, ContainerSpec]:
    return {s.name: s for s in build_specs(plan(settings), settings)}


def _nodes(settings: Settings) -> list[ContainerSpec]:
    p = plan(settings)
    specs = _specs(settings)
    return [specs[p.container_name(pl.host, Role.OBJECT_STORE, 1)] for pl in p.placements_of(Role.OBJECT_STORE)]


def _expand(pattern: str) -> list[str]:
    """MinIO's ellipsis notation, `{01...04}` (one range; zero-padded to the width given)."""
    m = re.search(r"\{(\d+)\.\.\.(\d+)\}", pattern)
    assert m, pattern
    width = len(m.group(1))
    return [pattern[: m.start()] + f"{i:0{width}d}" + pattern[m.end() :] for i in range(int(m[1]), int(m[2]) + 1)]


def _resolve(spec: ContainerSpec, name: str) -> str:
    """What `name` resolves to inside the container: "self" for its own hostname (Docker
    writes the container's address for it), else the extra_hosts entry."""
    if name == spec.hostname:
        assert name not in spec.extra_hosts, "an extra_hosts line would shadow the container's own address"
        return "self"
    assert name in spec.extra_hosts, f"{spec.name} cannot resolve {name}"
    return spec.extra_hosts[name]


def _published(spec: ContainerSpec, ip: str) -> set[int]:
    return {p.external for p in spec.ports if p.ip == ip}


# --- MinIO, distributed, on four real hosts ---------------------------------------------


def test_minio_pool_names_the_nodes_in_sequence() -> None:
    nodes = _nodes(_settings())
    assert [n.host for n in nodes] == MINIO_HOSTS
    for node in nodes:
        assert node.command == ("server", "http://minio-{01...04}.internal:9000/data", "--console-address", ":9001")


def test_each_minio_node_finds_its_own_drive_and_reaches_the_others() -> None:
    settings = _settings()
    p = plan(settings)
    nodes = _nodes(settings)
    by_ip = {str(p.host(n.host).private_ip): n for n in nodes}
    for i, node in enumerate(nodes, start=1):
        assert node.hostname == node_name(i) == f"minio-{i:02d}.internal"
        pool = [u.removeprefix("http://").split(":")[0] for u in _expand(node.command[1])]
        local = [name for name in pool if _resolve(node, name) == "self"]
        assert local == [node.hostname], "exactly one endpoint of the pool is this node"
        for name in pool:
            target = _resolve(node, name)
            if target != "self":
                assert 9000 in _published(by_ip[target], target), f"{name} → {target}:9000 is not published"
        # S3 and console on the private IP only; nothing on a public address
        assert _published(node, str(p.host(node.host).private_ip)) == {9000, 9001}
        assert all(port.ip == str(p.host(node.host).private_ip) for port in node.ports)
        assert "curl" not in " ".join(node.healthcheck.test), "MinIO images ship no curl (minio/minio#18371)"


def test_local_minio_nodes_answer_to_the_same_names() -> None:
    """Locally (one engine, one network) the names are network aliases; no extra_hosts."""
    settings = _settings(ROOT / "Pulumi.local.yaml", phase=4, implementation="minio")
    for i, node in enumerate(_nodes(settings), start=1):
        assert node.hostname == node_name(i) and node_name(i) in node.aliases
        assert node.extra_hosts == {}


# --- SeaweedFS, the same layout for real ------------------------------------------------


def _dials(spec: ContainerSpec) -> list[tuple[str, int]]:
    """host:port pairs a weed command connects to (-master=…, -master.peers=…)."""
    out = []
    for arg in spec.command:
        m = re.fullmatch(r"-(?:master|mserver|master\.peers)=(.*:.+)", arg)
        if m:
            out += [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in m.group(1).split(",")]
    return out


def _flag(spec: ContainerSpec, name: str) -> str:
    values = [a.split("=", 1)[1] for a in spec.command if a.startswith(f"-{name}=")]
    assert len(values) == 1, (name, spec.command)
    return values[0]


def test_seaweedfs_nodes_advertise_names_that_resolve_on_every_node() -> None:
    settings = _settings(implementation="seaweedfs")
    p = plan(settings)
    nodes = _nodes(settings)
    by_ip = {str(p.host(n.host).private_ip): n for n in nodes}
    for i, node in enumerate(nodes, start=1):
        private = str(p.host(node.host).private_ip)
        assert node.hostname == node_name(i)
        # the address it registers with the masters (which hand it to the filers) is its name
        assert _flag(node, "ip") == node.hostname
        # volume server and filer, HTTP + gRPC (port + 10000), on the private IP
        assert {8080, 18080, 8888, 18888} <= _published(node, private)
        for other in nodes:  # every node resolves every other node's name (volume locations)
            if other is not node:
                assert _resolve(node, other.hostname) == str(p.host(other.host).private_ip)
        for name, port in _dials(node):
            target = _resolve(node, name)
            if target != "self":
                published = _published(by_ip[target], target)
                assert {port, port + 10000} <= published, f"{node.name} dials {name}:{port} (+gRPC): {published}"


def test_seaweedfs_on_real_hosts_has_no_single_node_to_lose(tmp_path: Path) -> None:
    """Three masters (Raft: any two elect a leader), and a volume server, a filer (each
    with its own store, kept in step by SeaweedFS's peer metadata sync) and an S3 gateway
    with the app's keys on every node; the proxies on the client hosts reach all four."""
    settings = _settings(implementation="seaweedfs")
    p = plan(settings)
    nodes = _nodes(settings)
    masters = [n for n in nodes if "-master=false" not in n.command]
    assert [n.host for n in masters] == MINIO_HOSTS[:3]
    peers = ",".join(f"{node_name(i)}:9333" for i in (1, 2, 3))
    for node in nodes:
        assert node.command[0] == "server" and {"-filer", "-s3"} <= set(node.command)
        assert _flag(node, "master.peers") == peers
        assert node.password_sync is not None, "each gateway learns a rotated key"
        assert 9000 in _published(node, str(p.host(node.host).private_ip))
    for node in masters:
        assert {9333, 19333} <= _published(node, str(p.host(node.host).private_ip))
    ctx = SpecContext(p, settings)
    assert [e.url for e in node_endpoints(ctx, "api-01")] == [f"{p.host(h).private_ip}:9000" for h in MINIO_HOSTS]
    conf = s3_proxy_config(ctx, "api-01")
    # the filers' metadata sync is asynchronous: one gateway at a time, the next on failure
    assert "balance first" in conf and "option httpchk GET /healthz" in conf
    assert "stick on int(1)" in conf, "no failback to a gateway whose filer may be catching up"
    _haproxy_check(conf, tmp_path)
    specs = _specs(settings)
    syncs = {f"{n.name}-password-sync" for n in nodes}
    for spec in specs.values():
        if "S3_ENDPOINT_URL" in spec.env:
            assert spec.env["S3_ENDPOINT_URL"] == f"http://{LB_ALIAS}:9000"
            assert syncs <= set(spec.depends_on), spec.name


def test_local_seaweedfs_is_unchanged_in_shape() -> None:
    """Locally every node is on one network: names are aliases, nothing is published."""
    settings = _settings(ROOT / "Pulumi.local.yaml", phase=4)
    for i, node in enumerate(_nodes(settings), start=1):
        assert node.ports == () and node.extra_hosts == {}
        assert node_name(i) in node.aliases


# --- one URL per host; a load balancer where several nodes serve S3 --------------------


def _clients(settings: Settings) -> dict[str, dict[str, str]]:
    """host → env of every container there that talks S3 (API, workers, buckets step)."""
    out: dict[str, dict[str, str]] = {}
    for spec in _specs(settings).values():
        if "S3_ENDPOINT_URL" in spec.env:
            out.setdefault(spec.host, {})[spec.name] = spec.env["S3_ENDPOINT_URL"]
    return out


def test_minio_clients_go_through_a_load_balancer_on_their_own_host() -> None:
    settings = _settings()
    p = plan(settings)
    ctx = SpecContext(p, settings)
    specs = _specs(settings)
    clients = _clients(settings)
    assert set(clients) == {h.name for h in p.hosts if {Role.API, Role.WORKER} & set(h.roles)}
    for host, urls in clients.items():
        assert set(urls.values()) == {f"http://{LB_ALIAS}:9000"} == {objectstore_url(ctx, host)}
        lb = specs[f"phase4-{host}-s3-proxy-1"]
        assert lb.host == host and LB_ALIAS in lb.aliases and lb.ports == (), "reached on the host's network only"
        for name in urls:  # everything that talks S3 starts after its proxy
            assert lb.name in specs[name].depends_on
    assert not any(s.name.endswith("-s3-proxy-1") for s in specs.values() if s.host in MINIO_HOSTS)


def test_the_load_balancer_survives_losing_any_one_node(tmp_path: Path) -> None:
    settings = _settings()
    p = plan(settings)
    ctx = SpecContext(p, settings)
    conf = s3_proxy_config(ctx, "api-01")
    servers = re.findall(r"^\s*server (\S+) (\S+):9000\b", conf, re.M)
    assert re.search(r"^\s*default-server .*\bcheck\b", conf, re.M), "every node is health-checked"
    assert sorted(ip for _, ip in servers) == sorted(str(p.host(h).private_ip) for h in MINIO_HOSTS)
    assert "option httpchk GET /minio/health/live" in conf
    assert "option redispatch" in conf and re.search(r"^\s*retries [1-9]", conf, re.M)
    assert not re.search(r"\bbackup\b", conf), "every node serves: none waits as a backup"
    _haproxy_check(conf, tmp_path)


def _haproxy_check(conf: str, tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy not installed: run `make setup` (or scripts/setup-system.sh)")
    (tmp_path / "haproxy.cfg").write_text(conf)
    proc = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("stack", ["Pulumi.phase2.yaml", "Pulumi.phase3.yaml"])
def test_a_single_node_is_dialled_directly(stack: str) -> None:
    settings = load_stack_file(ROOT / stack)
    p = plan(settings)
    node = p.host(p.placements_of(Role.OBJECT_STORE)[0].host)
    for host, urls in _clients(settings).items():
        assert set(urls.values()) == {f"http://{node.private_ip}:9000"}, host
    assert not any(n.endswith("-s3-proxy-1") for n in _specs(settings))


def test_monitoring_scrapes_each_node_where_the_balancer_dials_it() -> None:
    settings = _settings()
    p = plan(settings)
    ctx = SpecContext(p, settings)
    monitoring = p.placements_of(Role.MONITORING)[0].host
    (job,) = [j for j in scrape_jobs(ctx, monitoring) if j.name == "minio"]
    assert job.targets == node_endpoints(ctx, monitoring)
    assert [t.url for t in job.targets] == [f"{p.host(h).private_ip}:9000" for h in MINIO_HOSTS]


def test_the_proxies_are_not_mistaken_for_the_public_entry() -> None:
    """The policy pack and tools spot the entry by a `-entry-N`/`-lb-N` name; the S3 proxies
    are private and must not look like it."""
    from policies.rules import ENTRY_NAME

    proxies = [s for s in _specs(_settings()).values() if LB_ALIAS in s.aliases]
    assert len(proxies) == 7 and not any(ENTRY_NAME.search(s.name) for s in proxies)
