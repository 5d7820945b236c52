"""What every service spec needs to know: the plan, the settings, and how ports publish."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import Settings
from infra.specs.base import Port
from infra.topology import HostPlan, Plan, Role

BUILD_APP = "build:app"
BUILD_WORKER = "build:worker"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SpecContext:
    plan: Plan
    settings: Settings
    version: str = "dev"  # app/worker image tag; part of their container names

    @property
    def local(self) -> bool:
        return self.plan.target == "local"

    def data_volume(self, host: str, role: Role) -> str:
        return f"{self.plan.stack}-{host}-{role.value}-data"

    def internal_port(self, host: HostPlan, port: int, index: int = 1) -> tuple[Port, ...]:
        """Publish a service port on the host's private IP only (nothing, locally: the
        containers share one Docker network and nothing internal reaches 127.0.0.1)."""
        if self.local:
            return ()
        return (Port(port, port + index - 1, str(host.private_ip)),)

    def entry_ports(self) -> tuple[Port, ...]:
        if self.local:
            return (
                Port(80, self.settings.local.http_port, LOOPBACK),
                Port(443, self.settings.local.https_port, LOOPBACK),
            )
        return (Port(80, 80, "0.0.0.0"), Port(443, 443, "0.0.0.0"))

    @property
    def tls(self) -> bool:
        return self.settings.tls.mode != "off"
