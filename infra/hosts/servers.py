"""The `servers` target: machines the operator already has (any VPS, Robot boxes, on-prem),
listed in stack config with their public and private addresses. Each takes the very
per-host path a Robot box takes in a Hetzner stack (bootstrap as root, hardening with the
host firewall, Docker over SSH); there is no hcloud network, firewall or volume, so the
host firewall (ufw: SSH from adminCidrs, 80/443 on the entry, the private CIDR) is the
only one."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

from infra.config import Settings
from infra.hosts.base import Host
from infra.hosts.dedicated import prepared_host, ssh_private_key
from infra.topology import Plan


class ServerFleet(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        plan: Plan,
        settings: Settings,
        registry_auth: Sequence[docker.ProviderRegistryAuthArgs] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("selextract:hosts:ServerFleet", name, None, opts)
        key = ssh_private_key(settings)
        self.hosts: dict[str, Host] = {
            host.name: prepared_host(
                f"{name}-{host.name}",
                host=host,
                settings=settings,
                private_key=key,
                parent=self,
                registry_auth=registry_auth,
            )
            for host in plan.hosts
        }
        self.register_outputs({"hosts": {n: h.public_ip for n, h in self.hosts.items()}})
