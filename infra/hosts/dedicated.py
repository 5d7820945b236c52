"""A bring-your-own server (Hetzner Robot, e.g. the EX44, any VPS or on-prem box): not
API-provisionable, so it is prepared over SSH by pulumi-command with the same hardening
cloud-init applies. The one per-host path both the `servers` target and a Robot box in a
Hetzner stack take."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from infra.config import Settings
from infra.hosts.base import Host, docker_ssh_provider, stack_network
from infra.hosts.hardening import bootstrap_script, hardening_script
from infra.topology import HostPlan


def ssh_private_key(settings: Settings) -> pulumi.Output[str] | None:
    """The deploy key for pulumi-command, read at deploy time and kept secret; None
    means the SSH agent is used."""
    path = Path(settings.ssh.private_key_path).expanduser()
    return pulumi.Output.secret(path.read_text()) if path.is_file() else None


def ssh_connection(
    settings: Settings, address: pulumi.Input[str], private_key: pulumi.Output[str] | None
) -> command.remote.ConnectionArgs:
    """How pulumi-command reaches the machine once it is hardened: the deploy user."""
    return command.remote.ConnectionArgs(
        host=address, user=settings.ssh.user, port=settings.ssh.port, private_key=private_key
    )


class DedicatedServer(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        host: HostPlan,
        settings: Settings,
        private_key: pulumi.Output[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("selextract:hosts:DedicatedServer", name, None, opts)
        address = str(host.public_ip)

        def connection(user: str, port: int) -> command.remote.ConnectionArgs:
            return command.remote.ConnectionArgs(host=address, user=user, port=port, private_key=private_key)

        # Once, as root (Robot's installimage puts the key there): the deploy user.
        bootstrap = command.remote.Command(
            f"{name}-bootstrap",
            connection=connection("root", 22),
            create=bootstrap_script(settings),
            opts=pulumi.ResourceOptions(parent=self),
        )
        script = hardening_script(settings, host)
        # Then as the deploy user, again whenever the hardening script changes. Root
        # login is off afterwards, so nothing needs root's SSH again.
        self.hardening = command.remote.Command(
            f"{name}-harden",
            connection=connection(settings.ssh.user, settings.ssh.port),
            create=script,
            update=script,
            triggers=[hashlib.sha256(script.encode()).hexdigest()],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[bootstrap]),
        )
        self.register_outputs({"address": address})


def prepared_host(
    name: str,
    *,
    host: HostPlan,
    settings: Settings,
    private_key: pulumi.Output[str] | None,
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource] | None = None,
    registry_auth: Sequence[docker.ProviderRegistryAuthArgs] = (),
) -> Host:
    """A machine reachable over SSH, bootstrapped and hardened, with its Docker engine
    driven over SSH as the deploy user and the stack's network on it."""
    server = DedicatedServer(
        name,
        host=host,
        settings=settings,
        private_key=private_key,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on or []),
    )
    address = str(host.public_ip)
    provider = docker_ssh_provider(
        f"{name}-docker",
        address=address,
        user=settings.ssh.user,
        port=settings.ssh.port,
        key_path=settings.ssh.private_key_path,
        depends_on=[server],
        parent=parent,
        registry_auth=registry_auth,
    )
    network = stack_network(f"{name}-net", settings.stack, provider, parent)
    return Host(
        plan=host,
        provider=provider,
        network=network,
        engine=host.name,
        public_ip=host.public_ip,
        private_ip=host.private_ip,
        ready=[server, network],
        ssh=ssh_connection(settings, address, private_key),
    )
