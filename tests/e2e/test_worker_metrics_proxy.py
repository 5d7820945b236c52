"""The per-host worker metrics proxy (Hetzner worker hosts away from Prometheus), run for
real on this Docker engine: its rendered nginx config forwards port 9808+n-1 to the n-th
worker container's alias, and still starts (answering 502) while a worker is missing."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from infra.config import load_stack_file
from infra.specs.app import worker_metrics_proxy_config
from infra.specs.context import SpecContext
from infra.topology import Role, plan

pytestmark = [pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
NGINX = "selextract/nginx:1.22"
PYTHON = "selextract/python:3.11"
FAKE_WORKER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    '        body = f\'fake_worker{{slot="{os.environ["SLOT"]}",path="{self.path}"}} 1\\n\'.encode()\n'
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 9808), H).serve_forever()\n"
)


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc


def test_worker_metrics_proxy_forwards_to_each_worker(tmp_path: Path) -> None:
    for image in (NGINX, PYTHON):
        if _docker("image", "inspect", image, check=False).returncode != 0:
            pytest.fail(f"{image} missing: run scripts/build-images.sh")
    settings = load_stack_file(ROOT / "Pulumi.phase2.yaml")
    ctx = SpecContext(plan(settings), settings)
    host = "worker-01"
    conf = tmp_path / "nginx.conf"
    conf.write_text(worker_metrics_proxy_config(ctx, host))
    conf.chmod(0o644)
    run = uuid.uuid4().hex[:6]
    net, names = f"sx-wmp-{run}", []
    _docker("network", "create", net)
    try:
        for slot in (1, 2):  # slots 3 and 4 have no worker (yet)
            name = f"sx-wmp-{run}-w{slot}"
            alias = ctx.plan.container_name(host, Role.WORKER, slot)
            _docker("run", "-d", "--name", name, "--network", net, "--network-alias", alias, "-e", f"SLOT={slot}",
                    PYTHON, "python", "-c", FAKE_WORKER)  # fmt: skip
            names.append(name)
        proxy = f"sx-wmp-{run}-proxy"
        publish = [a for port in range(9808, 9812) for a in ("-p", f"127.0.0.1::{port}")]
        _docker("run", "-d", "--name", proxy, "--network", net, *publish,
                "-v", f"{conf}:/etc/nginx/nginx.conf:ro", NGINX, "nginx", "-g", "daemon off;")  # fmt: skip
        names.append(proxy)

        def url(port: int) -> str:
            address = _docker("port", proxy, str(port)).stdout.split()[0]
            return f"http://{address}/metrics"

        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(url(9808), timeout=3)
                if first.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _docker("logs", proxy, check=False).stderr
            time.sleep(0.5)
        assert first.text == 'fake_worker{slot="1",path="/metrics"} 1\n'
        assert httpx.get(url(9809), timeout=3).text == 'fake_worker{slot="2",path="/metrics"} 1\n'
        assert httpx.get(url(9810), timeout=10).status_code == 502, "a missing worker is a failed scrape, no more"
    finally:
        if names:
            _docker("rm", "-f", *names, check=False)
        _docker("network", "rm", net, check=False)
