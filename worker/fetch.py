"""Fetching pages: pooled httpx clients, SSRF guard, proxy rotation, robots.txt and
per-domain politeness shared by every worker through Redis.

One ``Fetcher`` lives per worker process; it is thread-safe, so a task fetches its URLs
from a thread pool through the same connection pools.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import socket
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx
import redis
from protego import Protego
from w3lib.encoding import html_to_unicode

from common.config import Settings
from common.netpolicy import RENDERER_UNGUARDED, ForbiddenTarget, NetworkPolicy, has_userinfo, origin_of, strip_userinfo
from worker.metrics import observe_fetch

log = logging.getLogger(__name__)

REDIRECTS = {301, 302, 303, 307, 308}
TEXTUAL = ("text/", "html", "xml", "json", "javascript")
# RFC 9309 2.5: crawlers parse at least the first 500 KiB of a robots.txt; the rest is ignored.
ROBOTS_MAX_BYTES = 500 * 1024
ROBOTS_KEY = "selextract:robots:v2:"
ROBOTS_BUDGET_KEY = "selextract:robots:budget:"
# Redis bytes counted per entry on top of key and value (allocator rounding, dict entry, expiry)
ROBOTS_ENTRY_OVERHEAD = 128
# a parsed robots.txt (Protego) holds about 8 times its text in memory (measured on 500 KiB)
ROBOTS_PARSED_FACTOR = 8
# no robots.txt entry is added while Redis uses more than this share of its maxmemory
ROBOTS_REDIS_SHARE = 0.5


class FetchError(Exception):
    """A page could not be fetched. ``retryable`` errors are tried again with backoff."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.status_code = status_code


@dataclass(frozen=True)
class FetchOptions:
    timeout: float = 30.0
    use_proxy: bool = True
    respect_robots: bool = True
    render_js: bool = False


@dataclass
class Page:
    url: str
    final_url: str
    status_code: int
    content_type: str
    text: str
    size: int
    elapsed_ms: int
    redirects: list[str] = field(default_factory=list)


# --- per-URL time budget -----------------------------------------------------------------

_budget = threading.local()


