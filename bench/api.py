"""API latency with wrk (Debian's) against 127.0.0.1: Selextract's `/health`,
`GET /api/v1/tasks/{id}` and `POST /api/v1/tasks` through the entry proxy (nginx, TLS),
next to a bare FastAPI + uvicorn hello-world started here with the same worker count."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

LUA = Path(__file__).resolve().parent / "wrk" / "report.lua"
HELLO_PORT = 38001


def wrk(url: str, connections: int, seconds: int, *, method: str = "GET", token: str = "", body: str = "") -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    env = dict(os.environ, WRK_METHOD=method, WRK_TOKEN=token)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(body)
    env["WRK_BODY_FILE"] = f.name if body else ""
    threads = min(connections, os.cpu_count() or 2)
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url],
            env=env, capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line.removeprefix("WRKJSON "))
    secs = r["duration_us"] / 1e6
    errors = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    return {
        "connections": connections,
        "seconds": round(secs, 1),
        "requests": r["requests"],
        "rps": r["requests"] / secs,
        "ok_rps": (r["requests"] - r["non2xx"]) / secs,
        "non2xx": r["non2xx"],
        "socket_errors": errors,
        **{k.removesuffix("_us") + "_ms": r[k] / 1000 for k in ("p50_us", "p90_us", "p95_us", "p99_us", "max_us")},
    }


class Hello:
    """The bare app, in its own process group on 127.0.0.1."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.hello:app", "--host", "127.0.0.1", "--port", str(HELLO_PORT),
             "--workers", str(self.workers), "--no-access-log", "--log-level", "warning"],
            cwd=Path(__file__).resolve().parents[1], start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{HELLO_PORT}/health"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("hello-world app did not start")

    def __exit__(self, *exc: Any) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait(timeout=30)
