"""Which way the stack gets its machines, from `selextract:target`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pulumi_docker as docker

from infra.config import Settings
from infra.hosts.base import Host
from infra.hosts.hetzner import HetznerFleet
from infra.hosts.local import LocalEngine
from infra.hosts.servers import ServerFleet
from infra.topology import Plan


class Fleet(Protocol):
    hosts: dict[str, Host]


def fleet_for(settings: Settings, plan: Plan, registry_auth: Sequence[docker.ProviderRegistryAuthArgs] = ()) -> Fleet:
    """The machines; remote engines log in to the stack's registry with `registry_auth`
    (the local engine builds what it runs and needs none)."""
    if settings.target == "local":
        return LocalEngine("local", plan)
    if settings.target == "servers":
        return ServerFleet("servers", plan, settings, registry_auth)
    return HetznerFleet("hetzner", plan, settings, registry_auth)