def _capped(timeout: float | None, error: type[Exception]) -> float | None:
    """A socket wait, shortened to what is left of the current URL's budget (``url_budget``).

    httpx's timeouts are per read, so a body (or headers) trickled a byte at a time never
    trips them; every read, write and connect here stops at the URL's deadline instead."""
    deadline = getattr(_budget, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the URL's time budget is spent")
    return left if timeout is None else min(timeout, left)


def budget_spent() -> bool:
    deadline = getattr(_budget, "deadline", None)
    return deadline is not None and time.monotonic() >= deadline - 0.01


@contextmanager
def url_budget(seconds: float) -> Iterator[None]:
    """One deadline for every request made inside (redirects, robots.txt), in this thread."""
    outer = getattr(_budget, "deadline", None)
    _budget.deadline = outer if outer is not None else time.monotonic() + seconds
    try:
        yield
    finally:
        _budget.deadline = outer


@contextmanager
def _excused(since: float) -> Iterator[None]:
    """Time waited since ``since`` (a politeness slot) is not charged to the URL's budget."""
    if getattr(_budget, "deadline", None) is not None:
        _budget.deadline += time.monotonic() - since
    yield


class BudgetStream(httpcore.NetworkStream):
    """A connection whose waits end at the current URL's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout))
        return BudgetStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class BudgetBackend(httpcore.SyncBackend):
    """httpcore's socket backend with every wait capped by the URL's budget."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        return BudgetStream(super().connect_tcp(host, port, timeout, local_address, socket_options))


# --- SSRF-safe transport ----------------------------------------------------------------


class GuardedBackend(BudgetBackend):
    """Resolve, check, then connect to the checked address: no DNS-rebinding window."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        addresses = self.policy.resolve(host, port)  # raises ForbiddenTarget
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport whose direct connections go through GuardedBackend."""

    def __init__(self, policy: NetworkPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        # HTTPTransport has no network_backend argument; swap its pool for one that has.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


# --- proxies ----------------------------------------------------------------------------


def parse_proxy_list(raw: str) -> list[str]:
    """Webshare's download format ``host:port:user:pass`` (or ``host:port``, or URLs)."""
    proxies = []
    for line in raw.replace(",", "\n").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "://" in entry:
            proxies.append(entry)
            continue
        parts = entry.split(":")
        if len(parts) == 2:
            proxies.append(f"http://{parts[0]}:{parts[1]}")
        elif len(parts) == 4:
            host, port, user, password = parts
            proxies.append(f"http://{user}:{password}@{host}:{port}")
        else:
            raise ValueError(f"PROXY_LIST entry {entry.split(':')[0]}:… is not host:port[:user:pass] or a URL")
    return proxies


class ProxyRotation:
    """Round-robin over the proxy list, starting at a random place per process."""

    def __init__(self, proxies: list[str]) -> None:
        self.proxies = proxies
        start = random.randrange(len(proxies)) if proxies else 0
        self._cycle = itertools.cycle(proxies[start:] + proxies[:start]) if proxies else None
        self._lock = threading.Lock()

    def next(self) -> str | None:
        if self._cycle is None:
            return None
        with self._lock:
            return next(self._cycle)


# --- politeness ---------------------------------------------------------------------------

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return -wait end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[3])) end
return 1
"""


_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""


@dataclass
class _LocalGate:
    semaphore: threading.BoundedSemaphore
    users: int = 0  # threads holding or waiting on the semaphore


def politeness_key(url: str) -> str:
    """The server a request goes to, as the politeness limits count it: the canonical host of
    its origin (``0x7f.1`` and ``127.0.0.1`` are one), every scheme and port of it together."""
    return origin_of(url).split("://", 1)[1].rpartition(":")[0]


class DomainLimiter:
    """At most N requests in flight per domain and a minimum gap between them, across workers.

    Redis (the ``_ACQUIRE`` script) is the only authority on slots, so the limits are exact
    across processes. Waiting is cheap:
    - threads of one process queue on a local semaphore (at most N of them ask Redis);
    - a release pushes a wake-up token on the domain's ``free`` list, and waiters block on
      it with ``BLPOP`` instead of polling; a woken waiter retries the acquire script. The
      list is capped at N tokens and expires, and a missed or stale token only costs one
      retry or a ``fallback_poll`` timeout.
    """

    def __init__(
        self,
        client: redis.Redis,
        concurrency: int,
        delay_ms: int,
        fallback_poll: float = 0.25,
        local_domains: int = 1024,
    ) -> None:
        self.redis = client
        self.concurrency = concurrency
        self.delay_ms = delay_ms
        self.fallback_poll = fallback_poll
        self.local_domains = local_domains
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._local: OrderedDict[str, _LocalGate] = OrderedDict()  # least recently used first
        self._local_lock = threading.Lock()

    @contextmanager
    def _gate(self, domain: str) -> Iterator[threading.BoundedSemaphore]:
        """The domain's local semaphore, kept while any thread holds or waits on it. Idle ones
        beyond ``local_domains`` are dropped, least recently used first, so a worker meeting
        many domains does not grow; one in use is never dropped (its holders and waiters
        would be split over two semaphores)."""
        with self._local_lock:
            gate = self._local.get(domain)
            if gate is None:
                gate = self._local[domain] = _LocalGate(threading.BoundedSemaphore(self.concurrency))
            self._local.move_to_end(domain)
            gate.users += 1
            excess = len(self._local) - self.local_domains
            if excess > 0:
                for name in [name for name, other in self._local.items() if not other.users][:excess]:
                    del self._local[name]
        try:
            yield gate.semaphore
        finally:
            with self._local_lock:
                gate.users -= 1

    @contextmanager
    def slot(self, domain: str, lease_seconds: float, max_wait: float) -> Iterator[None]:
        keys = [f"selextract:domain:{domain}:slots", f"selextract:domain:{domain}:gap"]
        free = f"selextract:domain:{domain}:free"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + max_wait
        lease_ms = int(lease_seconds * 1000)

        def timed_out() -> FetchError:
            return FetchError("politeness_wait", f"waited {max_wait:.0f}s for a free slot on {domain}", retryable=True)

        with self._gate(domain) as gate:
            if not gate.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise timed_out()
            try:
                while True:
                    got = int(self._acquire(keys=keys, args=[lease_ms, self.concurrency, self.delay_ms, token]))
                    if got == 1:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise timed_out()
                    if got < 0:  # slots free, but the gap since the last request is not over
                        time.sleep(min(left, max(0.001, -got / 1000)))
                    else:  # every slot taken: sleep until one is released (or the fallback poll)
                        self.redis.blpop([free], timeout=max(0.01, min(left, self.fallback_poll)))
                try:
                    yield
                finally:
                    try:
                        self._release(keys=[keys[0], free], args=[token, self.concurrency, max(lease_ms, 1000)])
                    except redis.RedisError:
                        log.warning("could not release the politeness slot on %s (it expires on its own)", domain)
            finally:
                gate.release()


# --- robots.txt ---------------------------------------------------------------------------


_STORE_ROBOTS = """
local t = redis.call('TIME')
local window = tonumber(ARGV[4])
local bucket = ARGV[5] .. math.floor(tonumber(t[1]) / window)
local cost = tonumber(ARGV[2])
if tonumber(redis.call('GET', bucket) or '0') + cost > tonumber(ARGV[3]) then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[6]), 'NX') then return 0 end
redis.call('INCRBY', bucket, cost)
redis.call('EXPIRE', bucket, 2 * window)
return 1
"""


@dataclass(frozen=True)
class RobotsEntry:
    """One origin's robots.txt as a worker uses it: parsed once, kept until ``expires``."""

    expires: float
    kind: str  # rules | allow_all | unreachable
    detail: str  # why it is unreachable
    rules: Protego | None
    blob: bytes  # the shared record, to keep the parser when a refresh finds it unchanged
    cost: int  # estimated bytes in this process


