"""Abuse limits of the fetch path (issue 17): the robots.txt cache cannot fill Redis or a
worker's memory, credentials in URLs reach no log line or key, render_js is refused while
the renderer's own traffic is outside the SSRF guard."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import redis
from svc_helpers import Account
from svc_site import LocalSite, QuietServer

from common.config import Settings
from common.netpolicy import origin_of
from worker.fetch import ROBOTS_MAX_BYTES, Fetcher, FetchError, FetchOptions, RobotsCache

PASSWORD = "s3cr3t-pw-7f1e"


@pytest.fixture
def rds(service_env: dict[str, str]) -> redis.Redis:
    client = redis.Redis.from_url(service_env["REDIS_URL"])
    for key in client.scan_iter("selextract:robots*"):
        client.delete(key)
    return client


def fetcher(rds: redis.Redis, **overrides: Any) -> Fetcher:
    base: dict[str, Any] = {"scraper_allowed_networks": "127.0.0.0/8", "scraper_domain_delay_ms": 0}
    return Fetcher(Settings(**{**base, **overrides}), rds)


def robots_keys(rds: redis.Redis) -> list[bytes]:
    return list(rds.scan_iter("selextract:robots*", count=1000))


def robots_memory(rds: redis.Redis) -> int:
    return sum(int(rds.memory_usage(key) or 0) for key in robots_keys(rds))


@pytest.fixture
def test_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``*.robots.test`` resolves to 127.0.0.1: as many distinct sites as a test wants."""
    real = socket.getaddrinfo

    def answer(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".robots.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 80)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", answer)


