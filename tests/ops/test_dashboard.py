"""The live dashboard: snapshots, WebSocket updates, and the page rendered by headless
Chromium from the real `selextract dashboard` process (numbers in the DOM, a screenshot)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ops.access import free_port
from ops.costs import projection
from ops.dashboard import DashboardState, create_app
from ops.metrics import MetricsError, load_metrics_file
from ops.stack import load_stack

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
FIRST = {
    "cpu_percent_7d": 73.25,
    "memory_percent_7d": 61.5,
    "active_users": 140,
    "db_size_gb": 12,
    "monthly_revenue_eur": 450,
    "queue_depth": 137,
    "api_p95_seconds": 0.42,
    "storage_percent": 41,
}


def _state(path: Path, interval: float = 0.1) -> DashboardState:
    return DashboardState(lambda: load_metrics_file(path), load_stack("local"), interval=interval)


def test_snapshot_holds_triggers_costs_and_history(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(FIRST))
    state = _state(path, interval=0.05)
    snap = state.snapshot()
    triggers = {(t["source"], t["metric"]): t for t in snap["analysis"]["triggers"]}
    assert triggers[("guide", "queue_depth")]["value"] == 137
    assert triggers[("guide", "queue_depth")]["verdict"] == "triggered"
    assert snap["analysis"]["recommendation"]["cost"]["delta_monthly"] == pytest.approx(20.53 - 9.94)
    assert [p["total"] for p in snap["projection"]] == [p.total for p in projection(load_stack("local"))]
    assert len(snap["history"]) == 1
    assert state.snapshot() is snap  # within the interval: no new collection
    time.sleep(0.06)
    assert len(state.snapshot()["history"]) == 2


def test_collection_errors_are_shown_not_fatal(tmp_path: Path) -> None:
    def broken():  # type: ignore[no-untyped-def]
        raise MetricsError("prometheus http://x: ConnectError")

    snap = DashboardState(broken, load_stack("local")).snapshot()
    assert snap["error"] == "prometheus http://x: ConnectError"
    assert snap["history"] == []
    assert {t["verdict"] for t in snap["analysis"]["triggers"]} == {"no data"}


def test_websocket_pushes_new_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(FIRST))
    client = TestClient(create_app(_state(path, interval=0.1)))
    with client.websocket_connect("/ws") as ws:
        first = ws.receive_json()
        assert first["analysis"]["metrics"]["queue_depth"] == 137
        path.write_text(json.dumps({**FIRST, "queue_depth": 12}))
        for _ in range(20):
            later = ws.receive_json()
            if later["analysis"]["metrics"]["queue_depth"] == 12:
                break
        assert later["analysis"]["metrics"]["queue_depth"] == 12
        assert later["history"][0]["queue_depth"] == 137
    assert client.get("/api/snapshot").json()["stack"] == "local"
    assert client.get("/api/thresholds").json()["transitions"] == ["0→1", "1→2", "2→3", "3→4"]


def test_page_is_self_contained(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{}")
    page = TestClient(create_app(_state(path))).get("/").text
    assert "new WebSocket" in page and "/ws" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from a CDN: no internet here
    assert "{{interval_ms}}" not in page


@pytest.fixture
def dashboard_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`selextract dashboard` as an operator starts it."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps(FIRST))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "--stack",
            "local",
            "dashboard",
            "--metrics",
            str(path),
            "--port",
            str(port),
            "--interval",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/api/snapshot", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail(f"dashboard did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield url, path
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _chromium(*args: str, size: str = "1200,900") -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.skip("chromium is not installed")
    profile = tempfile.mkdtemp(prefix="selextract-chromium-")
    try:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=5000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_chromium_renders_the_live_numbers(dashboard_process: tuple[str, Path], tmp_path: Path) -> None:
    url, metrics = dashboard_process
    dom = _chromium("--dump-dom", url + "/").stdout
    # every number arrived over the WebSocket: the served page has none of them
    assert 'id="status" class="live"' in dom
    assert "SCALE: scale to phase 1 (database decoupling)" in dom
    assert "monthly cost €9.94 → €20.53 (+10.59)" in dom
    row = re.search(r'<tr data-metric="queue_depth">(.*?)</tr>', dom, re.S)
    assert row and "137 tasks" in row.group(1) and "triggered" in row.group(1) and "&gt; 100 tasks" in row.group(1)
    assert "73.25% (105%)" in dom  # trigger chart: 73.25 of 70
    for total in ("€9.94", "€20.53", "€57.73", "€68.32", "€108.72"):  # cost chart, phases 0-4
        assert total in dom
    assert "CPU %: 73.25" in dom and "queue: 137" in dom  # trend chart legend

    metrics.write_text(json.dumps({**FIRST, "queue_depth": 12, "cpu_percent_7d": 20.5, "active_users": 5}))
    time.sleep(1.2)
    dom = _chromium("--dump-dom", url + "/").stdout
    assert "PREPARE: prepare for phase 1 (database decoupling)" in dom  # revenue 450 is 90 % of 500
    assert "queue: 12" in dom and "CPU %: 20.5" in dom

    shot = tmp_path / "dashboard.png"
    _chromium(f"--screenshot={shot}", url + "/", size="1200,1250")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "ops-dashboard.png")
