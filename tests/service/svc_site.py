"""A local test website with known content, served from a thread on 127.0.0.1.

Pages: /products (20 items), /products/<n>, /slow?ms=N, /status/<code>,
/flaky?key=K&fail=N (503 N times, then 200), /redirect?to=URL, /big?kb=N, /image.png,
/latin1, /private/* (disallowed by /robots.txt), and POST /hooks/<name> that records
webhook deliveries. Every request is recorded for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PRODUCTS = [{"n": n, "name": f"Product {n}", "price": f"${n}.99", "sku": f"SKU-{n:03d}"} for n in range(1, 21)]


def _products_page() -> str:
    items = "\n".join(
        f'<li class="product" data-sku="{p["sku"]}"><a href="/products/{p["n"]}">'
        f'<span class="name">{p["name"]}</span></a> <span class="price">{p["price"]}</span></li>'
        for p in PRODUCTS
    )
    return f"<html><head><title>Products</title></head><body><h1>Products</h1><ul>{items}</ul></body></html>"


class QuietServer(ThreadingHTTPServer):
    """Clients that time out on purpose (slow pages) must not print tracebacks."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class SiteState:
    requests: list[Recorded] = field(default_factory=list)
    flaky: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    hooks: dict[str, list[Recorded]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]


class LocalSite:
    def __init__(self) -> None:
        self.state = SiteState()
        self.server = QuietServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="testsite", daemon=True)

    def start(self) -> LocalSite:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset_concurrency(self) -> None:
        with self.state.lock:
            self.state.max_in_flight = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self, status: int, body: str | bytes, ctype: str = "text/html; charset=utf-8", **headers: str
            ) -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                record = Recorded("POST", self.path, dict(self.headers.items()), body)
                with state.lock:
                    state.requests.append(record)
                if parts.path == "/renderer/content":  # a browserless-style renderer stand-in
                    url = json.loads(body or b"{}").get("url", "")
                    self._send(200, f"<html><body><h1>Rendered {url}</h1></body></html>")
                    return
                if parts.path.startswith("/hooks/"):
                    name = parts.path.removeprefix("/hooks/")
                    with state.lock:
                        state.hooks[name].append(record)
                    self._send(500 if name.startswith("fail") else 200, "ok", "text/plain")
                    return
                self._send(404, "not found", "text/plain")

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with state.lock:
                    state.requests.append(Recorded("GET", self.path, dict(self.headers.items())))
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                try:
                    self._route(parts.path, query)
                finally:
                    with state.lock:
                        state.in_flight -= 1

            def _route(self, path: str, query: dict[str, str]) -> None:
                if path == "/robots.txt":
                    self._send(200, "User-agent: *\nDisallow: /private/\n", "text/plain")
                elif path == "/products":
                    self._send(200, _products_page())
                elif path.startswith("/products/") and path.removeprefix("/products/").isdigit():
                    n = int(path.removeprefix("/products/"))
                    self._send(
                        200,
                        f'<html><body><h1 id="title">Product {n}</h1><p class="desc">About product {n}.</p>'
                        f'<span class="price">${n}.99</span><a class="back" href="/products">back</a></body></html>',
                    )
                elif path == "/slow":
                    ms = int(query.get("ms", "1000"))
                    time.sleep(ms / 1000)
                    self._send(200, f"<html><body><h1>Slow {ms}</h1></body></html>")
                elif path.startswith("/status/"):
                    code = int(path.removeprefix("/status/"))
                    self._send(code, f"<html><body><h1>Status {code}</h1></body></html>")
                elif path == "/flaky":
                    key, fail = query.get("key", "x"), int(query.get("fail", "1"))
                    with state.lock:
                        state.flaky[key] += 1
                        count = state.flaky[key]
                    if count <= fail:
                        self._send(503, "<h1>try later</h1>")
                    else:
                        self._send(200, f"<html><body><h1>Recovered after {count - 1}</h1></body></html>")
                elif path == "/redirect":
                    self._send(302, "", Location=query.get("to", "/products"))
                elif path == "/big":
                    kb = int(query.get("kb", "100"))
                    self._send(200, "<html><body>" + "x" * (kb * 1024) + "</body></html>")
                elif path == "/image.png":
                    self._send(200, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")
                elif path == "/latin1":
                    body = '<html><head><meta charset="iso-8859-1"></head><body><h1>Café crème</h1></body></html>'
                    self._send(200, body.encode("latin-1"), "text/html")
                elif path.startswith("/private/"):
                    self._send(200, "<h1>secret</h1>")
                else:
                    self._send(404, "<h1>not found</h1>")

        return Handler


class ForwardProxy:
    """A plain HTTP forward proxy (absolute-form GET) that records what went through it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                import http.client

                target = urlsplit(self.path)
                proxy.seen.append((self.path, self.headers.get("Proxy-Authorization")))
                conn = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=10)
                path = target.path + (f"?{target.query}" if target.query else "")
                conn.request("GET", path, headers={"User-Agent": self.headers.get("User-Agent", ""), "Via": proxy.name})
                upstream = conn.getresponse()
                data = upstream.read()
                self.send_response(upstream.status)
                self.send_header("Content-Type", upstream.getheader("Content-Type") or "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