class RobotsSite:
    """Serves /robots.txt chosen by the Host header's first label; any other path is a page."""

    def __init__(self) -> None:
        early = "User-agent: *\nDisallow: /early/\n"
        filler = "".join(f"Disallow: /filler/{n:07d}/\n" for n in range(ROBOTS_MAX_BYTES // 24 + 2000))
        cjk = "".join(f"# 机器人规则说明第{n}行不要抓取私有页面。\n" for n in range(450 * 1024 // 60))
        self.bodies = {
            "big": (early + filler + "Disallow: /late/\n").encode(),
            "cjk": (cjk + "User-agent: *\nDisallow: /cjk/\n").encode(),
        }
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                label = (self.headers.get("Host") or "").split(".")[0]
                if self.path == "/robots.txt" and label in site.bodies:
                    body, ctype = site.bodies[label], "text/plain; charset=utf-8"
                elif self.path == "/robots.txt":
                    body, ctype = b"User-agent: *\nDisallow: /private/\n", "text/plain"
                else:
                    body, ctype = b"<html><body><h1>page</h1></body></html>", "text/html"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, label: str, path: str) -> str:
        return f"http://{label}.robots.test:{self.port}{path}"


@pytest.fixture(scope="module")
def robots_site() -> Iterator[RobotsSite]:
    server = RobotsSite()
    yield server
    server.server.shutdown()
    server.server.server_close()


# --- robots.txt: one entry per site, bounded in Redis and in the process -------------------


def spellings(site: LocalSite, n: int) -> list[str]:
    """``n`` spellings of URLs on the local test site: user info, port zeros, IP forms, case."""
    port = site.port
    hosts = ["127.0.0.1", "0x7f.0.0.1", "0x7f.1", "127.1", "2130706433", "0x00007f.0.0.1", "0x7F.0.1"]
    variants = []
    for i in range(n):
        host = hosts[i % len(hosts)]
        auth = [f"user{i}@", f"user{i}:{PASSWORD}@", ""][i % 3]
        zeros = "0" * (i % 5)
        scheme = ["http", "HTTP", "Http"][i % 3]
        variants.append(f"{scheme}://{auth}{host}:{zeros}{port}/products/{i}")
    variants += [f"http://LocalHost.:{port}/products/1", f"http://LOCALHOST:{port}/products/2"]
    return variants


def test_one_site_spelled_1000_ways_has_one_robots_entry(rds: redis.Redis, site: LocalSite) -> None:
    f = fetcher(rds)
    before = site.state.paths().count("/robots.txt")
    options = FetchOptions(timeout=5)
    for url in spellings(site, 1000):
        f.robots.check(url, options)
    with pytest.raises(FetchError) as blocked:
        f.robots.check(f"http://user9:{PASSWORD}@0x7f.1:0{site.port}/private/x", options)
    assert blocked.value.code == "robots_disallowed"
    keys = robots_keys(rds)
    entries = sorted(k.decode() for k in keys if b"budget" not in k)
    assert entries == [
        f"selextract:robots:v2:http://127.0.0.1:{site.port}",
        f"selextract:robots:v2:http://localhost:{site.port}",
    ]
    assert site.state.paths().count("/robots.txt") - before == 2
    assert not any(PASSWORD.encode() in k or b"user" in k for k in keys)


def test_origin_is_scheme_host_port() -> None:
    assert origin_of("http://example.com/a") == origin_of("HTTP://u:p@EXAMPLE.com.:80/b?c") == "http://example.com:80"
    assert origin_of("https://Bücher.example/x") == "https://xn--bcher-kva.example:443"
    assert origin_of("http://[0:0::1]:8080/") == "http://[::1]:8080"
    assert origin_of("http://0x7f.1/") == origin_of("http://2130706433") == "http://127.0.0.1:80"
    assert origin_of("https://example.com:8443/") != origin_of("https://example.com/")


def test_many_sites_cannot_fill_redis_or_the_process(rds: redis.Redis, test_dns: None, robots_site: RobotsSite) -> None:
    budget = 16 * 1024
    f = fetcher(rds, robots_redis_budget_bytes=budget)
    options = FetchOptions(timeout=5)
    for i in range(1000):
        f.robots.check(robots_site.url(f"site{i}", "/products/1"), options)
    entries = [k for k in robots_keys(rds) if b"budget" not in k]
    assert 0 < len(entries) < 1000
    # every live entry was admitted within the current or the previous budget window
    assert robots_memory(rds) <= 2 * budget
    # over the budget, rules still apply (kept in the process only)
    with pytest.raises(FetchError) as blocked:
        f.robots.check(robots_site.url("site999", "/private/x"), options)
    assert blocked.value.code == "robots_disallowed"
    # the process keeps the most recently used records, within its count and byte limits
    f.robots = RobotsCache(f, rds, ttl=3600, local_entries=64, local_bytes=8 * 1024)
    for i in range(200):
        f.robots.check(robots_site.url(f"site{i}", "/products/1"), options)
    count, size = f.robots.local_usage()
    assert 0 < count <= 64 and size <= 8 * 1024
    f.robots = RobotsCache(f, rds, ttl=3600, local_entries=16)
    for i in range(200):
        f.robots.check(robots_site.url(f"site{i}", "/products/1"), options)
    assert f.robots.local_usage()[0] == 16


class FullRedis:
    """A Redis client that reports itself as nearly full (everything else passes through)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def info(self, section: str | None = None) -> dict[str, Any]:
        return {"used_memory": 1_800_000_000, "maxmemory": 2_000_000_000}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_robots_are_not_stored_when_redis_is_filling_up(
    rds: redis.Redis, test_dns: None, robots_site: RobotsSite
) -> None:
    f = fetcher(rds)
    for i in range(20):  # with room, records are shared
        f.robots.check(robots_site.url(f"share{i}", "/x"), FetchOptions(timeout=5))
    assert len([k for k in robots_keys(rds) if b"budget" not in k]) == 20
    f.robots = RobotsCache(f, FullRedis(rds), ttl=3600)  # type: ignore[arg-type]
    with pytest.raises(FetchError) as blocked:
        f.robots.check(robots_site.url("full", "/private/x"), FetchOptions(timeout=5))
    assert blocked.value.code == "robots_disallowed"
    assert not any(b"full.robots.test" in key for key in robots_keys(rds))


def test_robots_txt_over_500_kib_is_read_up_to_500_kib(
    rds: redis.Redis, test_dns: None, robots_site: RobotsSite
) -> None:
    assert len(robots_site.bodies["big"]) > 600 * 1024
    f = fetcher(rds)
    early = robots_site.url("big", "/early/x")
    with pytest.raises(FetchError) as blocked:
        f.fetch(early, FetchOptions(timeout=5))
    assert blocked.value.code == "robots_disallowed"  # RFC 9309: the first 500 KiB are parsed
    assert f.fetch(robots_site.url("big", "/late/x"), FetchOptions(timeout=5)).status_code == 200
    assert robots_memory(rds) <= ROBOTS_MAX_BYTES


def test_robots_entry_is_stored_compactly(rds: redis.Redis, test_dns: None, robots_site: RobotsSite) -> None:
    """Non-ASCII robots.txt used to be stored as JSON escapes: up to 3x its size in Redis."""
    f = fetcher(rds)
    with pytest.raises(FetchError) as blocked:
        f.fetch(robots_site.url("cjk", "/cjk/x"), FetchOptions(timeout=5))
    assert blocked.value.code == "robots_disallowed"
    assert robots_memory(rds) <= len(robots_site.bodies["cjk"])  # was about twice its size


# --- credentials in URLs -----------------------------------------------------------------


def watch_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything at INFO (the service's level; httpx and httpcore included), ours at DEBUG."""
    caplog.set_level(logging.INFO)
    for name in ("worker", "common", "app"):
        caplog.set_level(logging.DEBUG, logger=name)


def test_credentials_in_urls_reach_no_log_or_key(
    rds: redis.Redis, site: LocalSite, caplog: pytest.LogCaptureFixture
) -> None:
    watch_logs(caplog)
    f = fetcher(rds)
    with pytest.raises(FetchError) as refused:
        f.fetch(f"http://user:{PASSWORD}@127.0.0.1:{site.port}/products/1", FetchOptions(timeout=5))
    assert refused.value.code == "credentials_in_url" and PASSWORD not in str(refused.value)
    # a site redirecting to a URL with credentials (percent-encoded in our URL): followed without them
    target = f"http://user:{PASSWORD}@127.0.0.1:{site.port}/products/5"
    encoded = "".join(f"%{byte:02X}" for byte in target.encode())
    page = f.fetch(f"{site.url}/redirect?to={encoded}", FetchOptions(timeout=5))
    assert page.final_url == f"{site.url}/products/5"
    hit = [r for r in site.state.requests if r.path == "/products/5"][-1]
    assert "Authorization" not in hit.headers
    f.robots.check(target, FetchOptions(timeout=5))
    assert all(PASSWORD.encode() not in key for key in rds.scan_iter("*", count=1000))
    assert PASSWORD not in caplog.text


def test_credentials_in_target_urls_are_refused_at_submit(
    client: Any, account: Account, site: LocalSite, caplog: pytest.LogCaptureFixture
) -> None:
    watch_logs(caplog)
    body = {
        "urls": [f"{site.url}/products", f"http://user:{PASSWORD}@127.0.0.1:{site.port}/products/1"],
        "extract": {"title": "h1::text"},
    }
    answer = client.post("/api/v1/tasks", json=body, headers=account.headers)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert any(e["loc"] == ["body", "urls", 1] and "user name or password" in e["msg"] for e in errors), errors
    assert all(PASSWORD not in e["msg"] for e in errors)
    assert PASSWORD not in caplog.text


# --- the renderer ----------------------------------------------------------------------------


def test_render_js_is_refused_while_the_renderer_egress_is_unguarded(rds: redis.Redis, site: LocalSite) -> None:
    posts = len([r for r in site.state.requests if r.method == "POST"])
    f = fetcher(rds, renderer_url=f"{site.url}/renderer")
    with pytest.raises(FetchError) as refused:
        f.fetch(f"{site.url}/products/2", FetchOptions(timeout=5, render_js=True))
    assert refused.value.code == "renderer_unguarded" and not refused.value.retryable
    assert "RENDERER_EGRESS_GUARDED" in str(refused.value)
    assert len([r for r in site.state.requests if r.method == "POST"]) == posts  # the renderer was not asked
    guarded = fetcher(rds, renderer_url=f"{site.url}/renderer", renderer_egress_guarded=True)
    assert "Rendered" in guarded.fetch(f"{site.url}/products/2", FetchOptions(timeout=5, render_js=True)).text


def test_render_js_submissions_are_refused_while_unguarded(
    client: Any, account: Account, site: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.config import get_settings

    monkeypatch.setenv("RENDERER_URL", f"{site.url}/renderer")
    get_settings.cache_clear()
    try:
        body = {"urls": [f"{site.url}/products"], "extract": {"t": "h1::text"}, "options": {"render_js": True}}
        answer = client.post("/api/v1/tasks", json=body, headers=account.headers)
        assert answer.status_code == 422, answer.text
        errors = answer.json()["detail"]
        assert errors[0]["loc"] == ["body", "options", "render_js"]
        assert "SSRF guard" in errors[0]["msg"] and "RENDERER_EGRESS_GUARDED" in errors[0]["msg"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
