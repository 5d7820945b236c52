"""Metrics from a file and from a real Prometheus (backfilled with 7 days of samples, so the
7-day averages and the recording-rule names are queried exactly as in production)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ops.access import free_port
from ops.cli import app
from ops.metrics import (
    MetricsError,
    MetricsInputError,
    business_metrics,
    from_prometheus,
    load_metrics_file,
    parse_metrics,
)

runner = CliRunner()


def test_file_accepts_the_recording_rule_names(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "celery_queue_length: 120\napi_response_time_95th: 2.4\ndisk_usage_percent: 81\n"
        "postgres_cpu_usage_percent: 50\ncpu_percent_7d: 70\nhosts:\n  app-01: {cpu_percent: 3, memory_percent: 9}\n"
    )
    m = load_metrics_file(path)
    assert (m.queue_depth, m.api_p95_seconds, m.storage_percent, m.db_cpu_percent) == (120, 2.4, 81, 50)
    assert m.hosts["app-01"].cpu_percent == 3
    assert m.source == f"file:{path}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cpu_percent_7d": 101}, "cpu_percent_7d: Input should be less than or equal to 100"),
        ({"queue_depth": -1}, "queue_depth: Input should be greater than or equal to 0"),
        ({"queue": 1}, "queue: unknown metric"),
        ({"queue_depth": "lots"}, "queue_depth: Input should be a valid number"),
        ({"queue_depth": 1, "celery_queue_length": 2}, "both set queue_depth"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_file_errors_name_the_metric(data: object, message: str) -> None:
    with pytest.raises(MetricsInputError, match=message):
        parse_metrics(data, "t")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(MetricsInputError, match="cannot read"):
        load_metrics_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MetricsInputError, match="not valid JSON"):
        load_metrics_file(bad)


def test_nan_is_no_data() -> None:
    assert parse_metrics({"api_p95_seconds": float("nan")}, "t").api_p95_seconds is None


def test_business_metrics_from_queries() -> None:
    seen: list[str] = []

    def query(sql: str) -> list[list[str]]:
        seen.append(sql)
        return [["42"]]

    m = business_metrics(query, db_size_bytes=25_000_000_000, connections=(170, 200))
    assert m.active_users == 42 and m.db_size_gb == 25 and m.db_connections_percent == 85
    assert "interval '30 days'" in seen[0]

    def broken(sql: str) -> list[list[str]]:
        raise RuntimeError("relation users does not exist")

    assert business_metrics(broken, None).active_users is None


# --- Prometheus ----------------------------------------------------------------------------------

STEP = 120  # seconds between backfilled samples
DAYS = 7


def _openmetrics(now: float) -> str:
    """7 days of node/postgres/app series, ending just before `now`."""
    start = int(now - DAYS * 86400 - 900)
    end = int(now - 20)
    times = range(start, end, STEP)
    lines: list[str] = []

    def family(name: str, kind: str, series: list[tuple[str, object]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        sample = f"{name}_total" if kind == "counter" else name
        for labels, value in series:
            for t in times:
                v = value(t) if callable(value) else value
                lines.append(f"{sample}{{{labels}}} {v} {t}")

    # idle seconds grow 0.15/s on app-01 (85 % busy) and 0.9/s on db-01 (10 % busy)
    family(
        "node_cpu_seconds",
        "counter",
        [
            ('cpu="0",mode="idle",host="app-01"', lambda t: round((t - start) * 0.15, 3)),
            ('cpu="0",mode="idle",host="db-01"', lambda t: round((t - start) * 0.9, 3)),
        ],
    )
    family("node_memory_MemTotal_bytes", "gauge", [('host="app-01"', 8e9), ('host="db-01"', 16e9)])
    family("node_memory_MemAvailable_bytes", "gauge", [('host="app-01"', 2e9), ('host="db-01"', 12e9)])
    family("celery_queue_length", "gauge", [('queue="scrape"', 150)])
    family("api_response_time_95th", "gauge", [("", 2.5)])
    family("disk_usage_percent", "gauge", [('host="app-01"', 85), ('host="db-01"', 40)])
    family("pg_database_size_bytes", "gauge", [('datname="selextract"', 25e9), ('datname="postgres"', 8e6)])
    family("pg_stat_activity_count", "gauge", [('state="active"', 30), ('state="idle"', 15)])
    family("pg_settings_max_connections", "gauge", [("", 200)])
    lines.append("# EOF")
    return "\n".join(line.replace("{}", "") for line in lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        pytest.skip("prometheus/promtool not installed")
    base = tmp_path_factory.mktemp("prom")
    data = base / "data"
    source = base / "samples.om"
    source.write_text(_openmetrics(time.time()))
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(data)],
        check=True,
        capture_output=True,
    )
    config = base / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("prometheus did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_prometheus_seven_day_averages_and_rules(prometheus: str) -> None:
    m = from_prometheus(prometheus)
    assert m.cpu_percent_7d == pytest.approx(47.5, abs=0.5)  # 100 - avg(0.15, 0.9) x 100
    assert m.memory_percent_7d == pytest.approx(100 * (1 - 14 / 24), abs=0.1)
    assert m.queue_depth == 150
    assert m.api_p95_seconds == 2.5
    assert m.storage_percent == 85
    assert m.db_size_gb == 25
    assert m.db_connections_percent == pytest.approx(22.5)
    assert m.db_cpu_percent is None  # no postgres_cpu_usage_percent series: no data, not 0
    assert m.hosts["app-01"].cpu_percent == pytest.approx(85, abs=0.5)
    assert m.hosts["db-01"].memory_percent == pytest.approx(25, abs=0.1)


def test_cli_analyze_from_prometheus(prometheus: str) -> None:
    result = runner.invoke(
        app, ["scaling", "analyze", "-p", "1", "--prometheus", prometheus, "--no-database", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by = {(t["source"], t["metric"]): t for t in data["triggers"]}
    assert by[("guide", "queue_depth")]["verdict"] == "triggered"
    assert by[("guide", "api_p95_seconds")]["verdict"] == "triggered"
    assert by[("guide", "storage_percent")]["verdict"] == "triggered"
    assert by[("matrix", "cpu_percent_7d")]["verdict"] == "ok"
    rec = data["recommendation"]
    assert rec["action"] == "scale" and rec["target_phase"] == 2
    assert any("points at phase 4" in r for r in rec["reasons"])


def test_cli_cost_optimize_from_prometheus(prometheus: str) -> None:
    result = runner.invoke(app, ["--stack", "phase1", "cost", "optimize", "--prometheus", prometheus, "-f", "json"])
    assert result.exit_code == 0, result.output
    hints = {(h["kind"], h["target"]): h for h in json.loads(result.output)["hints"]}
    assert hints[("upsize", "app-01")]["config"] == {"appHost.serverType": "cx52"}  # 85 % CPU on the cx42
    assert ("downsize", "db-01") in hints  # 10 % CPU, 25 % memory on the ccx23


class _Broken(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_prometheus_errors_are_reported() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(MetricsError, match="bad_data: parse error"):
            from_prometheus(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    with pytest.raises(MetricsError, match="ConnectError"):
        from_prometheus(f"http://127.0.0.1:{free_port()}")
    result = runner.invoke(app, ["scaling", "analyze", "--prometheus", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "prometheus" in result.output
