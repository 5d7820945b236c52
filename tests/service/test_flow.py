"""End to end against real services and a real Celery worker process:
sign-in -> API key -> task over several URLs -> JSON/CSV results, signed webhook, credits."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from typing import Any

from svc_helpers import WorkerProcess, create_key_in_console, make_account, sign_in, wait_for_task
from svc_oidc import FakeIssuer
from svc_site import PRODUCTS, LocalSite

from common.db import session_scope
from common.models import Task
from common.signing import verify_webhook

RULES = {
    "title": "h1::text",
    "products": {
        "selector": "li.product",
        "many": True,
        "fields": {
            "name": ".name::text",
            "price": {"selector": ".//span[@class='price']/text()", "type": "xpath"},
            "link": {"selector": "a::attr(href)", "absolute": True},
        },
    },
}


def poll(client: Any, headers: dict[str, str], task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()
        if task["state"] in ("completed", "failed", "cancelled"):
            return task
        assert time.monotonic() < deadline, f"task still {task['state']}"
        time.sleep(1)


def test_sign_in_key_task_results(client: Any, issuer: FakeIssuer, site: LocalSite, worker: WorkerProcess) -> None:
    sign_in(client, issuer, f"flow-{uuid.uuid4().hex[:6]}@example.com")
    key = create_key_in_console(client)
    headers = {"Authorization": f"Bearer {key}"}
    flaky = f"/flaky?key={uuid.uuid4().hex}&fail=1"
    paths = ["/products", "/products/1", "/products/2", flaky, "/status/500", "/status/404", "/private/secret"]
    hook = f"hook-{uuid.uuid4().hex[:6]}"
    private_hits = site.state.paths().count("/private/secret")
    created = client.post(
        "/api/v1/tasks",
        json={
            "urls": [site.url + p for p in paths],
            "extract": RULES,
            "options": {"retries": 1, "timeout": 10},
            "webhook_url": f"{site.url}/hooks/{hook}",
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    task = poll(client, headers, task_id)
    assert task["state"] == "completed"
    by_url = {u["url"].removeprefix(site.url): u for u in task["urls"]}
    assert {p: by_url[p]["state"] for p in paths} == {
        "/products": "succeeded",
        "/products/1": "succeeded",
        "/products/2": "succeeded",
        flaky: "succeeded",
        "/status/500": "failed",
        "/status/404": "failed",
        "/private/secret": "failed",
    }
    assert by_url[flaky]["attempts"] == 2  # a 503, then success after backoff
    assert (by_url["/status/500"]["error_code"], by_url["/status/500"]["attempts"]) == ("http_error", 2)
    assert (by_url["/status/404"]["error_code"], by_url["/status/404"]["attempts"]) == ("http_error", 1)
    assert by_url["/private/secret"]["error_code"] == "robots_disallowed"
    assert site.state.paths().count("/private/secret") == private_hits  # never fetched
    assert by_url["/products"]["item_count"] == 20
    assert task["error"] == "3 of 7 URL(s) failed (http_error: 2, robots_disallowed: 1)"
    # charged 7 on submit, refunded the 3 failures
    assert task["credits_charged"] == 4
    account = client.get("/api/v1/account", headers=headers).json()
    assert account["credits"]["used"] == 4 and account["credits"]["remaining"] == 96

    results = client.get(f"/api/v1/tasks/{task_id}/results?format=json", headers=headers)
    assert results.status_code == 200
    assert results.headers["content-disposition"] == f'attachment; filename="selextract-{task_id}.json"'
    document = results.json()
    assert document["state"] == "completed" and len(document["results"]) == len(paths)
    listing = document["results"][0]
    assert listing["data"]["title"] == "Products"
    assert listing["data"]["products"][4] == {
        "name": "Product 5",
        "price": "$5.99",
        "link": f"{site.url}/products/5",
    }
    assert document["results"][1]["data"] == {"title": "Product 1", "products": []}
    assert document["results"][4]["data"] is None and document["results"][4]["error"] == "HTTP 500"

    exported = client.get(f"/api/v1/tasks/{task_id}/results?format=csv", headers=headers)
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert len(rows) == 20 + 6  # one row per product of the list page, one per other URL
    assert [r["products.name"] for r in rows[:20]] == [p["name"] for p in PRODUCTS]
    assert rows[20]["title"] == "Product 1" and rows[20]["products.name"] == ""
    assert rows[-1]["state"] == "failed" and "robots.txt" in rows[-1]["error"]

    # the console serves the same downloads to the signed-in browser session
    console_csv = client.get(f"/console/tasks/{task_id}/results.csv")
    assert console_csv.status_code == 200 and console_csv.text == exported.text
    page = client.get(f"/console/tasks/{task_id}")
    assert "Product 20" in page.text and "robots_disallowed" in page.text

    deadline = time.monotonic() + 20
    while not site.state.hooks.get(hook) and time.monotonic() < deadline:
        time.sleep(0.2)
    [delivery] = site.state.hooks[hook]
    payload = json.loads(delivery.body)
    assert payload["event"] == "task.completed" and payload["task"]["id"] == task_id
    assert delivery.headers["X-Selextract-Delivery"] == f"{task_id}.completed"
    assert verify_webhook(account["webhook_secret"], delivery.body, delivery.headers["X-Selextract-Signature"])
    assert not verify_webhook("wrong-secret", delivery.body, delivery.headers["X-Selextract-Signature"])
    with session_scope() as session:
        stored = session.get(Task, uuid.UUID(task_id))
        assert stored is not None and stored.webhook_status == "delivered"


def test_many_urls_are_fetched_concurrently_within_the_domain_limit(
    client: Any, site: LocalSite, worker: WorkerProcess
) -> None:
    user = make_account()
    site.reset_concurrency()
    urls = [f"{site.url}/slow?ms=1000&n={i}" for i in range(8)]
    started = time.monotonic()
    created = client.post("/api/v1/tasks", json={"urls": urls, "extract": {"h": "h1"}}, headers=user.headers)
    task = wait_for_task(created.json()["id"], timeout=30)
    elapsed = time.monotonic() - started
    assert task.state.value == "completed" and task.succeeded_count == 8
    assert elapsed < 5.5, f"8 one-second pages took {elapsed:.1f}s: not concurrent"
    assert site.state.max_in_flight == 4  # SCRAPER_DOMAIN_CONCURRENCY


def test_failing_webhook_is_retried_then_given_up(client: Any, site: LocalSite, worker: WorkerProcess) -> None:
    user = make_account()
    hook = f"fail-{uuid.uuid4().hex[:6]}"
    created = client.post(
        "/api/v1/tasks",
        json={"urls": [f"{site.url}/products/7"], "extract": {"h": "h1"}, "webhook_url": f"{site.url}/hooks/{hook}"},
        headers=user.headers,
    )
    task_id = created.json()["id"]
    wait_for_task(task_id)
    deadline = time.monotonic() + 20
    status = ""
    while time.monotonic() < deadline:
        with session_scope() as session:
            stored = session.get(Task, uuid.UUID(task_id))
            status = (stored.webhook_status if stored else "") or ""
        if status.startswith("failed"):
            break
        time.sleep(0.3)
    assert status == "failed: HTTP 500 after 3 attempts"
    assert len(site.state.hooks[hook]) == 3


def test_cancel_while_running_stops_the_worker_and_refunds(client: Any, site: LocalSite, worker: WorkerProcess) -> None:
    user = make_account()
    urls = [f"{site.url}/products/11"] + [f"{site.url}/slow?ms=2500&c={i}&r={uuid.uuid4().hex}" for i in range(6)]
    created = client.post("/api/v1/tasks", json={"urls": urls, "extract": {"h": "h1"}}, headers=user.headers)
    task_id = created.json()["id"]
    wait_for_task(task_id, states=("running",))
    time.sleep(1.0)
    cancelled = client.post(f"/api/v1/tasks/{task_id}/cancel", headers=user.headers).json()
    assert cancelled["state"] == "cancelled"
    time.sleep(4)  # in-flight pages finish; nothing may flip the state back
    task = wait_for_task(task_id)
    assert task.state.value == "cancelled"
    used = client.get("/api/v1/account", headers=user.headers).json()["credits"]["used"]
    assert used == cancelled["credits_charged"] == task.succeeded_count <= 1


def test_deleting_a_task_removes_its_results_but_not_the_ledger(
    client: Any, site: LocalSite, worker: WorkerProcess
) -> None:
    from sqlalchemy import func, select

    from common.models import UsageEntry
    from common.results import page_key
    from common.storage import get_storage

    user = make_account()
    created = client.post(
        "/api/v1/tasks", json={"urls": [f"{site.url}/products/8"], "extract": {"h": "h1"}}, headers=user.headers
    ).json()
    wait_for_task(created["id"])
    key = page_key(created["id"], 0)
    assert get_storage().exists(key)
    assert client.delete(f"/api/v1/tasks/{created['id']}", headers=user.headers).status_code == 204
    assert not get_storage().exists(key)
    with session_scope() as session:
        spent = session.scalar(select(func.sum(UsageEntry.credits)).where(UsageEntry.user_id == user.user_id))
    assert spent == -1
