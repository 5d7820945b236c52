"""Alerts for `selextract health`: Slack (incoming webhook) and e-mail (SMTP).

Recipients come from the stack (`alerts.emailTo`, `alerts.smtpHost`, `alerts.smtpFrom`) or
the environment (`ALERT_EMAIL_TO`, `SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`,
`SMTP_PASSWORD`, `SMTP_FROM`, `SLACK_WEBHOOK_URL`); secrets only ever from the
environment. A health check run every 5 minutes from cron must not send 12 mails an
hour: an alert goes out when the set of failing checks changes, again after
`REPEAT_AFTER` seconds while it persists, and once as "recovered" when all pass.
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

import httpx

from infra.config import Settings
from ops.health import HealthReport

REPEAT_AFTER = 3600.0


@dataclass(frozen=True)
class AlertConfig:
    slack_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    email_to: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.slack_webhook_url or (self.smtp_host and self.email_to))

    @classmethod
    def from_env(cls, env: Mapping[str, str], settings: Settings | None = None) -> AlertConfig:
        alerts = settings.alerts if settings else None
        host_port = env.get("SMTP_HOST") or (alerts.smtp_host if alerts else None)
        host, port = host_port, int(env.get("SMTP_PORT") or 587)
        if host_port and ":" in host_port:
            host, _, port_text = host_port.rpartition(":")
            port = int(env.get("SMTP_PORT") or port_text)
        smtp_from = env.get("SMTP_FROM") or (alerts.smtp_from if alerts else None)
        return cls(
            slack_webhook_url=env.get("SLACK_WEBHOOK_URL") or None,
            smtp_host=host or None,
            smtp_port=port,
            smtp_user=env.get("SMTP_USER") or None,
            smtp_password=env.get("SMTP_PASSWORD") or None,
            smtp_from=smtp_from or "selextract@localhost",
            email_to=env.get("ALERT_EMAIL_TO") or (alerts.email_to if alerts else None),
        )


def format_alert(stack: str, report: HealthReport, kind: Literal["alert", "recovered"]) -> tuple[str, str]:
    if kind == "recovered":
        subject = f"[selextract {stack}] recovered: all health checks pass"
    else:
        subject = f"[selextract {stack}] health check FAILED: {', '.join(report.failing)}"
    lines = [subject, ""]
    for r in report.results:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[r.status]
        lines.append(f"{mark} {r.name}: {r.detail}")
    return subject, "\n".join(lines)


def send_slack(url: str, text: str) -> None:
    resp = httpx.post(url, json={"text": text}, timeout=10)
    resp.raise_for_status()


def send_email(config: AlertConfig, subject: str, text: str) -> None:
    assert config.smtp_host and config.email_to
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = config.smtp_from or "selextract@localhost"
    msg["To"] = config.email_to
    msg.set_content(text)
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=15) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls()
            smtp.ehlo()
        if config.smtp_user and config.smtp_password:
            smtp.login(config.smtp_user, config.smtp_password)
        smtp.send_message(msg)


class AlertState:
    """What was last alerted, so cron runs alert on changes, not on every run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, object]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def decide(self, report: HealthReport, now: float | None = None) -> Literal["alert", "recovered"] | None:
        now = time.time() if now is None else now
        state = self.load()
        failing = sorted(report.failing)
        previous = sorted(state.get("failing", []))  # type: ignore[arg-type]
        last = float(state.get("alerted_at", 0.0))  # type: ignore[arg-type]
        if failing:
            if failing != previous or now - last >= REPEAT_AFTER:
                return "alert"
            return None
        return "recovered" if previous else None

    def remember(self, report: HealthReport, kind: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        state = self.load()
        new = {"failing": sorted(report.failing), "checked_at": now, "alerted_at": state.get("alerted_at", 0.0)}
        if kind == "alert":
            new["alerted_at"] = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(new))


def notify(config: AlertConfig, stack: str, report: HealthReport, kind: Literal["alert", "recovered"]) -> list[str]:
    """Send to every configured channel; returns the channels that failed (not raised:
    a broken SMTP server must not hide the health result)."""
    subject, text = format_alert(stack, report, kind)
    failed = []
    if config.slack_webhook_url:
        try:
            send_slack(config.slack_webhook_url, text)
        except (httpx.HTTPError, OSError) as exc:
            failed.append(f"slack: {exc}")
    if config.smtp_host and config.email_to:
        try:
            send_email(config, subject, text)
        except (smtplib.SMTPException, OSError) as exc:
            failed.append(f"email: {exc}")
    return failed
