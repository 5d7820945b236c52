"""The phases of the Selextract guide as plans: table-driven, one row per phase."""

from __future__ import annotations

from collections import Counter

import pytest

from infra.config import load_settings
from infra.topology import Role, plan

BASE = {
    "selextract:target": "hetzner",
    "selextract:ssh": {"publicKey": "ssh-ed25519 AAAAC3Nza test"},
    "selextract:adminCidrs": ["203.0.113.0/24"],
    "selextract:tls": {"email": "ops@example.com"},
    "selextract:workers": {"servers": 3, "containersPerServer": 4, "cpus": 2, "memoryMb": 8192},
    "selextract:api": {"servers": 3},
    "selextract:dns": {"enabled": True, "zone": "example.com"},
}

# phase -> (hosts per role, entry host, storage backend, worker containers)
EXPECTED = {
    0: ({"app": 1}, "app-01", "local", 4),
    1: ({"app": 1, "db": 1, "redis": 1}, "app-01", "local", 4),
    2: ({"app": 1, "db": 1, "redis": 1, "worker": 3}, "app-01", "minio", 12),
    3: ({"lb": 1, "api": 3, "db": 1, "redis": 1, "worker": 3}, "lb-01", "minio", 12),
    4: ({"lb": 1, "api": 3, "db": 1, "redis": 1, "worker": 3, "minio": 4}, "lb-01", "minio", 12),
}


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_phase_layout(phase: int) -> None:
    hosts, entry, backend, workers = EXPECTED[phase]
    p = plan(load_settings({**BASE, "selextract:phase": phase}, stack="t"))
    assert Counter(h.name.split("-")[0] for h in p.hosts) == Counter(hosts)
    assert p.entry_host == entry
    assert p.storage_backend == backend
    assert p.worker_containers == workers
    assert {r.host for r in p.dns_records} == {entry}
    assert {r.name for r in p.dns_records} == {"app", "api", "monitoring"}
    assert all(r.ttl == 300 for r in p.dns_records)
    # exactly one public entry, everything in the private network with a unique address
    assert [h.name for h in p.hosts if h.is_entry] == [entry]
    ips = [h.private_ip for h in p.hosts]
    assert None not in ips and len(set(ips)) == len(ips)


def test_phase0_all_in_one_runs_everything_on_one_host() -> None:
    p = plan(load_settings({**BASE, "selextract:phase": 0}, stack="t"))
    assert set(p.hosts[0].roles) == {Role.ENTRY, Role.API, Role.WORKER, Role.POSTGRES, Role.REDIS, Role.MONITORING}


def test_phase2_worker_limits_from_settings() -> None:
    p = plan(load_settings({**BASE, "selextract:phase": 2}, stack="t"))
    for placement in p.placements_of(Role.WORKER):
        assert placement.host.startswith("worker-")
        assert (placement.containers, placement.cpus, placement.memory_mb) == (4, 2.0, 8192)
    assert Role.WORKER not in p.host("app-01").roles


def test_phase3_lb_lists_exactly_the_api_hosts() -> None:
    p = plan(load_settings({**BASE, "selextract:phase": 3}, stack="t"))
    api_hosts = {h.name: h.private_ip for h in p.hosts_with(Role.API)}
    assert set(api_hosts) == {"api-01", "api-02", "api-03"}
    assert [e.url for e in p.endpoints(Role.API, "lb-01")] == [f"{ip}:8000" for ip in api_hosts.values()]


def test_phase4_minio_cluster_and_buckets() -> None:
    p = plan(load_settings({**BASE, "selextract:phase": 4}, stack="t"))
    assert [h.name for h in p.hosts_with(Role.OBJECT_STORE)] == ["minio-01", "minio-02", "minio-03", "minio-04"]
    assert p.buckets == ("task-results", "backups", "logs")
    assert all(h.volumes and h.placement_group == "minio-spread-1" for h in p.hosts_with(Role.OBJECT_STORE))


def test_spread_groups_split_at_ten_servers() -> None:
    p = plan(load_settings({**BASE, "selextract:phase": 2, "selextract:workers": {"servers": 23}}, stack="t"))
    groups = Counter(h.placement_group for h in p.hosts_with(Role.WORKER))
    assert groups == {"worker-spread-1": 10, "worker-spread-2": 10, "worker-spread-3": 3}


def test_subnet_too_small_is_a_config_error() -> None:
    from infra.config import ConfigError

    settings = load_settings(
        {
            **BASE,
            "selextract:phase": 2,
            "selextract:workers": {"servers": 300},
            "selextract:network": {"subnet": "10.0.1.0/24"},
        },
        stack="t",
    )
    with pytest.raises(ConfigError, match=r"selextract:network\.subnet = 10\.0\.1\.0/24: too small"):
        plan(settings)


def test_dedicated_ex44_as_all_in_one_and_as_first_api_server() -> None:
    dedicated = {"publicAddress": "198.51.100.7", "privateAddress": "10.0.2.10"}
    p0 = plan(load_settings({**BASE, "selextract:appHost": {"dedicated": dedicated}}, stack="t"))
    assert (p0.hosts[0].kind, p0.hosts[0].server_type, p0.hosts[0].public_ip) == ("dedicated", "ex44", "198.51.100.7")
    p3 = plan(
        load_settings(
            {
                **BASE,
                "selextract:phase": 3,
                "selextract:appHost": {"dedicated": dedicated},
                "selextract:network": {"vswitchId": 1},
            },
            stack="t",
        )
    )
    assert p3.host("api-01").kind == "dedicated" and p3.host("api-02").kind == "cloud"


def test_local_target_collapses_hosts_and_uses_container_names() -> None:
    p = plan(load_settings({"selextract:target": "local", "selextract:phase": 4}, stack="dev"))
    assert {h.kind for h in p.hosts} == {"local"}
    assert p.endpoint(Role.POSTGRES).address == "dev-db-01-postgres-1"
    assert p.placement_groups == ()