class LocalRobots:
    """The in-process robots.txt entries: least recently used first out, bounded in count and
    in estimated bytes, so no number of origins grows a worker without limit."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, RobotsEntry] = OrderedDict()

    def get(self, origin: str) -> RobotsEntry | None:
        entry = self._entries.get(origin)
        if entry is not None:
            self._entries.move_to_end(origin)
        return entry

    def put(self, origin: str, entry: RobotsEntry) -> None:
        old = self._entries.pop(origin, None)
        if old is not None:
            self.bytes -= old.cost
        if entry.cost > self.max_bytes:
            return  # larger than the whole cache: used once, not kept
        self._entries[origin] = entry
        self.bytes += entry.cost
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _origin, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.cost

    def __len__(self) -> int:
        return len(self._entries)


class RobotsCache:
    """robots.txt per origin (scheme, host, port), shared by the workers through Redis so a site
    is asked once per ``ttl``, and kept parsed in-process for ``local_ttl``.

    Neither copy can grow without bound: a record is at most 500 KiB of text, stored
    compressed; Redis admits at most ``budget_bytes`` of records per ``ttl`` window (each lives
    at most ``ttl``, so all live records take at most twice that) and none while Redis is more
    than half full, since it is also the task queue; past either limit a record stays in the
    process only. The process keeps at most ``local_entries`` records and ``local_bytes``."""

    def __init__(
        self,
        fetcher: Fetcher,
        client: redis.Redis,
        ttl: int,
        local_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        budget_bytes: int = 32 * 1024 * 1024,
        local_entries: int = 1024,
        local_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.fetcher = fetcher
        self.redis = client
        self.ttl = ttl
        self.budget_bytes = budget_bytes
        # records also kept in-process for a minute, so a page costs no Redis round trip
        self.local_ttl = min(float(ttl), local_ttl)
        self._clock = clock
        self._local = LocalRobots(local_entries, local_bytes)
        self._store = client.register_script(_STORE_ROBOTS)
        self._lock = threading.Lock()

    def check(self, url: str, options: FetchOptions) -> None:
        """Raise FetchError when robots.txt forbids the URL or cannot be read (5xx, network)."""
        try:
            origin = origin_of(url)
        except ForbiddenTarget as exc:
            raise FetchError("forbidden_address", str(exc)) from None
        entry = self._entry(origin, options)
        if entry.kind == "unreachable":
            raise FetchError("robots_unreachable", f"{origin}/robots.txt unreachable: {entry.detail}", retryable=True)
        if entry.rules is not None and not entry.rules.can_fetch(url, self.fetcher.user_agent):
            raise FetchError("robots_disallowed", f"{strip_userinfo(url)} is disallowed by robots.txt")

    def local_usage(self) -> tuple[int, int]:
        """(records, estimated bytes) held in this process."""
        with self._lock:
            return len(self._local), self._local.bytes

    def _entry(self, origin: str, options: FetchOptions) -> RobotsEntry:
        now = self._clock()
        with self._lock:
            cached = self._local.get(origin)
        if cached is not None and cached.expires > now:
            return cached
        blob = self._shared_record(origin, options)
        if cached is not None and cached.blob == blob:
            entry = RobotsEntry(
                now + self._local_ttl(cached.kind), cached.kind, cached.detail, cached.rules, blob, cached.cost
            )
        else:
            record = json.loads(zlib.decompress(blob))
            kind, body = record["kind"], record["body"]
            rules = Protego.parse(body) if kind == "rules" else None
            cost = len(blob) + (ROBOTS_PARSED_FACTOR * len(body) if rules is not None else 0) + 512
            entry = RobotsEntry(
                now + self._local_ttl(kind), kind, body if kind == "unreachable" else "", rules, blob, cost
            )
        with self._lock:
            self._local.put(origin, entry)
        return entry

    def _local_ttl(self, kind: str) -> float:
        return self.local_ttl if kind != "unreachable" else min(self.local_ttl, 5.0)

    def _shared_record(self, origin: str, options: FetchOptions) -> bytes:
        key = ROBOTS_KEY + origin
        raw = self.redis.get(key)
        if raw is not None:
            return bytes(raw)
        record = self._download(origin, options)
        blob = zlib.compress(json.dumps(record, ensure_ascii=False).encode(), 6)
        # an outage is remembered briefly, real rules for the configured time
        self._share(key, blob, self.ttl if record["kind"] != "unreachable" else min(self.ttl, 30))
        return blob

    def _share(self, key: str, blob: bytes, ttl: int) -> None:
        """Store a record in Redis if the budget of this window has room and Redis is not filling up."""
        cost = len(key) + len(blob) + len(blob) // 4 + ROBOTS_ENTRY_OVERHEAD
        if cost > self.budget_bytes:
            return
        try:
            memory = self.redis.info("memory")
        except redis.ResponseError:  # INFO not allowed for this Redis user: the budget alone bounds
            memory = {}
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if limit and used > ROBOTS_REDIS_SHARE * limit:
            log.warning("Redis holds %d of %d bytes: robots.txt records are kept in-process only", used, limit)
            return
        self._store(keys=[key], args=[blob, cost, self.budget_bytes, self.ttl, ROBOTS_BUDGET_KEY, ttl])

    def _download(self, origin: str, options: FetchOptions) -> dict[str, str]:
        """RFC 9309: a 4xx means no rules; 5xx or unreachable means do not crawl (for now).
        Only the first 500 KiB are read, up to the last whole line."""
        robots_options = FetchOptions(timeout=min(options.timeout, 10.0), use_proxy=options.use_proxy)
        try:
            page = self.fetcher.get(
                origin + "/robots.txt", robots_options, max_bytes=ROBOTS_MAX_BYTES, robots=False, truncate=True
            )
        except FetchError as exc:
            if (exc.status_code is not None and 400 <= exc.status_code < 500) or exc.code == "unsupported_content":
                return {"kind": "allow_all", "body": ""}
            log.info("robots.txt of %s unavailable (%s)", origin, exc)
            return {"kind": "unreachable", "body": str(exc)}
        text = page.text
        if page.size >= ROBOTS_MAX_BYTES:  # cut off: a partial last line could widen a rule
            text = text.rpartition("\n")[0]
        return {"kind": "rules", "body": text}


# --- the fetcher --------------------------------------------------------------------------


class Fetcher:
    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.settings = settings
        self.user_agent = settings.scraper_user_agent
        self.policy = NetworkPolicy(tuple(settings.scraper_allowed_networks))
        self.limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)
        raw_proxies = settings.proxy_list.get_secret_value() if settings.proxy_list else ""
        self.proxies = ProxyRotation(parse_proxy_list(raw_proxies))
        self.limiter = DomainLimiter(
            redis_client, settings.scraper_domain_concurrency, settings.scraper_domain_delay_ms
        )
        self.robots = RobotsCache(
            self, redis_client, settings.robots_cache_seconds, budget_bytes=settings.robots_redis_budget_bytes
        )
        self._clients: dict[str | None, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, proxy: str | None) -> httpx.Client:
        with self._lock:
            client = self._clients.get(proxy)
            if client is None:
                transport = (
                    GuardedTransport(self.policy, self.limits)
                    if proxy is None
                    else httpx.HTTPTransport(proxy=proxy, limits=self.limits)
                )
                if proxy is not None:  # httpx takes no backend argument; its proxy pool has one
                    transport._pool._network_backend = BudgetBackend()  # type: ignore[attr-defined]
                client = httpx.Client(
                    transport=transport,
                    headers={
                        "User-Agent": self.user_agent,
                        "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                    },
                    follow_redirects=False,
                    trust_env=False,
                )
                self._clients[proxy] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def fetch(self, url: str, options: FetchOptions) -> Page:
        """Fetch one page, honouring robots.txt, politeness, redirects (each hop checked)."""
        if has_userinfo(url):
            raise FetchError(
                "credentials_in_url",
                "URLs with a user name or password (user:password@host) are not fetched: "
                "credentials would reach logs and caches",
            )
        with observe_fetch("render" if options.render_js else "http"), url_budget(self.settings.scraper_fetch_budget):
            if options.render_js:
                return self._render(url, options)
            return self.get(url, options, max_bytes=self.settings.scraper_max_page_bytes, robots=options.respect_robots)

    def get(self, url: str, options: FetchOptions, *, max_bytes: int, robots: bool, truncate: bool = False) -> Page:
        """GET with redirects (credentials in a Location are dropped). ``truncate``: keep the
        first ``max_bytes`` of a larger body instead of failing with too_large."""
        started = time.monotonic()
        current = url
        hops: list[str] = []
        for _ in range(self.settings.scraper_max_redirects + 1):
            self._check_target(current)
            if robots:
                self._robots(current, options)
            response_or_location = self._get_once(current, options, max_bytes, truncate)
            if isinstance(response_or_location, str):
                hops.append(current)
                current = strip_userinfo(response_or_location)
                continue
            status, content_type, body = response_or_location
            text = self._decode(content_type, body)
            return Page(
                url=url,
                final_url=current,
                status_code=status,
                content_type=content_type,
                text=text,
                size=len(body),
                elapsed_ms=int((time.monotonic() - started) * 1000),
                redirects=hops,
            )
        raise FetchError("too_many_redirects", f"more than {self.settings.scraper_max_redirects} redirects")

    def _robots(self, url: str, options: FetchOptions) -> None:
        try:
            self.robots.check(url, options)
        except redis.RedisError as exc:
            raise FetchError("internal_error", f"robots.txt cache unavailable: {exc}", retryable=True) from None

    def _check_target(self, url: str) -> None:
        try:
            self.policy.check_url(url)
        except ForbiddenTarget as exc:
            raise FetchError("forbidden_address", str(exc)) from None
        except OSError as exc:
            transient = isinstance(exc.__cause__, socket.gaierror) and exc.__cause__.errno == socket.EAI_AGAIN
            raise FetchError("dns_error", str(exc), retryable=transient) from None

    def _get_once(
        self, url: str, options: FetchOptions, max_bytes: int, truncate: bool = False
    ) -> tuple[int, str, bytes] | str:
        proxy = self.proxies.next() if options.use_proxy else None
        client = self._client(proxy)
        domain = politeness_key(url)
        timeout = httpx.Timeout(options.timeout, connect=min(options.timeout, 10.0))
        waiting = time.monotonic()
        try:
            with (
                self.limiter.slot(
                    domain, lease_seconds=options.timeout + 5, max_wait=self.settings.task_soft_time_limit
                ),
                _excused(waiting),
                client.stream("GET", url, timeout=timeout) as response,
            ):
                if response.status_code in REDIRECTS and "location" in response.headers:
                    return urljoin(url, response.headers["location"])
                self._check_status(response)
                content_type = response.headers.get("content-type", "")
                self._check_content(url, response, content_type, None if truncate else max_bytes)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        if truncate:
                            del body[max_bytes:]
                            break
                        raise FetchError("too_large", f"page is larger than {max_bytes} bytes")
                return response.status_code, content_type, bytes(body)
        except ForbiddenTarget as exc:
            raise FetchError("forbidden_address", str(exc)) from None
        except httpx.TimeoutException as exc:
            if budget_spent():
                raise FetchError(
                    "url_budget_exceeded",
                    f"the URL took longer than the {self.settings.scraper_fetch_budget:g}s allowed to download it "
                    "(all its requests together)",
                ) from None
            raise FetchError(
                "timeout", f"timed out after {options.timeout:g}s ({type(exc).__name__})", retryable=True
            ) from None
        except httpx.ProxyError as exc:
            raise FetchError("proxy_error", f"proxy failed: {exc}", retryable=True) from None
        except httpx.TransportError as exc:
            raise FetchError("network_error", f"{type(exc).__name__}: {exc}", retryable=True) from None
        except redis.RedisError as exc:
            raise FetchError("internal_error", f"politeness limiter unavailable: {exc}", retryable=True) from None

    @staticmethod
    def _check_status(response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise FetchError("http_error", f"HTTP {status}", retryable=True, status_code=status)
        if status >= 400:
            raise FetchError("http_error", f"HTTP {status}", status_code=status)

    @staticmethod
    def _check_content(url: str, response: httpx.Response, content_type: str, max_bytes: int | None) -> None:
        length = response.headers.get("content-length", "")
        if max_bytes is not None and length.isdigit() and int(length) > max_bytes:
            raise FetchError("too_large", f"page is {length} bytes, more than the {max_bytes} allowed")
        if content_type and not any(t in content_type.lower() for t in TEXTUAL):
            raise FetchError("unsupported_content", f"{content_type} is not a text document")

    @staticmethod
    def _decode(content_type: str, body: bytes) -> str:
        _encoding, text = html_to_unicode(content_type or None, body)
        return text

    def _render(self, url: str, options: FetchOptions) -> Page:
        """JS rendering through a browserless-compatible service (POST /content)."""
        if not self.settings.renderer_url:
            raise FetchError("renderer_unavailable", "render_js needs RENDERER_URL; none is configured")
        if not self.settings.renderer_egress_guarded:  # its redirects and subresources are not checked here
            raise FetchError("renderer_unguarded", RENDERER_UNGUARDED)
        self._check_target(url)
        if options.respect_robots:
            self._robots(url, options)
        started = time.monotonic()
        endpoint = self.settings.renderer_url.rstrip("/") + "/content"
        try:
            response = httpx.post(
                endpoint,
                json={
                    "url": url,
                    "gotoOptions": {"timeout": int(options.timeout * 1000), "waitUntil": "networkidle2"},
                },
                timeout=options.timeout + 10,
            )
        except httpx.HTTPError as exc:
            raise FetchError("renderer_error", f"renderer unreachable: {exc}", retryable=True) from None
        if response.status_code >= 400:
            raise FetchError("renderer_error", f"renderer answered HTTP {response.status_code}", retryable=True)
        body = response.content
        if len(body) > self.settings.scraper_max_page_bytes:
            raise FetchError("too_large", f"rendered page is larger than {self.settings.scraper_max_page_bytes} bytes")
        return Page(
            url=url,
            final_url=url,
            status_code=200,
            content_type="text/html",
            text=response.text,
            size=len(body),
            elapsed_ms=int((time.monotonic() - started) * 1000),
        )
