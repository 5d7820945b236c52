"""A backing service that is briefly gone (restart, credential rotation) is a 503 with
Retry-After, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
import sqlalchemy.exc
from fastapi.testclient import TestClient

from app.main import create_app


@pytest.mark.parametrize(
    ("error", "part"),
    [
        (sqlalchemy.exc.OperationalError("SELECT 1", None, Exception("password authentication failed")), "database"),
        (redis.exceptions.ConnectionError("Connection refused"), "redis"),
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
