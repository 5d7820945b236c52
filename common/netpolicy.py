"""Which network addresses the scraper (and outgoing webhooks) may connect to.

By default only globally routable addresses are allowed: loopback, private, link-local
(cloud metadata!), CGNAT, multicast and reserved ranges are refused, so a task cannot
make the worker probe the internal network. ``SCRAPER_ALLOWED_NETWORKS`` re-opens
specific ranges for tests and on-premises targets.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Said when render_js is refused: a browser's own requests cannot be checked from here.
RENDERER_UNGUARDED = (
    "render_js is not available: the renderer's own requests (redirects, subresources, page scripts) "
    "would bypass the SSRF guard; the operator must limit its egress to the public internet and set "
    "RENDERER_EGRESS_GUARDED=true"
)


class ForbiddenTarget(ValueError):
    """The URL or address is not allowed for outgoing requests."""


def _normalize(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _describe(ip: IPAddress) -> str:
    for attr in (
        "is_loopback",
        "is_link_local",
        "is_private",
        "is_multicast",
        "is_reserved",
        "is_unspecified",
    ):
        if getattr(ip, attr):
            return attr.removeprefix("is_").replace("_", "-")
    return "non-public"


class DnsCache:
    """A small TTL + LRU cache of ``getaddrinfo`` answers (addresses only, never a verdict).

    The scraper resolves the same few hosts for every URL and again for every new
    connection; a few seconds of caching removes those lookups. Callers still check every
    cached address against the policy on each use. Lookup errors are not cached."""

    def __init__(self, ttl: float = 30.0, size: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[str, int], tuple[float, list[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, host: str, port: int) -> list[str]:
        key = (host.lower(), port)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(key)
                return list(hit[1])
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if self.ttl > 0:
            with self._lock:
                self._entries[key] = (now + self.ttl, addresses)
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return list(addresses)


@dataclass(frozen=True)
class NetworkPolicy:
    allowed_networks: Sequence[IPNetwork] = ()
    dns: DnsCache = field(default_factory=DnsCache, compare=False, repr=False)

    def check_ip(self, ip: IPAddress | str, host: str | None = None) -> None:
        addr = _normalize(ipaddress.ip_address(ip) if isinstance(ip, str) else ip)
        if addr.is_global and not addr.is_multicast:
            return
        if any(addr in net for net in self.allowed_networks):
            return
        target = f"{host} resolves to {addr}" if host and host != str(addr) else str(addr)
        raise ForbiddenTarget(
            f"{target}, a {_describe(addr)} address; refused (allow it with SCRAPER_ALLOWED_NETWORKS)"
        )

    def resolve(self, host: str, port: int) -> list[str]:
        """Resolve a host and check every address; all must be allowed (no mixed answers)."""
        literal = _literal_ip(host)
        if literal is not None:
            self.check_ip(literal, host)
            return [str(literal)]
        addresses = self.dns.lookup(host, port)
        for addr in addresses:  # checked on every use, cached or not
            self.check_ip(addr.split("%")[0], host)
        return addresses

    def check_url_literal(self, url: str) -> None:
        """Cheap, DNS-free check used at submit time: scheme and literal IP hosts."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ForbiddenTarget(f"only http and https URLs are supported, not {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise ForbiddenTarget("the URL has no host")
        literal = _literal_ip(parts.hostname)
        if literal is not None:
            self.check_ip(literal, parts.hostname)

    def check_url(self, url: str) -> None:
        """Full check including DNS resolution (worker side, before each request/redirect)."""
        self.check_url_literal(url)
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def has_userinfo(url: str) -> bool:
    """Whether the URL carries ``user[:password]@`` (credentials that must not be logged or keyed)."""
    return "@" in urlsplit(url).netloc


def strip_userinfo(url: str) -> str:
    """The URL without ``user[:password]@``; everything else as written."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def origin_of(url: str) -> str:
    """``scheme://host:port``: the unit robots.txt applies to (RFC 9309) and what caches key on.

    One site has one origin however its URLs are spelled: no user info, the host lower-cased,
    IDNA-encoded and without a trailing dot, literal IPs in canonical form (``0x7f.1`` is
    ``127.0.0.1``), the default port written out. Raises ForbiddenTarget for URLs httpx cannot
    parse."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ForbiddenTarget(f"not a valid URL: {exc}") from None
    scheme = parsed.scheme.lower()
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise ForbiddenTarget("the URL has no host")
    literal = _literal_ip(host)
    if literal is not None:
        host = str(_normalize(literal))
    if ":" in host:
        host = f"[{host}]"
    port = parsed.port or {"http": 80, "https": 443}.get(scheme, 0)
    return f"{scheme}://{host}:{port}"


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    # inet_aton accepts the legacy forms (2130706433, 0x7f.1, 127.1) that browsers and
    # libc resolve to loopback; treat them as the address they denote.
    try:
        if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
            return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
    return None
