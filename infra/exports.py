"""What a stack exports: where to reach it, what runs where, what it costs, which version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from infra.config import Settings
from infra.cost import stack_cost
from infra.hosts.base import Host
from infra.images import ImageVersion
from infra.topology import Plan


def stack_exports(settings: Settings, plan: Plan, hosts: Mapping[str, Host], version: ImageVersion) -> dict[str, Any]:
    entry = hosts[plan.entry_host]
    if settings.target == "local":
        scheme, port = (
            ("https", settings.local.https_port) if settings.tls.mode != "off" else ("http", settings.local.http_port)
        )
        api_url: pulumi.Input[str] = f"{scheme}://127.0.0.1:{port}"
    elif settings.dns.enabled:
        api_url = f"https://api.{settings.domain}"
    else:
        api_url = pulumi.Output.concat("https://", entry.public_ip or "")
    cost = stack_cost(settings)
    return {
        "phase": plan.phase,
        "entryAddress": entry.public_ip,
        "apiUrl": api_url,
        "hosts": {
            name: {"roles": [r.value for r in h.plan.roles], "privateIp": h.private_ip, "publicIp": h.public_ip}
            for name, h in hosts.items()
        },
        "monthlyCost": cost.total,
        "costCurrency": cost.currency,
        "version": {"tag": version.tag, "commit": version.commit},
        "storageBackend": plan.storage_backend,
    }
