"""``python -m app.migrate``: bring the database to the latest schema (run on deploy).

Takes a Postgres advisory lock first, so API containers starting together migrate once,
then makes sure the result storage (directory or bucket) exists.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text

from common.config import get_settings
from common.storage import get_storage

LOCK_ID = 0x5E1E_C7AC  # arbitrary, constant: "selextract migrations"
log = logging.getLogger("app.migrate")


def alembic_config() -> Config:
    cfg = Config(str(Path(__file__).parent / "alembic.ini"))
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(revision: str = "head") -> str:
    """Upgrade under the lock; returns the revision the database is at afterwards."""
    settings = get_settings()
    engine = create_engine(settings.database_url.get_secret_value(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
            conn.commit()
            try:
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
                current = MigrationContext.configure(conn).get_current_revision() or "base"
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
                conn.commit()
    finally:
        engine.dispose()
    return current


def pending() -> list[str]:
    """Revisions not applied yet (for health checks and --check)."""
    settings = get_settings()
    engine = create_engine(settings.database_url.get_secret_value(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in script.iterate_revisions("heads", current or "base") if rev.revision != current]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.migrate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report pending migrations (exit 1 if any)")
    parser.add_argument("--revision", default="head")
    parser.add_argument("--skip-storage", action="store_true", help="do not create the storage bucket/directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.check:
        todo = pending()
        print("pending migrations: " + (", ".join(todo) if todo else "none"))
        return 1 if todo else 0
    revision = upgrade(args.revision)
    print(f"database at revision {revision}")
    if not args.skip_storage:
        storage = get_storage()
        storage.ensure_ready()
        print(f"storage ready ({storage.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
