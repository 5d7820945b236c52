"""Hetzner Cloud hosts: servers with cloud-init hardening in one private network, behind
firewalls, spread over placement groups, with volumes for data roles.

hcloud facts this follows: ID inputs are ints (`.apply(int)`); changing `ssh_keys` or
`user_data` would replace a server, so both are ignored after creation (an upgrade never
replaces a server by surprise); a dedicated box joins through a vSwitch subnet.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_hcloud as hcloud

from infra.catalog import load_catalog
from infra.config import Settings
from infra.hosts.base import Host, docker_ssh_provider, stack_network
from infra.hosts.dedicated import prepared_host, ssh_connection, ssh_private_key
from infra.hosts.hardening import cloud_init
from infra.topology import HostPlan, Plan

SERVER_IMAGE = "debian-12"


def labels(settings: Settings, role: str) -> dict[str, str]:
    return {"project": "selextract", "stack": settings.stack, "phase": str(settings.phase), "role": role}


def firewall_rules(settings: Settings, public_ports: tuple[int, ...]) -> list[hcloud.FirewallRuleArgs]:
    """SSH only from admin CIDRs; 80/443 from anywhere on the entry host; nothing else.
    Internal ports need no rule: they listen on the private network, which hcloud
    firewalls do not filter, and ufw on the host admits only the private CIDR."""
    rules = [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port=str(settings.ssh.port),
            source_ips=list(settings.admin_cidrs),
            description="ssh from admin networks",
        ),
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="icmp",
            source_ips=["0.0.0.0/0", "::/0"],
            description="ping",
        ),
    ]
    rules += [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port=str(port),
            source_ips=["0.0.0.0/0", "::/0"],
            description=f"public {port}",
        )
        for port in public_ports
    ]
    return rules


class HetznerFleet(pulumi.ComponentResource):
    """All machines of a Hetzner stack, each yielding a `Host`."""

    def __init__(
        self,
        name: str,
        plan: Plan,
        settings: Settings,
        registry_auth: Sequence[docker.ProviderRegistryAuthArgs] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("selextract:hosts:HetznerFleet", name, None, opts)
        self.settings = settings
        self.registry_auth = registry_auth
        child = pulumi.ResourceOptions(parent=self)
        zone = load_catalog().locations[settings.location].network_zone

        self.ssh_key = hcloud.SshKey(
            f"{name}-deploy-key",
            name=f"{settings.stack}-deploy",
            public_key=str(settings.ssh.public_key),
            labels=labels(settings, "deploy"),
            opts=child,
        )
        self.network = hcloud.Network(
            f"{name}-network",
            name=f"{settings.stack}-private",
            ip_range=settings.network.cidr,
            labels=labels(settings, "network"),
            opts=child,
        )
        network_id = self.network.id.apply(int)
        self.subnet = hcloud.NetworkSubnet(
            f"{name}-subnet",
            network_id=network_id,
            type="cloud",
            network_zone=zone,
            ip_range=settings.network.subnet,
            opts=child,
        )
        self.vswitch_subnet = (
            hcloud.NetworkSubnet(
                f"{name}-vswitch-subnet",
                network_id=network_id,
                type="vswitch",
                network_zone=zone,
                ip_range=settings.network.vswitch_subnet,
                vswitch_id=settings.network.vswitch_id,
                opts=child,
            )
            if settings.network.vswitch_id is not None
            else None
        )
        self.placement_groups = {
            group: hcloud.PlacementGroup(
                f"{name}-{group}",
                name=f"{settings.stack}-{group}",
                type="spread",
                labels=labels(settings, group.split("-spread")[0]),
                opts=child,
            )
            for group in plan.placement_groups
        }
        self.firewalls = {
            kind: hcloud.Firewall(
                f"{name}-fw-{kind}",
                name=f"{settings.stack}-{kind}",
                rules=firewall_rules(settings, (80, 443) if kind == "entry" else ()),
                labels=labels(settings, f"firewall-{kind}"),
                opts=child,
            )
            for kind in ("entry", "internal")
        }
        self.servers: dict[str, hcloud.Server] = {}
        self.hosts: dict[str, Host] = {}
        for host in plan.hosts:
            if host.kind == "dedicated":
                self.hosts[host.name] = self._dedicated(name, host)
            else:
                self.hosts[host.name] = self._cloud(name, host, network_id)
        for kind, firewall in self.firewalls.items():
            members = [s.id.apply(int) for h, s in self.servers.items() if (plan.host(h).is_entry) == (kind == "entry")]
            if members:
                hcloud.FirewallAttachment(
                    f"{name}-fw-{kind}-attachment", firewall_id=firewall.id.apply(int), server_ids=members, opts=child
                )
        self.register_outputs({"network_id": self.network.id})

    def _cloud(self, name: str, host: HostPlan, network_id: pulumi.Output[int]) -> Host:
        settings = self.settings
        child = pulumi.ResourceOptions(parent=self)
        role = host.roles[0].value
        public_net = hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)
        if host.is_entry:
            # A primary IP outlives the server, so DNS and clients keep the address.
            ip = hcloud.PrimaryIp(
                f"{name}-{host.name}-ipv4",
                name=f"{settings.stack}-{host.name}-ipv4",
                type="ipv4",
                assignee_type="server",
                auto_delete=False,
                location=settings.location,
                labels=labels(settings, role),
                opts=child,
            )
            public_net = hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv4=ip.id.apply(int), ipv6_enabled=True)
        group = self.placement_groups.get(host.placement_group or "")
        server = hcloud.Server(
            f"{name}-{host.name}",
            name=f"{settings.stack}-{host.name}",
            server_type=host.server_type,
            image=SERVER_IMAGE,
            location=host.location,
            ssh_keys=[self.ssh_key.id],
            user_data=cloud_init(settings, host),
            labels=labels(settings, role),
            placement_group_id=group.id.apply(int) if group else None,
            public_nets=[public_net],
            shutdown_before_deletion=True,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["sshKeys", "userData"]),
        )
        self.servers[host.name] = server
        server_id = server.id.apply(int)
        attachment = hcloud.ServerNetwork(
            f"{name}-{host.name}-private",
            server_id=server_id,
            network_id=network_id,
            ip=host.private_ip,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.subnet]),
        )
        volumes = [
            hcloud.Volume(
                f"{name}-{v.name}",
                name=f"{settings.stack}-{v.name}",
                size=v.size_gb,
                server_id=server_id,
                automount=True,
                format="ext4",
                labels=labels(settings, v.role.value),
                delete_protection=True,
                opts=child,
            )
            for v in host.volumes
        ]
        connection = ssh_connection(settings, server.ipv4_address, ssh_private_key(settings))
        ready = command.remote.Command(
            f"{name}-{host.name}-ready",
            connection=connection,
            create="cloud-init status --wait >/dev/null; docker info >/dev/null",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment, *volumes]),
        )
        provider = docker_ssh_provider(
            f"{name}-{host.name}-docker",
            address=server.ipv4_address,
            user=settings.ssh.user,
            port=settings.ssh.port,
            key_path=settings.ssh.private_key_path,
            depends_on=[ready],
            parent=self,
            registry_auth=self.registry_auth,
        )
        network = stack_network(f"{name}-{host.name}-net", settings.stack, provider, self)
        return Host(
            plan=host,
            provider=provider,
            network=network,
            engine=host.name,
            public_ip=server.ipv4_address,
            private_ip=host.private_ip,
            ready=[ready, network],
            ssh=connection,
            data_paths={
                v.role.value: vol.id.apply(lambda i: f"/mnt/HC_Volume_{i}")
                for v, vol in zip(host.volumes, volumes, strict=True)
            },
        )

    def _dedicated(self, name: str, host: HostPlan) -> Host:
        return prepared_host(
            f"{name}-{host.name}",
            host=host,
            settings=self.settings,
            private_key=ssh_private_key(self.settings),
            parent=self,
            depends_on=[self.vswitch_subnet] if self.vswitch_subnet else [],
            registry_auth=self.registry_auth,
        )
