"""Sign-in through OpenID Connect, console sessions, API keys (created once, hashed, revoked)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx
from sqlalchemy import func, select
from svc_helpers import create_key_in_console, csrf, sign_in
from svc_oidc import FakeIssuer

from common.db import session_scope
from common.models import ApiKey, User


def test_sign_in_creates_account_and_console_key_works_on_the_api(client: Any, issuer: FakeIssuer) -> None:
    done = sign_in(client, issuer, "Dana@Example.com", name="Dana")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/keys"
    key = create_key_in_console(client, "ci")
    assert key.startswith("sx_")
    with session_scope() as session:
        user = session.scalar(select(User).where(User.email == "dana@example.com"))
        assert user is not None and user.name == "Dana" and user.plan.name == "free"
        stored = session.scalar(select(ApiKey).where(ApiKey.user_id == user.id))
        assert stored is not None
        assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()  # only the hash is kept
        assert key not in (stored.prefix, stored.key_hash) and key.startswith(stored.prefix)
    me = client.get("/api/v1/account", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert me.json()["email"] == "dana@example.com" and me.json()["credits"]["remaining"] == 100
    # X-API-Key works too; the listing never shows secrets
    listing = client.get("/api/v1/keys", headers={"X-API-Key": key})
    assert listing.status_code == 200 and key not in listing.text and listing.json()[0]["name"] == "ci"


def test_second_sign_in_is_the_same_account(client: Any, issuer: FakeIssuer) -> None:
    sign_in(client, issuer, "erin@example.com", sub="erin-sub")
    client.cookies.clear()
    sign_in(client, issuer, "erin@example.com", sub="erin-sub")
    with session_scope() as session:
        assert len(session.scalars(select(User).where(User.email == "erin@example.com")).all()) == 1


def test_unverified_email_is_refused(client: Any, issuer: FakeIssuer) -> None:
    done = sign_in(client, issuer, "mallory@example.com", email_verified=False)
    assert done.status_code == 403 and "not verified" in done.text


def test_missing_email_verified_claim_is_refused(client: Any, issuer: FakeIssuer) -> None:
    """An issuer that does not vouch for the address (no claim at all) signs no one in: the
    account would otherwise belong to whoever typed that e-mail at the provider."""
    done = sign_in(client, issuer, "oscar@example.com", email_verified=None)  # None: claim left out
    assert done.status_code == 403 and "email_verified" in done.text, done.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(User).where(User.email == "oscar@example.com")) == 0
    assert sign_in(client, issuer, "oscar@example.com", email_verified="true").status_code == 303


def test_callback_with_forged_state_is_refused(client: Any, issuer: FakeIssuer) -> None:
    issuer.sign_in_as("frank@example.com")
    login = client.get("/auth/login", follow_redirects=False)
    callback = httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
    forged = callback.replace("state=", "state=x")
    answer = client.get(forged.removeprefix("http://testserver"), follow_redirects=False)
    assert answer.status_code == 400 and "Sign-in failed" in answer.text


def test_console_requires_sign_in_and_csrf(client: Any, issuer: FakeIssuer) -> None:
    assert client.get("/console/keys", follow_redirects=False).status_code == 303
    landing = client.get("/console")
    assert 'id="sign-in"' in landing.text
    sign_in(client, issuer, "gina@example.com")
    refused = client.post("/console/keys", data={"csrf_token": "wrong", "name": "x"})
    assert refused.status_code == 403
    page = client.get("/console")
    assert "gina@example.com" in page.text
    out = client.post("/auth/logout", data={"csrf_token": csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/console/keys", follow_redirects=False).status_code == 303


def test_keys_api_create_list_revoke(client: Any, account: Any) -> None:
    created = client.post("/api/v1/keys", json={"name": "second"}, headers=account.headers)
    assert created.status_code == 201
    body = created.json()
    second = {"Authorization": f"Bearer {body['key']}"}
    assert client.get("/api/v1/account", headers=second).status_code == 200
    names = [k["name"] for k in client.get("/api/v1/keys", headers=account.headers).json()]
    assert sorted(names) == ["second", "test"]
    assert client.delete(f"/api/v1/keys/{body['id']}", headers=account.headers).status_code == 204
    revoked = client.get("/api/v1/account", headers=second)
    assert revoked.status_code == 401 and revoked.json()["detail"] == "Invalid or revoked API key"
    assert client.delete(f"/api/v1/keys/{body['id']}", headers=account.headers).status_code == 204
    other = client.delete("/api/v1/keys/00000000-0000-0000-0000-000000000000", headers=account.headers)
    assert other.status_code == 404


def test_missing_and_bad_keys_get_401(client: Any) -> None:
    missing = client.get("/api/v1/tasks")
    assert missing.status_code == 401 and "Missing API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/tasks", headers={"Authorization": "Bearer sx_nope"}).status_code == 401


def test_admin_cli_creates_a_first_key(client: Any, capsys: Any) -> None:
    from app import admin

    assert admin.main(["create-key", "--email", "Ops@Example.com", "--name", "bootstrap"]) == 0
    key = capsys.readouterr().out.strip()
    me = client.get("/api/v1/account", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["email"] == "ops@example.com"


def test_cached_keys_stop_working_when_revoked_elsewhere_or_the_user_is_disabled(client: Any, account: Any) -> None:
    """Authentication is cached per process; a revocation in another process (DB write +
    epoch bump in Redis, what ``api_keys.revoke`` does there) must still end it at once."""
    import redis
    from sqlalchemy import update

    from app.core.security import hash_api_key
    from app.crud import api_keys

    created = client.post("/api/v1/keys", json={"name": "cached"}, headers=account.headers).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    digest = hash_api_key(created["key"])
    assert client.get("/api/v1/account", headers=headers).status_code == 200
    assert api_keys.auth_cache.lookup(digest) == account.user_id  # cached
    assert client.get("/api/v1/account", headers=headers).status_code == 200

    with session_scope() as session:  # "another process" revokes it
        session.execute(update(ApiKey).where(ApiKey.key_hash == digest).values(revoked_at=func.now()))
    redis.Redis.from_url(os.environ["REDIS_URL"]).incr(api_keys.EPOCH_KEY)
    assert client.get("/api/v1/account", headers=headers).status_code == 401
    assert api_keys.auth_cache.lookup(digest) is None

    # a cached key of a user who gets disabled is refused at once too
    assert client.get("/api/v1/account", headers=account.headers).status_code == 200
    assert api_keys.auth_cache.lookup(hash_api_key(account.key)) == account.user_id
    with session_scope() as session:
        session.execute(update(User).where(User.id == account.user_id).values(is_active=False))
    assert client.get("/api/v1/account", headers=account.headers).status_code == 401
