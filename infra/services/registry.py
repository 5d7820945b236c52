"""The stack's own image registry (infra/specs/registry.py), declared before any other
service: images are pushed to it before the hosts that run them pull them."""

from __future__ import annotations

from infra.services.base import Service


class Registry(Service):
    TYPE = "selextract:service:Registry"
