"""The fetcher against the local site and real Redis: SSRF guard (literal, DNS, redirects),
robots.txt, size and type limits, error classification, proxy rotation, politeness."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from svc_site import ForwardProxy, LocalSite

from common.config import Settings
from common.netpolicy import DnsCache, ForbiddenTarget, NetworkPolicy
from worker.fetch import DomainLimiter, Fetcher, FetchError, FetchOptions, RobotsCache, parse_proxy_list


@pytest.fixture
def rds(service_env: dict[str, str]) -> redis.Redis:
    client = redis.Redis.from_url(service_env["REDIS_URL"])
    for key in client.scan_iter("selextract:robots:*"):
        client.delete(key)
    return client


def fetcher(rds: redis.Redis, **overrides: Any) -> Fetcher:
    base: dict[str, Any] = {"scraper_allowed_networks": "127.0.0.0/8", "scraper_domain_delay_ms": 0}
    return Fetcher(Settings(**{**base, **overrides}), rds)


def error_of(f: Fetcher, url: str, **options: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        f.fetch(url, FetchOptions(**{"timeout": 5, **options}))
    return info.value


def test_fetches_and_decodes(rds: redis.Redis, site: LocalSite) -> None:
    page = fetcher(rds).fetch(f"{site.url}/latin1", FetchOptions())
    assert "Café crème" in page.text and page.status_code == 200
    hop = fetcher(rds).fetch(f"{site.url}/redirect?to=/products/3", FetchOptions())
    assert hop.final_url == f"{site.url}/products/3" and hop.redirects == [f"{site.url}/redirect?to=/products/3"]
    ua = [r.headers.get("User-Agent") for r in site.state.requests if r.path == "/products/3"]
    assert ua and ua[-1].startswith("SelextractBot/")


def test_private_targets_are_refused_by_default(rds: redis.Redis, site: LocalSite) -> None:
    strict = fetcher(rds, scraper_allowed_networks="")
    literal = error_of(strict, f"{site.url}/products")
    assert literal.code == "forbidden_address" and "127.0.0.1, a loopback address" in str(literal)
    by_name = error_of(strict, f"http://localhost:{site.port}/products")
    assert by_name.code == "forbidden_address" and "localhost resolves to" in str(by_name)
    assert not by_name.retryable


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:{port}/",
        "http://[::1]:{port}/",
        "http://10.0.0.7/",
    ],
)
def test_redirects_into_private_space_are_refused(rds: redis.Redis, site: LocalSite, target: str) -> None:
    only_site = fetcher(rds, scraper_allowed_networks="127.0.0.1/32")
    failure = error_of(only_site, f"{site.url}/redirect?to={target.format(port=site.port)}")
    assert failure.code == "forbidden_address", failure


def test_allow_list_reopens_a_range(rds: redis.Redis, site: LocalSite) -> None:
    settings = Settings(scraper_allowed_networks="127.0.0.0/8")
    assert ipaddress.ip_network("127.0.0.0/8") in settings.scraper_allowed_networks
    assert fetcher(rds).fetch(f"http://localhost:{site.port}/products", FetchOptions()).status_code == 200


def test_robots_txt(rds: redis.Redis, site: LocalSite) -> None:
    f = fetcher(rds)
    blocked = error_of(f, f"{site.url}/private/secret")
    assert blocked.code == "robots_disallowed" and not blocked.retryable
    assert "/private/secret" not in site.state.paths()
    assert f.fetch(f"{site.url}/private/secret", FetchOptions(respect_robots=False)).status_code == 200
    robots_hits = site.state.paths().count("/robots.txt")
    f.fetch(f"{site.url}/products/4", FetchOptions())
    assert site.state.paths().count("/robots.txt") == robots_hits  # cached in Redis


@pytest.mark.parametrize(
    ("path", "code", "retryable"),
    [
        ("/status/500", "http_error", True),
        ("/status/503", "http_error", True),
        ("/status/429", "http_error", True),
        ("/status/404", "http_error", False),
        ("/image.png", "unsupported_content", False),
        ("/big?kb=2048", "too_large", False),
        ("/slow?ms=3000", "timeout", True),
    ],
)
def test_errors_are_classified(rds: redis.Redis, site: LocalSite, path: str, code: str, retryable: bool) -> None:
    f = fetcher(rds, scraper_max_page_bytes=1024 * 1024)
    failure = error_of(f, site.url + path, timeout=1)
    assert (failure.code, failure.retryable) == (code, retryable), failure


def test_unreachable_host_is_a_retryable_network_error(rds: redis.Redis) -> None:
    failure = error_of(fetcher(rds), "http://127.0.0.1:9/", respect_robots=False)
    assert failure.code == "network_error" and failure.retryable


def test_proxy_list_formats() -> None:
    assert parse_proxy_list("1.2.3.4:8080:bob:pw\n5.6.7.8:3128\n# comment\nhttp://u:p@proxy:1\n") == [
        "http://bob:pw@1.2.3.4:8080",
        "http://5.6.7.8:3128",
        "http://u:p@proxy:1",
    ]
    with pytest.raises(ValueError, match="host:port"):
        parse_proxy_list("1.2.3.4:80:only-user")


def test_requests_rotate_through_the_proxy_list(rds: redis.Redis, site: LocalSite) -> None:
    proxies = [ForwardProxy("p1"), ForwardProxy("p2")]
    try:
        listing = "\n".join(f"127.0.0.1:{p.port}:user{i}:secret{i}" for i, p in enumerate(proxies))
        f = fetcher(rds, proxy_list=listing)
        for n in range(4):
            f.fetch(f"{site.url}/products/{n + 1}", FetchOptions(use_proxy=True, respect_robots=False))
        assert [len(p.seen) for p in proxies] == [2, 2]
        assert all(auth and auth.startswith("Basic ") for p in proxies for _, auth in p.seen)
        direct_before = len(proxies[0].seen) + len(proxies[1].seen)
        f.fetch(f"{site.url}/products/9", FetchOptions(use_proxy=False, respect_robots=False))
        assert len(proxies[0].seen) + len(proxies[1].seen) == direct_before
    finally:
        for p in proxies:
            p.stop()


def test_domain_limiter_caps_parallel_requests_across_clients(rds: redis.Redis) -> None:
    domain = f"limit-{uuid.uuid4().hex[:6]}.test"
    limiters = [DomainLimiter(rds, concurrency=2, delay_ms=0) for _ in range(3)]  # as if three workers
    active, peak, lock = 0, 0, threading.Lock()

    def hold(limiter: DomainLimiter) -> None:
        nonlocal active, peak
        with limiter.slot(domain, lease_seconds=10, max_wait=10):
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.3)
            with lock:
                active -= 1

    threads = [threading.Thread(target=hold, args=(limiters[i % 3],)) for i in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2 and time.monotonic() - started >= 0.85


def test_domain_delay_spaces_requests(rds: redis.Redis) -> None:
    limiter = DomainLimiter(rds, concurrency=10, delay_ms=300)
    domain = f"delay-{uuid.uuid4().hex[:6]}.test"
    stamps = []
    for _ in range(3):
        with limiter.slot(domain, lease_seconds=5, max_wait=5):
            stamps.append(time.monotonic())
    assert stamps[1] - stamps[0] >= 0.25 and stamps[2] - stamps[1] >= 0.25


def test_render_js_goes_through_the_renderer(rds: redis.Redis, site: LocalSite) -> None:
    f = fetcher(rds, renderer_url=f"{site.url}/renderer", renderer_egress_guarded=True)
    page = f.fetch(f"{site.url}/products/2", FetchOptions(render_js=True))
    assert f"Rendered {site.url}/products/2" in page.text
    assert error_of(f, f"{site.url}/private/x", render_js=True).code == "robots_disallowed"
    assert error_of(fetcher(rds), f"{site.url}/products/2", render_js=True).code == "renderer_unavailable"


def test_the_shared_test_website(rds: redis.Redis, services: dict[str, str]) -> None:
    """The images/testsite server started by scripts/services.sh (also used by the e2e deploy)."""
    from common.extraction import ExtractionRules, extract

    base = services.get("TESTSITE_URL")
    if not base:
        pytest.skip("scripts/services.sh did not start images/testsite (not in this checkout)")
    f = fetcher(rds)
    page = f.fetch(f"{base}/products.html", FetchOptions())
    rules = ExtractionRules.model_validate(
        {"products": {"selector": "li.product", "many": True, "fields": {"name": ".name", "price": ".price"}}}
    )
    products = extract(page.text, page.final_url, rules)["products"]
    assert len(products) == 20 and products[0] == {"name": "Product 01", "price": "$4.99"}
    assert error_of(f, f"{base}/private/secret.html").code == "robots_disallowed"
    assert error_of(f, f"{base}/status/500").code == "http_error"
    assert f.fetch(f"{base}/redirect?to=/products.html", FetchOptions()).final_url == f"{base}/products.html"


class FakeDns:
    """``socket.getaddrinfo`` answering from a dict, counting the lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in self.answers[host]]


