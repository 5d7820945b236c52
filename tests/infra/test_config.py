"""Bad stack configs fail before any resource exists, with one message naming the key,
the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import ConfigError, load_settings, load_stack_file

ROOT = Path(__file__).resolve().parents[2]
HETZNER_OK = {
    "selextract:target": "hetzner",
    "selextract:ssh": {"publicKey": "ssh-ed25519 AAAAC3Nza test"},
    "selextract:adminCidrs": ["203.0.113.0/24"],
    "selextract:tls": {"email": "ops@example.com"},
}


def _load(extra: dict, base: dict | None = None, secret_keys: set[str] | None = None):
    return load_settings({**(base if base is not None else HETZNER_OK), **extra}, stack="t", secret_keys=secret_keys)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"selextract:colour": "blue"}, ["selextract:colour = blue", "unknown key"]),
        ({"selextract:workers": {"servers": 2, "cpu": 3}}, ["selextract:workers.cpu = 3", "unknown key"]),
        ({"selextract:phase": 7}, ["selextract:phase = 7", "allowed: 0 (all-in-one)", "4 (object-store cluster)"]),
        (
            {"selextract:tls": {"email": "ops@example.com", "acmeServer": "http://acme.example/dir"}},
            ["selextract:tls.acmeServer", "not an https:// ACME directory URL", "acme-staging-v02"],
        ),
        (
            {"selextract:phase": 3, "selextract:api": {"servers": 0}},
            ["selextract:api.servers = 0", "at least 2 API servers"],
        ),
        (
            {"selextract:phase": 4, "selextract:objectStore": {"nodes": 3}},
            ["selextract:objectStore.nodes = 3", "at least 4 object-store nodes"],
        ),
        (
            {"selextract:serverTypes": {"worker": "cx99"}},
            ["selextract:serverTypes.worker = cx99", "not a Hetzner cloud server type", "cx22", "ccx33"],
        ),
        ({"selextract:appHost": {"serverType": "ex44"}}, ["selextract:appHost.serverType = ex44", "cloud server type"]),
        ({"selextract:location": "mars1"}, ["selextract:location = mars1", "allowed: ash, fsn1, hel1"]),
        (
            {"selextract:network": {"cidr": "10.0.0.0/33"}},
            ["selextract:network.cidr = 10.0.0.0/33", "not a valid CIDR"],
        ),
        ({"selextract:network": {"subnet": "10.0.1.5/24"}}, ["selextract:network.subnet = 10.0.1.5/24", "CIDR"]),
        ({"selextract:network": {"subnet": "192.168.0.0/24"}}, ["selextract:network", "not inside the network"]),
        (
            {"selextract:adminCidrs": ["10.0.0.300/32"]},
            ['selextract:adminCidrs = ["10.0.0.300/32"]', "not a valid CIDR"],
        ),
        (
            {"selextract:oidc": {"clientId": "abc.apps.googleusercontent.com"}},
            ["selextract:googleClientSecret = (not set)", "pulumi config set --secret googleClientSecret"],
        ),
        (
            {"selextract:billing": {"enabled": True}},
            ["selextract:lemonSqueezySigningSecret = (not set)", "billing is enabled"],
        ),
        ({"selextract:ssh": {"publicKey": "hello"}}, ["selextract:ssh.publicKey = hello", "OpenSSH public key"]),
        ({"selextract:workers": {"servers": 0}}, ["selextract:workers.servers = 0", "greater than or equal to 1"]),
        (
            {"selextract:entry": {"rateLimitPerSecond": -1}},
            ["selextract:entry.rateLimitPerSecond = -1", "greater than or equal to 0"],
        ),
        ({"selextract:entry": {"rateLimitBurst": "lots"}}, ["selextract:entry.rateLimitBurst = lots", "integer"]),
        ({"selextract:entry": {"rateLimit": 10}}, ["selextract:entry.rateLimit = 10", "unknown key"]),
    ],
)
def test_bad_config_names_key_value_and_allowed(extra: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        _load(extra)
    message = str(err.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert message.count("\n") == 0, "one problem, one line"


def test_hetzner_needs_ssh_key_and_admin_cidrs() -> None:
    with pytest.raises(ConfigError, match=r"selextract:ssh.publicKey = \(not set\)"):
        load_settings({"selextract:target": "hetzner"}, stack="t")
    with pytest.raises(ConfigError, match=r"selextract:adminCidrs = \[\]"):
        load_settings({**HETZNER_OK, "selextract:adminCidrs": []}, stack="t")


def test_secret_in_plain_text_is_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        _load({"selextract:postgresPassword": "hunter2-plaintext"}, secret_keys=set())
    assert "--secret postgresPassword" in str(err.value)
    assert "hunter2-plaintext" not in str(err.value)


def test_secret_values_never_in_error_messages() -> None:
    with pytest.raises(ConfigError) as err:
        _load(
            {"selextract:phase": 9, "selextract:redisPassword": "s3cr3t-value-xyz"},
            secret_keys={"selextract:redisPassword"},
        )
    assert "s3cr3t-value-xyz" not in str(err.value)
    assert "selextract:phase = 9" in str(err.value)


def test_dedicated_host_needs_vswitch_from_phase_1() -> None:
    dedicated = {"publicAddress": "198.51.100.7", "privateAddress": "10.0.2.10"}
    with pytest.raises(ConfigError, match=r"selextract:network.vswitchId = \(not set\)"):
        _load({"selextract:phase": 1, "selextract:appHost": {"dedicated": dedicated}})
    ok = _load(
        {
            "selextract:phase": 1,
            "selextract:appHost": {"dedicated": dedicated},
            "selextract:network": {"vswitchId": 4711},
        }
    )
    assert ok.app_host.dedicated is not None and ok.app_host.dedicated.server_type == "ex44"
    # phase 0 on a dedicated box needs no private network
    assert _load({"selextract:appHost": {"dedicated": {"publicAddress": "198.51.100.7"}}}).phase == 0


def test_malformed_stack_file(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.broken.yaml"
    bad.write_text("config: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"Pulumi\.broken\.yaml: expected a mapping"):
        load_stack_file(bad)


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_committed_stack_loads(stack_file: Path) -> None:
    settings = load_stack_file(stack_file)
    assert settings.stack == stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
