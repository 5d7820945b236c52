"""A backing service that is briefly gone (restart, credential rotation) is a 503 with
Retry-After, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
import sqlalchemy.exc
from fastapi.testclient import TestClient

from app.main import create_app
from common.storage import LocalStorage, StorageError


@pytest.mark.parametrize(
    ("error", "part"),
    [
        (sqlalchemy.exc.OperationalError("SELECT 1", None, Exception("password authentication failed")), "database"),
        (redis.exceptions.ConnectionError("Connection refused"), "redis"),
        (StorageError("s3 bucket results: Could not connect to the endpoint URL"), "object store"),
    ],
)
def test_backend_errors_are_503_with_retry_after(service_env: dict[str, str], error: Exception, part: str) -> Any:
    app = create_app()

    def boom() -> None:
        raise error

    app.add_api_route("/__boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/__boom")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": f"the {part} is temporarily unavailable; retry shortly"}
    assert "password" not in response.text


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_results_download_is_503_when_the_object_store_is_down(
    client: Any, service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any, fmt: str
) -> None:
    """The objects are read before the first byte goes out, so an unreachable store is a
    status line the client can retry, not a 200 whose body breaks off."""
    import uuid

    from svc_helpers import make_account

    from common.db import session_scope
    from common.models import TaskUrl, UrlState

    user = make_account()
    created = client.post(
        "/api/v1/tasks", json={"urls": ["https://example.com/a"], "extract": {"t": "h1"}}, headers=user.headers
    ).json()
    with session_scope() as session:
        url = session.query(TaskUrl).filter_by(task_id=uuid.UUID(created["id"])).one()
        url.state = UrlState.succeeded

    class Unreachable(LocalStorage):
        def get(self, key: str) -> bytes:
            raise StorageError("s3 bucket results: Could not connect to the endpoint URL")

    monkeypatch.setattr("app.api.routes.tasks.get_storage", lambda: Unreachable(tmp_path))
    response = client.get(f"/api/v1/tasks/{created['id']}/results?format={fmt}", headers=user.headers)
    assert response.status_code == 503, response.text[:200]
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": "the object store is temporarily unavailable; retry shortly"}