def test_dns_answers_are_cached_but_every_address_is_checked_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns({"public.test": ["93.184.216.34"], "inside.test": ["93.184.216.35", "10.0.0.7"]})
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    clock = [0.0]
    policy = NetworkPolicy((), dns=DnsCache(ttl=30, clock=lambda: clock[0]))
    assert policy.resolve("public.test", 80) == ["93.184.216.34"]
    assert policy.resolve("Public.TEST", 80) == ["93.184.216.34"]
    assert dns.calls == ["public.test"]
    for _ in range(2):  # a cached answer with a private address is refused every time
        with pytest.raises(ForbiddenTarget, match=re.escape("inside.test resolves to 10.0.0.7")):
            policy.resolve("inside.test", 443)
    assert dns.calls == ["public.test", "inside.test"]
    # the answer changes (rebinding): seen once the entry expires
    dns.answers["public.test"] = ["10.1.2.3"]
    clock[0] = 31.0
    with pytest.raises(ForbiddenTarget, match=re.escape("public.test resolves to 10.1.2.3")):
        policy.resolve("public.test", 80)
    assert dns.calls[-1] == "public.test"


def test_dns_cache_is_bounded_and_does_not_cache_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns({f"h{i}.test": [f"93.184.216.{i}"] for i in range(5)})
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    cache = DnsCache(ttl=30, size=2)
    for host in ("h0.test", "h1.test", "h2.test", "h0.test"):
        cache.lookup(host, 80)
    assert dns.calls == ["h0.test", "h1.test", "h2.test", "h0.test"]  # h0 was evicted

    def failing(host: str, *args: Any, **kwargs: Any) -> Any:
        dns.calls.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    for _ in range(2):
        with pytest.raises(OSError, match=re.escape("cannot resolve down.test")):
            cache.lookup("down.test", 80)
    assert dns.calls[-2:] == ["down.test", "down.test"]


