"""Operator commands run inside an API container (`docker exec … python -m app.admin …`):
the first account and key of a deployment without Google sign-in, e.g. self-hosted or in
end-to-end tests. Accounts made here use the issuer `local-admin`."""

from __future__ import annotations

import argparse
import sys

from app.crud import api_keys, users
from common.db import session_scope

ADMIN_ISSUER = "local-admin"


def create_key(email: str, name: str) -> str:
    """Create (or reuse) the account for `email` and return a new API key, shown once."""
    with session_scope() as session:
        user = users.upsert_oidc_user(
            session, ADMIN_ISSUER, {"sub": f"admin:{email.lower()}", "email": email, "email_verified": True}
        )
        _, secret = api_keys.create(session, user, name)
    return secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.admin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    key = sub.add_parser("create-key", help="create an account if needed and print a new API key")
    key.add_argument("--email", required=True)
    key.add_argument("--name", default="admin")
    args = parser.parse_args(argv)
    try:
        print(create_key(args.email, args.name))
    except users.SignInRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
