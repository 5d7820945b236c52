"""A bring-your-own server (Hetzner Robot, e.g. the EX44): not API-provisionable, so it
is prepared over SSH by pulumi-command with the same hardening cloud-init applies."""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_command as command

from infra.config import Settings
from infra.hosts.hardening import bootstrap_script, hardening_script
from infra.topology import HostPlan


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
