"""Task submission: every bad input gets a clear 4xx; listing, cancel, credits, limits."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from svc_helpers import Account, make_account
from svc_site import LocalSite

from common.accounting import period_of
from common.db import session_scope
from common.models import LedgerKind, UsageEntry

RULES = {"title": "h1::text"}


def body(site: LocalSite, **overrides: Any) -> dict[str, Any]:
    return {"urls": [f"{site.url}/products"], "extract": RULES, **overrides}


@pytest.mark.parametrize(
    ("change", "loc", "needle"),
    [
        ({"extract": {"title": "h1["}}, ["body", "extract", "title", "selector"], "invalid CSS selector 'h1['"),
        (
            {"extract": {"t": {"selector": "//div[@", "type": "xpath"}}},
            ["body", "extract", "t", "rule", "selector"],
            "invalid XPath selector '//div[@'",
        ),
        ({"extract": {}}, ["body", "extract"], "at least 1 item"),
        ({"urls": ["http://10.1.2.3/x"]}, ["body", "urls", 0], "private address"),
        ({"urls": ["http://169.254.169.254/latest/meta-data/"]}, ["body", "urls", 0], "link-local"),
        ({"urls": ["ftp://example.com/file"]}, ["body", "urls", 0], "URL scheme should be 'http' or 'https'"),
        ({"urls": []}, ["body", "urls"], "at least 1 item"),
        ({"urls": [f"https://example.com/{i}" for i in range(101)]}, ["body", "urls"], "at most 100 items"),
        ({"urls": ["https://example.com/a", "https://example.com/a"]}, ["body", "urls"], "listed twice"),
        ({"options": {"render_js": True}}, ["body", "options", "render_js"], "no JavaScript renderer"),
        ({"options": {"use_proxy": True}}, ["body", "options", "use_proxy"], "no proxy list"),
        ({"options": {"timeout": 0}}, ["body", "options", "timeout"], "greater than or equal to 1"),
        ({"options": {"retries": 9}}, ["body", "options", "retries"], "less than or equal to 5"),
        ({"webhook_url": "http://192.168.0.10/hook"}, ["body", "webhook_url"], "private address"),
        ({"surprise": 1}, ["body", "surprise"], "Extra inputs are not permitted"),
    ],
)
def test_bad_submissions_are_422_naming_the_problem(
    client: Any, account: Account, site: LocalSite, change: dict[str, Any], loc: list[Any], needle: str
) -> None:
    answer = client.post("/api/v1/tasks", json=body(site, **change), headers=account.headers)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert any(e["loc"] == loc and needle in e["msg"] for e in errors), errors


def test_not_json_is_422(client: Any, account: Account) -> None:
    answer = client.post(
        "/api/v1/tasks", content=b"{nope", headers={**account.headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422


def test_submit_inspect_list_cancel_refund(client: Any, account: Account, site: LocalSite) -> None:
    urls = [f"{site.url}/products/1", f"{site.url}/products/2", f"{site.url}/products/3"]
    created = client.post("/api/v1/tasks", json=body(site, urls=urls), headers=account.headers)
    assert created.status_code == 201, created.text
    task = created.json()
    assert created.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert task["state"] == "queued" and task["url_count"] == 3 and task["credits_charged"] == 3
    assert task["links"]["results_csv"].endswith(f"/api/v1/tasks/{task['id']}/results?format=csv")
    credits = client.get("/api/v1/account", headers=account.headers).json()["credits"]
    assert credits["used"] == 3

    detail = client.get(f"/api/v1/tasks/{task['id']}", headers=account.headers).json()
    assert [u["url"] for u in detail["urls"]] == urls and {u["state"] for u in detail["urls"]} == {"pending"}
    assert detail["extract"] == RULES and detail["options"]["respect_robots"] is True

    second = client.post("/api/v1/tasks", json=body(site), headers=account.headers).json()
    listing = client.get("/api/v1/tasks?limit=1", headers=account.headers).json()
    assert listing["total"] == 2 and [t["id"] for t in listing["items"]] == [second["id"]]
    page2 = client.get("/api/v1/tasks?limit=1&offset=1", headers=account.headers).json()
    assert [t["id"] for t in page2["items"]] == [task["id"]]

    cancelled = client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=account.headers)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["credits_charged"] == 0
    again = client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=account.headers)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    only_cancelled = client.get("/api/v1/tasks?state=cancelled", headers=account.headers).json()
    assert [t["id"] for t in only_cancelled["items"]] == [task["id"]]
    client.post(f"/api/v1/tasks/{second['id']}/cancel", headers=account.headers)
    assert client.get("/api/v1/account", headers=account.headers).json()["credits"]["used"] == 0

    results = client.get(f"/api/v1/tasks/{task['id']}/results", headers=account.headers)
    assert results.status_code == 200 and results.json()["state"] == "cancelled"
    assert [r["state"] for r in results.json()["results"]] == ["pending"] * 3
    csv = client.get(f"/api/v1/tasks/{task['id']}/results?format=csv", headers=account.headers)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.lstrip("\ufeff").splitlines()[0] == "url,final_url,status_code,state,error,title"


def test_other_peoples_tasks_are_404(client: Any, account: Account, site: LocalSite) -> None:
    task = client.post("/api/v1/tasks", json=body(site), headers=account.headers).json()
    stranger = make_account()
    for path in (f"/api/v1/tasks/{task['id']}", f"/api/v1/tasks/{task['id']}/results"):
        assert client.get(path, headers=stranger.headers).status_code == 404
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=stranger.headers).status_code == 404
    assert client.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=account.headers).status_code == 404
    client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=account.headers)


def test_out_of_credits_is_402_with_the_numbers(client: Any, site: LocalSite) -> None:
    poor = make_account(plan="free")
    with session_scope() as session:
        session.add(UsageEntry(user_id=poor.user_id, kind=LedgerKind.adjustment, credits=-99, period=period_of()))
    urls = [f"{site.url}/products/1", f"{site.url}/products/2"]
    refused = client.post("/api/v1/tasks", json=body(site, urls=urls), headers=poor.headers)
    assert refused.status_code == 402
    message = refused.json()["detail"]
    assert "Out of credits" in message and "needs 2 credit(s)" in message and "1 of 100 left" in message
    accepted = client.post("/api/v1/tasks", json=body(site, urls=urls[:1]), headers=poor.headers)
    assert accepted.status_code == 201
    client.post(f"/api/v1/tasks/{accepted.json()['id']}/cancel", headers=poor.headers)


def test_concurrent_task_limit_is_429(client: Any, site: LocalSite) -> None:
    user = make_account(plan="free")  # two tasks at a time
    ids = [client.post("/api/v1/tasks", json=body(site), headers=user.headers).json()["id"] for _ in range(2)]
    refused = client.post("/api/v1/tasks", json=body(site), headers=user.headers)
    assert refused.status_code == 429 and "the most the free plan allows" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "30"
    for task_id in ids:
        client.post(f"/api/v1/tasks/{task_id}/cancel", headers=user.headers)


def test_rate_limit_is_429_with_retry_after(client: Any) -> None:
    user = make_account(plan="free")  # 30 requests per minute
    answers = [client.get("/api/v1/account", headers=user.headers) for _ in range(31)]
    assert [a.status_code for a in answers[:30]] == [200] * 30
    last = answers[30]
    assert last.status_code == 429 and "30 requests per minute" in last.json()["detail"]
    assert 1 <= int(last.headers["retry-after"]) <= 60
    assert answers[0].headers["x-ratelimit-limit"] == "30"


def test_undecodable_body_is_a_documented_400(client: Any, account: Account) -> None:
    # found by schemathesis: FastAPI answers 400 for a body that is not UTF-8; now documented
    answer = client.post(
        "/api/v1/keys", content=b"\xff.6\xee", headers={**account.headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    documented = client.get("/openapi.json").json()["paths"]["/api/v1/keys"]["post"]["responses"]
    assert "400" in documented


def test_render_js_is_accepted_when_a_renderer_is_configured(
    client: Any, account: Account, site: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.config import get_settings

    monkeypatch.setenv("RENDERER_URL", f"{site.url}/renderer")
    monkeypatch.setenv("RENDERER_EGRESS_GUARDED", "true")
    get_settings.cache_clear()
    try:
        created = client.post("/api/v1/tasks", json=body(site, options={"render_js": True}), headers=account.headers)
        assert created.status_code == 201, created.text
        client.post(f"/api/v1/tasks/{created.json()['id']}/cancel", headers=account.headers)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_idempotency_key_returns_the_first_task_and_charges_once(
    client: Any, account: Account, site: LocalSite
) -> None:
    headers = {**account.headers, "Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = client.post("/api/v1/tasks", json=body(site), headers=headers)
    again = client.post("/api/v1/tasks", json=body(site), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert client.get("/api/v1/account", headers=account.headers).json()["credits"]["used"] == 1
    other = make_account()  # keys are per account
    assert (
        client.post(
            "/api/v1/tasks", json=body(site), headers={**other.headers, "Idempotency-Key": headers["Idempotency-Key"]}
        ).status_code
        == 201
    )
    bad = client.post("/api/v1/tasks", json=body(site), headers={**account.headers, "Idempotency-Key": "x" * 201})
    assert bad.status_code == 422
    client.post(f"/api/v1/tasks/{first.json()['id']}/cancel", headers=account.headers)


def test_delete_only_finished_tasks(client: Any, account: Account, site: LocalSite) -> None:
    task = client.post("/api/v1/tasks", json=body(site), headers=account.headers).json()
    busy = client.delete(f"/api/v1/tasks/{task['id']}", headers=account.headers)
    assert busy.status_code == 409 and "cancel it before deleting" in busy.json()["detail"]
    client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=account.headers)
    assert client.delete(f"/api/v1/tasks/{task['id']}", headers=account.headers).status_code == 204
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=account.headers).status_code == 404
    assert client.delete(f"/api/v1/tasks/{task['id']}", headers=account.headers).status_code == 404
