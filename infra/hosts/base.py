"""What the service layer needs from a machine, however it was obtained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from infra.topology import HostPlan


@dataclass
class Host:
    plan: HostPlan
    provider: docker.Provider
    network: docker.Network  # the stack's Docker network on this engine
    engine: str  # identifies the Docker engine; hosts that share one share images
    public_ip: pulumi.Output[str] | str | None
    private_ip: str | None
    ready: list[pulumi.Resource]  # what must exist before containers go on this host
    # role -> host directory backing that role's data (an attached hcloud volume)
    data_paths: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    # How to run a shell command on the machine (None: it is this machine).
    ssh: command.remote.ConnectionArgs | None = None

    @property
    def name(self) -> str:
        return self.plan.name


def docker_ssh_provider(
    name: str,
    *,
    address: pulumi.Input[str],
    user: str,
    port: int,
    key_path: str,
    depends_on: list[pulumi.Resource],
    parent: pulumi.Resource,
    registry_auth: Sequence[docker.ProviderRegistryAuthArgs] = (),
) -> docker.Provider:
    """A Docker provider speaking to the host's engine over SSH as the deploy user, logged
    in to the stack's registry (the images it runs are pulled from there)."""
    return docker.Provider(
        name,
        host=pulumi.Output.concat("ssh://", user, "@", address, ":", str(port)),
        ssh_opts=["-i", key_path, "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=30"],
        registry_auth=list(registry_auth) or None,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )


def stack_network(name: str, stack: str, provider: docker.Provider, parent: pulumi.Resource) -> docker.Network:
    return docker.Network(
        name,
        name=f"{stack}-net",
        labels=[docker.NetworkLabelArgs(label="selextract.stack", value=stack)],
        opts=pulumi.ResourceOptions(parent=parent, provider=provider),
    )
