"""The S3 proxy's rendered config, run by the real HAProxy on this machine in front of
three stand-in nodes (127.0.0.1 only): requests keep succeeding when one node goes away,
even before the health check has marked it down."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from infra.config import load_stack_file
from infra.specs.context import SpecContext
from infra.specs.objectstore import HEALTH_PATH, s3_proxy_config
from infra.topology import plan
from tests.infra.pulumi_harness import ROOT


class _Store:
    """What the nodes of one cluster share: every node answers for every object."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.hits: dict[int, int] = {}
        self.lock = threading.Lock()


def _node(store: _Store, index: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == HEALTH_PATH["minio"]:
                return self._reply(200)
            with store.lock:
                store.hits[index] = store.hits.get(index, 0) + 1
                body = store.objects.get(self.path)
            self._reply(200, body) if body is not None else self._reply(404)

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with store.lock:
                store.hits[index] = store.hits.get(index, 0) + 1
                store.objects[self.path] = body
            self._reply(200)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, list[ThreadingHTTPServer], _Store]]:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy not installed: run `make setup` (or scripts/setup-system.sh)")
    settings = load_stack_file(ROOT / "Pulumi.phase4.yaml")
    conf = s3_proxy_config(SpecContext(plan(settings), settings), "api-01")
    store = _Store()
    nodes = [_node(store, i) for i in range(3)]
    lines = iter(f"127.0.0.1:{n.server_address[1]}" for n in nodes)
    # the four private node addresses become three local stand-ins (the fourth stays down)
    conf = re.sub(r"(?m)^(\s*server \S+ )\S+:9000", lambda m: m.group(1) + next(lines, "127.0.0.1:1"), conf)
    port = _free_port()
    conf = conf.replace("bind :9000", f"bind 127.0.0.1:{port}")
    (tmp_path / "haproxy.cfg").write_text(conf)
    proc = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/ping", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        yield url, nodes, store
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for n in nodes:
            n.server_close()


def _round_trips(url: str, prefix: str, count: int) -> list[str]:
    """PUT then GET `count` objects (new connections each, as after a failover); the failures."""
    failures = []
    for i in range(count):
        key = f"/task-results/{prefix}/{i}"
        with httpx.Client(timeout=5) as client:
            put = client.put(url + key, content=f"{prefix}-{i}".encode())
            got = client.get(url + key)
        if put.status_code != 200 or got.status_code != 200 or got.content != f"{prefix}-{i}".encode():
            failures.append(f"{key}: {put.status_code}/{got.status_code}")
    return failures


def test_requests_go_on_when_a_node_goes_away(proxied: tuple[str, list[ThreadingHTTPServer], _Store]) -> None:
    url, nodes, store = proxied
    time.sleep(2.5)  # one health-check round: the fourth (absent) node is marked down
    assert _round_trips(url, "before", 30) == []
    assert len(store.hits) == 3, f"every live node serves: {store.hits}"
    nodes[0].shutdown()
    nodes[0].server_close()  # node 1 gone: connections to it are refused from now on
    assert _round_trips(url, "during", 30) == [], "a refused connection is retried on another node"
    time.sleep(5)  # marked down after two failed checks
    before = dict(store.hits)
    assert _round_trips(url, "after", 30) == []
    assert store.hits.get(0, 0) == before.get(0, 0)
