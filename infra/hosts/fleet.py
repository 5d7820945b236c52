"""Which way the stack gets its machines, from `selextract:target`."""

from __future__ import annotations

from typing import Protocol

from infra.config import Settings
from infra.hosts.base import Host
from infra.hosts.hetzner import HetznerFleet
from infra.hosts.local import LocalEngine
from infra.hosts.servers import ServerFleet
from infra.topology import Plan


class Fleet(Protocol):
    hosts: dict[str, Host]


def fleet_for(settings: Settings, plan: Plan) -> Fleet:
    if settings.target == "local":
        return LocalEngine("local", plan)
    if settings.target == "servers":
        return ServerFleet("servers", plan, settings)
    return HetznerFleet("hetzner", plan, settings)