def _counting_acquire(limiter: DomainLimiter) -> list[int]:
    """Wrap the limiter's acquire script; returns the list of its answers."""
    answers: list[int] = []
    script = limiter._acquire

    def counted(**kwargs: Any) -> Any:
        answer = script(**kwargs)
        answers.append(int(answer))
        return answer

    limiter._acquire = counted  # type: ignore[assignment]
    return answers


def test_threads_of_one_process_queue_locally_instead_of_polling_redis(rds: redis.Redis) -> None:
    limiter = DomainLimiter(rds, concurrency=2, delay_ms=0)
    answers = _counting_acquire(limiter)
    domain = f"local-{uuid.uuid4().hex[:6]}.test"
    active, peak, lock = 0, 0, threading.Lock()

    def hold() -> None:
        nonlocal active, peak
        with limiter.slot(domain, lease_seconds=10, max_wait=10):
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.1)
            with lock:
                active -= 1

    threads = [threading.Thread(target=hold) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2
    assert answers == [1] * 6  # each thread asked Redis once, when a local slot was free


def test_a_waiter_is_woken_by_a_release_in_another_process(rds: redis.Redis) -> None:
    domain = f"wake-{uuid.uuid4().hex[:6]}.test"
    holder = DomainLimiter(rds, concurrency=1, delay_ms=0)
    waiter = DomainLimiter(rds, concurrency=1, delay_ms=0, fallback_poll=30)  # no polling to speak of
    answers = _counting_acquire(waiter)
    got = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.slot(domain, lease_seconds=30, max_wait=5):
            release.wait(10)

    def wait_for_slot() -> None:
        with waiter.slot(domain, lease_seconds=30, max_wait=20):
            got.set()

    first = threading.Thread(target=hold)
    first.start()
    while not rds.zcard(f"selextract:domain:{domain}:slots"):
        time.sleep(0.01)
    rds.delete(f"selextract:domain:{domain}:free")  # no stale wake-up token
    second = threading.Thread(target=wait_for_slot)
    second.start()
    while not answers:
        time.sleep(0.01)
    assert answers == [0] and not got.is_set()  # refused once, now blocked on the free list
    release.set()
    assert got.wait(15)
    assert answers == [0, 1]  # woken by the release, not by a 30 s poll
    first.join()
    second.join()


class CountingRedis:
    """A Redis client that counts GETs (everything else passes through)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.gets = 0

    def get(self, key: str) -> Any:
        self.gets += 1
        return self.client.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_robots_records_are_kept_in_process_for_a_while(rds: redis.Redis, site: LocalSite) -> None:
    f = fetcher(rds)
    clock = [0.0]
    counting = CountingRedis(rds)
    f.robots = RobotsCache(f, counting, ttl=3600, local_ttl=60, clock=lambda: clock[0])  # type: ignore[arg-type]
    options = FetchOptions(timeout=5)
    f.fetch(f"{site.url}/products/1", options)
    assert counting.gets == 1
    for n in (2, 3):
        f.fetch(f"{site.url}/products/{n}", options)
    assert error_of(f, f"{site.url}/private/x").code == "robots_disallowed"  # same rules, from memory
    assert counting.gets == 1
    clock[0] = 61.0  # expired in-process: read from Redis again (not fetched again)
    robots_hits = site.state.paths().count("/robots.txt")
    f.fetch(f"{site.url}/products/4", options)
    assert counting.gets == 2 and site.state.paths().count("/robots.txt") == robots_hits
