"""DNS records (app/api/monitoring) at the public entry, in a Hetzner DNS zone."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.topology import Plan


class DnsRecords(pulumi.ComponentResource):
    def __init__(
        self, name: str, plan: Plan, zone: str, entry_ip: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("selextract:index:DnsRecords", name, None, opts)
        self.records = [
            hcloud.ZoneRrset(
                f"{name}-{record.name}",
                zone=zone,
                name=record.name,
                type="A",
                ttl=record.ttl,
                records=[hcloud.ZoneRrsetRecordArgs(value=entry_ip)],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for record in plan.dns_records
        ]
        self.register_outputs({"records": [r.name for r in self.records]})
