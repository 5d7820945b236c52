"""Hetzner catalogue (server types, locations, prices) loaded from `infra/data/hetzner.yaml`.

Kept as data so the config validator, the Pulumi exports and the cost tools all read
the same numbers and an operator updates prices in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

DATA_FILE = Path(__file__).parent / "data" / "hetzner.yaml"


@dataclass(frozen=True)
class ServerType:
    name: str
    kind: Literal["cloud", "dedicated"]
    cores: int
    memory_gb: int
    disk_gb: int
    price: float


@dataclass(frozen=True)
class Location:
    name: str
    city: str
    network_zone: str


@dataclass(frozen=True)
class Catalog:
    currency: str
    as_of: str
    server_types: dict[str, ServerType]
    locations: dict[str, Location]
    volume_per_gb: float
    primary_ipv4: float
    load_balancer_lb11: float
    traffic_per_tb: float
    included_traffic_tb: float

    def server_type(self, name: str) -> ServerType:
        return self.server_types[name.lower()]


@cache
def load_catalog(path: Path = DATA_FILE) -> Catalog:
    raw = yaml.safe_load(path.read_text())
    return Catalog(
        currency=raw["currency"],
        as_of=str(raw["as_of"]),
        server_types={n: ServerType(name=n, **v) for n, v in raw["server_types"].items()},
        locations={n: Location(name=n, **v) for n, v in raw["locations"].items()},
        volume_per_gb=float(raw["volume_per_gb"]),
        primary_ipv4=float(raw["primary_ipv4"]),
        load_balancer_lb11=float(raw["load_balancer_lb11"]),
        traffic_per_tb=float(raw["traffic_per_tb"]),
        included_traffic_tb=float(raw["included_traffic_tb"]),
    )
