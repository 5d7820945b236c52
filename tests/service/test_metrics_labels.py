"""The API's request metric keeps a bounded set of series whatever clients send: each
label set is a series (a file in the multiprocess directory on the API's small tmpfs), so a
label taken from the request (any method string, any path) would let one anonymous client
fill it and take every API process down."""

from __future__ import annotations

import re
import uuid
from http import HTTPStatus
from typing import Any

from app.core.metrics import KNOWN_METHODS

SERIES = re.compile(
    r'^selextract_http_request_duration_seconds_count\{method="([^"]*)",route="([^"]*)",status="([^"]*)"\}', re.M
)


def _series(client: Any) -> set[tuple[str, str, str]]:
    return set(SERIES.findall(client.get("/metrics").text))


def _hammer(client: Any, batch: str) -> None:
    """Random methods on a real route and on unmatched paths, random static files and ids."""
    for i in range(150):
        client.request(f"FOOBAR{batch}{i}", "/api/v1/tasks")
        client.request(f"X{batch}{i}", f"/{batch}/{uuid.uuid4().hex}")
    for method in ("get", "PROPFIND", "M-SEARCH", "TRACE"):
        client.request(method, f"/api/v1/tasks?{batch}")
    for _ in range(50):
        client.get(f"/{uuid.uuid4().hex}/{batch}")
        client.get(f"/static/{uuid.uuid4().hex}.css")
        client.get(f"/api/v1/tasks/{uuid.uuid4()}")


def test_request_metric_labels_are_bounded(client: Any) -> None:
    before = _series(client)
    _hammer(client, "a")
    first = _series(client)
    _hammer(client, "b")
    second = _series(client)
    added = sorted(second - first)
    assert not added, f"a second batch of other methods/paths added {len(added)} series, e.g. {added[:5]}"
    assert len(first - before) <= 12, sorted(first - before)
    # the app's route templates, /metrics itself, `unmatched`, or a route an earlier test
    # of the session already labelled (the registry is the process's: other app instances,
    # e.g. with the console, fed it before)
    routes = {getattr(r, "path", None) for r in client.app.routes}
    earlier = {route for _, route, _ in before}
    templates = set(client.app.openapi()["paths"]) | routes | earlier | {"/metrics", "unmatched"}
    for method, route, status in second - before:
        assert method in KNOWN_METHODS | {"other"}, method
        assert route in templates, route
        assert status in {str(s.value) for s in HTTPStatus}, status
    assert ("other", "/api/v1/tasks", "405") in second
    assert ("GET", "unmatched", "404") in second
