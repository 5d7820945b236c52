"""Per-domain politeness cannot be dodged by spelling a host differently, and the per-process
part of the limiter stays bounded however many domains a worker meets (issue 17, item 4)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis
from svc_site import LocalSite

from common.config import Settings
from worker.fetch import DomainLimiter, Fetcher, FetchOptions

DELAY_MS = 400


@pytest.fixture
def rds(service_env: dict[str, str]) -> redis.Redis:
    return redis.Redis.from_url(service_env["REDIS_URL"])


def test_spellings_of_one_host_share_its_politeness_slot(rds: redis.Redis, site: LocalSite) -> None:
    f = Fetcher(Settings(scraper_allowed_networks="127.0.0.0/8", scraper_domain_delay_ms=DELAY_MS), rds)
    options = FetchOptions(timeout=5, respect_robots=False)
    f.fetch(f"{site.url}/products/1", options)
    for spelling in ("0x7f.1", "127.1", "2130706433"):
        started = time.monotonic()
        f.fetch(f"http://{spelling}:{site.port}/products/1", options)
        # the gap after the previous request to 127.0.0.1 applies to every spelling of it
        assert time.monotonic() - started >= (DELAY_MS - 50) / 1000, spelling
        assert not list(rds.scan_iter(f"selextract:domain:{spelling}:*"))


def test_local_gates_are_bounded_and_held_ones_are_kept(rds: redis.Redis) -> None:
    limiter = DomainLimiter(rds, concurrency=1, delay_ms=0, local_domains=8)
    prefix = uuid.uuid4().hex[:6]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with limiter.slot(f"{prefix}-busy.test", lease_seconds=10, max_wait=5):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        for i in range(100):
            with limiter.slot(f"{prefix}-{i}.test", lease_seconds=5, max_wait=5):
                pass
        local: Any = limiter._local  # what one process keeps per domain
        assert len(local) <= 8
        assert f"{prefix}-busy.test" in local  # a gate in use is never dropped
    finally:
        release.set()
        holder.join(10)
