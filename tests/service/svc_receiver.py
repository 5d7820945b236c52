"""Hostile webhook receivers on 127.0.0.1 for the worker-hardening tests, and a way to find
(and kill) the pool processes of a test's own Celery worker."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from svc_site import QuietServer


def gzip_bomb(megabytes: int) -> bytes:
    """gzip of ``megabytes`` MiB of zeros (about 1 KiB on the wire per MiB), built in 1 MiB
    steps so building it never holds the inflated size."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([*(packer.compress(zeros) for _ in range(megabytes)), packer.flush()])


class Receiver:
    """An HTTP server that records each POST's headers and answers it with ``respond``."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append({k.lower(): v for k, v in self.headers.items()})
                respond(self)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer_with(body: bytes, headers: dict[str, str]) -> Callable[[BaseHTTPRequestHandler], None]:
    """A 200 response carrying ``body`` (written in 64 KiB pieces; a client that hangs up
    early only ends the write)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            for start in range(0, len(body), 1 << 16):
                handler.wfile.write(body[start : start + (1 << 16)])
        except OSError:
            pass

    return respond


def hang(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """Never answer (for ``seconds``): the delivery is still in flight when the test acts."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        handler.close_connection = True

    return respond


def trickle(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """A status line, then one header byte every 0.2 s for ``seconds``: each read is quick,
    the answer never ends."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                handler.wfile.write(b"a")
                handler.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass
        handler.close_connection = True

    return respond


def pool_children(main_pid: int) -> set[int]:
    """The processes forked by a worker's main process (its pool), from /proc."""
    found: set[int] = set()
    for children in Path(f"/proc/{main_pid}/task").glob("*/children"):
        try:
            found.update(int(pid) for pid in children.read_text().split())
        except OSError:
            continue
    return found
