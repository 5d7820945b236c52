"""`selextract health` against real Postgres, Redis, a real Celery worker, an HTTP API
stand-in and TLS servers with certificates of chosen lifetimes; alerts to a local Slack
webhook receiver and a local SMTP server."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from ops.access import free_port
from ops.alerts import AlertConfig, AlertState, notify
from ops.cli import app
from ops.health import CheckResult, HealthReport, certificate_days_left, check_certificate

runner = CliRunner()


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body, code = {"status": "ok", "version": "abc123"}, 200
        elif self.path == "/health/ready":
            body, code = {"status": "ok", "checks": {"database": "ok", "redis": "ok", "storage": "ok"}}, 200
        else:
            body, code = {"detail": "not found"}, 404
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def celery_worker(redis_server, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real Celery worker on the throwaway Redis (the service's own Celery app)."""
    base = tmp_path_factory.mktemp("worker")
    (base / "opsworker.py").write_text(
        "from common.config import Settings\nfrom common.queue import make_celery\napp = make_celery(Settings())\n"
    )
    env = {**os.environ, "REDIS_URL": redis_server.url(5), "PYTHONPATH": str(base)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "opsworker",
            "worker",
            "--pool",
            "solo",
            "--hostname",
            "opsw1@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    yield redis_server.url(5)
    proc.terminate()
    proc.wait(timeout=30)


def _env_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "svc.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture
def healthy_env(tmp_path: Path, pg_db: str, celery_worker: str, api_url: str) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    return _env_file(
        tmp_path,
        DATABASE_URL=pg_db,
        REDIS_URL=celery_worker,
        STORAGE_BACKEND="local",
        STORAGE_PATH=str(results),
        API_URL=api_url,
    )


def _health(env_file: Path, *args: str, state: Path | None = None, extra_env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    env = {"SELEXTRACT_STATE": str(state or env_file.parent / "state"), **(extra_env or {})}
    return runner.invoke(app, ["--stack", "htest", "--env-file", str(env_file), "health", *args], env=env)


def _wait_for_worker(env_file: Path) -> dict:  # type: ignore[type-arg]
    for _ in range(30):
        result = _health(env_file, "--critical-only", "--format", "json", "--no-alert")
        data = json.loads(result.output)
        if data["ok"]:
            return data
        time.sleep(1)
    return data


def test_healthy_deployment(healthy_env: Path) -> None:
    data = _wait_for_worker(healthy_env)
    checks = {c["name"]: c for c in data["checks"]}
    assert set(checks) == {"api", "database", "redis", "workers", "storage"}
    assert all(c["status"] == "ok" and c["critical"] for c in checks.values()), checks
    assert "version abc123" in checks["api"]["detail"]
    assert "opsw1@" in checks["workers"]["detail"]
    assert "connections" in checks["database"]["detail"]
    full = _health(healthy_env, "--format", "json", "--no-alert")
    names = {c["name"]: c for c in json.loads(full.output)["checks"]}
    assert {"disk", "api-ready"} <= set(names) and not names["disk"]["critical"]
    assert str(healthy_env.parent / "results") in names["disk"]["detail"]
    text = _health(healthy_env, "--critical-only", "--no-alert")
    assert text.exit_code == 0 and "healthy" in text.output


def test_failures_exit_1_and_silent_prints_nothing(tmp_path: Path, pg_db: str, api_url: str) -> None:
    env = _env_file(
        tmp_path,
        DATABASE_URL=pg_db,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        STORAGE_BACKEND="local",
        STORAGE_PATH=str(tmp_path),
        API_URL=api_url,
    )
    result = _health(env, "--critical-only", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert set(data["failing"]) == {"redis", "workers"}
    assert {c["name"]: c["status"] for c in data["checks"]}["database"] == "ok"
    silent = _health(env, "--silent")
    assert silent.exit_code == 1 and silent.output == ""
    down = _env_file(
        tmp_path,
        DATABASE_URL=pg_db,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        STORAGE_PATH=str(tmp_path),
        API_URL=f"http://127.0.0.1:{free_port()}",
    )
    text = _health(down, "--critical-only")
    assert text.exit_code == 1 and "FAILING" in text.output and "api" in text.output


# --- alerts ---------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []  # type: ignore[type-arg]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class _Smtp(threading.Thread):
    """A minimal SMTP server: enough of RFC 5321 for smtplib's EHLO/MAIL/RCPT/DATA."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:

                def say(line: str) -> None:
                    f.write(line.encode() + b"\r\n")
                    f.flush()

                say("220 test ESMTP")
                data: list[str] | None = None
                for raw in f:
                    line = raw.decode().rstrip("\r\n")
                    if data is not None:
                        if line == ".":
                            self.messages.append("\n".join(data))
                            data = None
                            say("250 queued")
                        else:
                            data.append(line)
                        continue
                    verb = line.split(" ")[0].upper()
                    if verb == "EHLO":
                        say("250-test")
                        say("250 8BITMIME")
                    elif verb == "DATA":
                        data = []
                        say("354 go ahead")
                    elif verb == "QUIT":
                        say("221 bye")
                        break
                    else:
                        say("250 ok")


def _report(*failing: str) -> HealthReport:
    names = ("api", "database", "redis")
    return HealthReport([CheckResult(n, "fail" if n in failing else "ok", True, f"{n} detail", 0.01) for n in names])


def test_alert_state_sends_on_change_repeat_and_recovery(tmp_path: Path) -> None:
    state = AlertState(tmp_path / "s.json")
    t0 = 1_000_000.0
    assert state.decide(_report(), t0) is None
    failing = _report("redis")
    assert state.decide(failing, t0) == "alert"
    state.remember(failing, "alert", t0)
    assert state.decide(failing, t0 + 300) is None  # cron 5 minutes later: no repeat
    state.remember(failing, None, t0 + 300)
    worse = _report("redis", "database")
    assert state.decide(worse, t0 + 600) == "alert"  # a new failure: alert again
    state.remember(worse, "alert", t0 + 600)
    assert state.decide(worse, t0 + 600 + 3600) == "alert"  # still failing an hour later
    state.remember(worse, "alert", t0 + 4200)
    assert state.decide(_report(), t0 + 4500) == "recovered"
    state.remember(_report(), "recovered", t0 + 4500)
    assert state.decide(_report(), t0 + 4800) is None


def test_slack_and_email_alerts_are_delivered() -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    smtp = _Smtp()
    smtp.start()
    _Hook.received.clear()
    config = AlertConfig.from_env(
        {
            "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook",
            "SMTP_HOST": f"127.0.0.1:{smtp.port}",
            "ALERT_EMAIL_TO": "ops@example.com",
            "SMTP_FROM": "alerts@example.com",
        }
    )
    assert config.smtp_port == smtp.port and config.enabled
    problems = notify(config, "prod", _report("redis"), "alert")
    hook.shutdown()
    smtp.sock.close()
    assert problems == []
    assert "health check FAILED: redis" in _Hook.received[0]["text"]
    assert "FAIL redis: redis detail" in _Hook.received[0]["text"]
    assert "Subject: [selextract prod] health check FAILED: redis" in smtp.messages[0]
    assert "To: ops@example.com" in smtp.messages[0]


def test_alert_channels_come_from_the_stack() -> None:
    from ops.stack import load_stack

    config = AlertConfig.from_env({}, load_stack("phase1"))
    assert (config.smtp_host, config.smtp_port, config.email_to) == ("smtp.example.com", 587, "ops@selextract.com")
    assert config.slack_webhook_url is None


def test_cli_health_alerts_once_per_failure(tmp_path: Path, pg_db: str, api_url: str) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received.clear()
    extra = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook"}
    broken = _env_file(
        tmp_path,
        DATABASE_URL=pg_db,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        STORAGE_PATH=str(tmp_path),
        API_URL=api_url,
    )
    state = tmp_path / "state"
    for _ in range(2):
        assert _health(broken, "--silent", "--critical-only", state=state, extra_env=extra).exit_code == 1
    assert len(_Hook.received) == 1 and "FAILED" in _Hook.received[0]["text"]
    assert _health(broken, "--silent", "--critical-only", "--no-alert", state=state, extra_env=extra).exit_code == 1
    hook.shutdown()


# --- certificates ---------------------------------------------------------------------------


def _tls_server(tmp_path: Path, days: float) -> tuple[int, threading.Thread]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"c{days}.pem", tmp_path / f"k{days}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        for _ in range(4):
            conn, _ = sock.accept()
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock.getsockname()[1], thread


@pytest.mark.parametrize(("days", "status"), [(60, "ok"), (10, "warn"), (5, "fail"), (-3, "fail")])
def test_certificate_expiry(tmp_path: Path, days: float, status: str) -> None:
    port, _ = _tls_server(tmp_path, days)
    assert certificate_days_left("127.0.0.1", port) == pytest.approx(days, abs=0.01)
    got, detail = check_certificate(f"https://127.0.0.1:{port}")
    assert got == status
    assert ("EXPIRED" in detail) == (days < 0)


def test_plain_http_entry_warns() -> None:
    assert check_certificate("http://127.0.0.1:1")[0] == "warn"
