"""HMAC signatures: the ones we put on completion webhooks and the ones we check on
Lemon Squeezy billing webhooks."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Selextract-Signature"
TOLERANCE_SECONDS = 300


def sign_webhook(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """``t=<unix>,v1=<hex hmac-sha256 of "<t>.<body>">``: the timestamp defeats replays."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify_webhook(secret: str, body: bytes, header: str, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """What a receiver runs on our webhooks (documented in the console, used by tests)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    expected = sign_webhook(secret, body, ts)
    return hmac.compare_digest(expected, header.strip())


def verify_lemonsqueezy(secret: str, body: bytes, signature: str | None) -> bool:
    """Lemon Squeezy sends ``X-Signature``: hex HMAC-SHA256 of the raw body."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())
