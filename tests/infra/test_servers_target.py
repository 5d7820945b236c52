"""The `servers` target: machines listed by address, each prepared over SSH by the same
per-host path as a Robot box (bootstrap as root, hardening with the host firewall, Docker
over SSH), with no hcloud resource at all."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_stack_file
from infra.topology import plan
from tests.infra.pulumi_harness import ROOT, ProgramRun, run_program

STACK = ROOT / "Pulumi.servers.yaml"
COMMAND = "command:remote:Command"


@cache
def program() -> ProgramRun:
    return run_program(STACK)


def _with(tmp_path: Path, **changes: object) -> Path:
    doc = yaml.safe_load(STACK.read_text())
    for key, value in changes.items():
        doc["config"][f"selextract:{key}"] = value
    path = tmp_path / "Pulumi.mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _servers() -> dict[str, dict[str, str]]:
    return yaml.safe_load(STACK.read_text())["config"]["selextract:servers"]


def test_every_host_of_the_phase_must_be_listed(tmp_path: Path) -> None:
    servers = _servers()
    del servers["redis-01"]
    with pytest.raises(ConfigError, match=r"selextract:servers: phase 1 needs these hosts, not listed: redis-01"):
        plan(load_stack_file(_with(tmp_path, servers=servers)))


def test_a_server_the_phase_does_not_have_is_refused(tmp_path: Path) -> None:
    servers = _servers() | {"worker-01": {"publicAddress": "198.51.100.20", "privateAddress": "10.0.1.20"}}
    with pytest.raises(ConfigError, match=r"worker-01 not a host of phase 1; its hosts are: app-01, db-01, redis-01"):
        plan(load_stack_file(_with(tmp_path, servers=servers)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"db-01": {"publicAddress": "198.51.100.11", "privateAddress": "192.168.5.3"}},
            r"servers.db-01.privateAddress = 192.168.5.3: must be inside network.cidr 10.0.0.0/16",
        ),
        (
            {"db-01": {"publicAddress": "198.51.100.10", "privateAddress": "10.0.1.11"}},
            r"servers.db-01 = 198.51.100.10: address already used by servers.app-01",
        ),
        (
            {"db-01": {"publicAddress": "db.example", "privateAddress": "10.0.1.11"}},
            r"'db.example' is not an IP address",
        ),
        ({"db-01": {"publicAddress": "198.51.100.11"}}, r"servers.db-01.privateAddress"),
    ],
)
def test_bad_addresses_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stack_file(_with(tmp_path, servers=_servers() | change))


def test_servers_only_with_target_servers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"selextract:servers = .*only used with target: servers"):
        load_stack_file(_with(tmp_path, target="hetzner"))


def test_plan_takes_addresses_from_config() -> None:
    p = plan(load_stack_file(STACK))
    assert {h.name: (h.kind, h.public_ip, h.private_ip) for h in p.hosts} == {
        name: ("server", s["publicAddress"], s["privateAddress"]) for name, s in _servers().items()
    }
    assert p.host("app-01").server_type == "ex44"
    assert p.placement_groups == () and all(h.volumes == () for h in p.hosts)


def test_no_hcloud_resource_is_declared() -> None:
    assert [r.type for r in program().resources if r.type.startswith("hcloud:")] == []


def test_each_machine_is_bootstrapped_as_root_then_hardened_as_deploy() -> None:
    run, settings = program(), load_stack_file(STACK)
    commands = {r.name: r.inputs for r in run.of_type(COMMAND)}
    for name, server in _servers().items():
        boot = commands[f"servers-{name}-bootstrap"]
        assert (boot["connection"]["host"], boot["connection"]["user"], boot["connection"]["port"]) == (
            server["publicAddress"],
            "root",
            22,
        )
        harden = commands[f"servers-{name}-harden"]
        assert (harden["connection"]["user"], harden["connection"]["port"]) == (settings.ssh.user, settings.ssh.port)
        script = harden["create"]
        # the host firewall is the only one: SSH from admin CIDRs, private CIDR, 80/443 on the entry
        assert f"ufw allow from {settings.admin_cidrs[0]} to any port {settings.ssh.port} proto tcp" in script
        assert f"ufw allow from {settings.network.cidr}" in script
        assert ("ufw allow 443/tcp" in script) == (name == "app-01")
        assert "ufw default deny incoming" in script


def test_docker_engines_are_driven_over_ssh_as_deploy() -> None:
    run, settings = program(), load_stack_file(STACK)
    providers = {r.name: r.inputs for r in run.resources if r.type == "pulumi:providers:docker"}
    for name, server in _servers().items():
        assert providers[f"servers-{name}-docker"]["host"] == (
            f"ssh://{settings.ssh.user}@{server['publicAddress']}:{settings.ssh.port}"
        )
    assert run.exports["entryAddress"] == _servers()["app-01"]["publicAddress"]
