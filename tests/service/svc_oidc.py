"""A small OpenID Connect provider standing in for Google in tests.

Authorization code flow with PKCE, RS256 ID tokens published on a JWKS endpoint, client
authentication by HTTP Basic or POST body. ``/authorize`` signs in as ``identity`` at once
(or as ``?login_hint=``), so both httpx and a headless browser can walk the flow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


class FakeIssuer:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.identity: dict[str, Any] = {"sub": "user-1", "email": "alice@example.com", "name": "Alice"}
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-oidc", daemon=True)

    def start(self) -> FakeIssuer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sign_in_as(self, email: str, sub: str | None = None, name: str = "Test User", **extra: Any) -> None:
        self.identity = {
            "sub": sub or "sub-" + hashlib.sha1(email.encode()).hexdigest()[:12],
            "email": email,
            "name": name,
            **extra,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def _id_token(self, claims: dict[str, Any], nonce: str | None) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 600,
            "email_verified": True,
            **claims,
        }
        if nonce:
            payload["nonce"] = nonce
        payload = {k: v for k, v in payload.items() if v is not None}  # a claim given as None is left out
        return jwt.encode({"alg": "RS256", "kid": "test-key"}, payload, self.key)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/.well-known/openid-configuration":
                    self._json(200, issuer.metadata())
                elif parts.path == "/jwks":
                    self._json(200, {"keys": [issuer.key.as_dict(private=False)]})
                elif parts.path == "/authorize":
                    self._authorize(query)
                elif parts.path == "/userinfo":
                    token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    claims = issuer.tokens.get(token)
                    self._json(200, claims) if claims else self._json(401, {"error": "invalid_token"})
                else:
                    self._json(404, {"error": "not_found"})

            def _authorize(self, query: dict[str, str]) -> None:
                if query.get("client_id") != issuer.client_id or query.get("response_type") != "code":
                    self._json(400, {"error": "invalid_request"})
                    return
                identity = dict(issuer.identity)
                if query.get("login_hint"):
                    identity = {"sub": "sub-" + query["login_hint"], "email": query["login_hint"], "name": "Hinted"}
                code = secrets.token_urlsafe(16)
                issuer.codes[code] = {
                    "identity": identity,
                    "nonce": query.get("nonce"),
                    "redirect_uri": query.get("redirect_uri"),
                    "challenge": query.get("code_challenge"),
                }
                target = f"{query['redirect_uri']}?" + urlencode({"code": code, "state": query.get("state", "")})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                client_id, client_secret = form.get("client_id"), form.get("client_secret")
                auth = self.headers.get("Authorization") or ""
                if auth.startswith("Basic "):
                    client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
                if client_id != issuer.client_id or client_secret != issuer.client_secret:
                    self._json(401, {"error": "invalid_client"})
                    return
                grant = issuer.codes.pop(form.get("code", ""), None)
                if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                    self._json(400, {"error": "invalid_grant"})
                    return
                if grant["challenge"]:
                    digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                    if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                        self._json(400, {"error": "invalid_grant", "error_description": "PKCE mismatch"})
                        return
                access = secrets.token_urlsafe(16)
                issuer.tokens[access] = grant["identity"]
                self._json(
                    200,
                    {
                        "access_token": access,
                        "token_type": "Bearer",
                        "expires_in": 600,
                        "id_token": issuer._id_token(grant["identity"], grant["nonce"]),
                    },
                )

        return Handler
