"""This machine's Docker engine: every host of any phase collapses onto it, so each phase
runs locally as a simulation with the same services and configs."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from infra.hosts.base import Host, stack_network
from infra.topology import Plan

LOCAL_ENGINE = "local"


class LocalEngine(pulumi.ComponentResource):
    def __init__(
        self, name: str, plan: Plan, docker_host: str | None = None, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("selextract:hosts:LocalEngine", name, None, opts)
        self.provider = docker.Provider(
            f"{name}-docker",
            host=docker_host or "unix:///var/run/docker.sock",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.network = stack_network(f"{name}-net", plan.stack, self.provider, self)
        self.hosts = {
            h.name: Host(
                plan=h,
                provider=self.provider,
                network=self.network,
                engine=LOCAL_ENGINE,
                public_ip="127.0.0.1",
                private_ip=None,
                ready=[self.network],
            )
            for h in plan.hosts
        }
        self.register_outputs({"network": self.network.name})
