"""API key format and hashing, CSRF tokens for the console."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sx_"


def generate_api_key() -> tuple[str, str, str]:
    """Return (secret key, display prefix, hash). Keys are 256-bit random, so a plain
    SHA-256 is enough to store them (no password-style stretching needed)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[: len(KEY_PREFIX) + 8], hash_api_key(key)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected and given and hmac.compare_digest(expected, given))
