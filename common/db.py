"""Engine and session handling shared by the API and the worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings, get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(settings: Settings | None = None) -> Engine:
    """One pooled engine per database URL and process."""
    settings = settings or get_settings()
    url = settings.database_url.get_secret_value()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                url,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_pool_size * 2,
                pool_pre_ping=True,
                # a stopped database fails fast (503 / task retry) rather than hanging
                pool_timeout=10,
                connect_args={"connect_timeout": 5},
            )
            _engines[url] = engine
        return engine


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Drop pooled connections (after a fork, or when tests switch databases)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
