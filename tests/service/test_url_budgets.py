"""One URL cannot hold a worker (issue 17, items 3, 5 and 6): a body or headers trickled a
byte at a time fail the URL at its download budget (url_budget_exceeded), a page whose
extraction runs past its budget fails with extraction_timeout, a page whose data is too large
fails with result_too_large and stores nothing, and the task's other URLs succeed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from svc_helpers import Account, WorkerProcess, wait_for_task
from svc_site import QuietServer, _products_page

from common.config import Settings
from common.results import page_key
from common.storage import get_storage
from worker.fetch import Fetcher, FetchError, FetchOptions

FETCH_BUDGET = 3.0
EXTRACT_SECONDS = 2.0
TRICKLE_SECONDS = 30  # how long the trickling endpoints would go on


class SlowSite:
    """Pages that cost a worker: trickled bodies and headers, deep nesting."""

    def __init__(self) -> None:
        self.server = QuietServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _trickle(self, data: bytes, every: float) -> None:
                for index in range(len(data)):
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                    time.sleep(every)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/trickle-body":
                    body = b"<html><body><h1>slow</h1>" + b" " * 200 + b"</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self._trickle(body, TRICKLE_SECONDS / len(body))
                elif parts.path == "/trickle-headers":
                    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Pad: " + b"a" * 200 + b"\r\n"
                    self._trickle(head, TRICKLE_SECONDS / len(head))
                elif parts.path == "/deep":  # n nested elements, with some text in each
                    depth, text = int(query.get("n", "1000")), query.get("text", "")
                    self._page(("<div>" + text) * depth + "</div>" * depth)
                elif parts.path == "/products":
                    self._page(_products_page())
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def _page(self, html: str) -> None:
                data = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def slow_site() -> Iterator[SlowSite]:
    site = SlowSite()
    yield site
    site.stop()


# --- the fetcher ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_a_trickled_download_fails_at_its_budget(service_env: dict[str, str], slow_site: SlowSite, path: str) -> None:
    settings = Settings(scraper_allowed_networks="127.0.0.0/8", scraper_domain_delay_ms=0, scraper_fetch_budget=2.0)
    fetcher = Fetcher(settings, redis.Redis.from_url(service_env["REDIS_URL"]))
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        # each byte arrives well within the 10 s read timeout, so only the budget can stop it
        fetcher.fetch(slow_site.url + path, FetchOptions(timeout=10, respect_robots=False))
    took = time.monotonic() - started
    assert info.value.code == "url_budget_exceeded" and not info.value.retryable
    assert "2s allowed" in str(info.value)
    assert 1.9 < took < 3.0
    fetcher.close()


# --- a whole task in a worker ------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_worker(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = {
        "SCRAPER_FETCH_BUDGET": str(FETCH_BUDGET),
        "SCRAPER_EXTRACT_SECONDS": str(EXTRACT_SECONDS),
        "SCRAPER_MAX_RESULT_BYTES": str(256 * 1024),
        "SCRAPER_MAX_TASK_RESULT_BYTES": str(512 * 1024),
    }
    proc = WorkerProcess(Path(tmp_path_factory.mktemp("limited")), "limited", concurrency=2, extra_env=env).start()
    yield proc
    proc.stop()


def submit(client: Any, account: Account, urls: list[str], rules: dict[str, Any]) -> str:
    body = {"urls": urls, "extract": rules, "options": {"timeout": 10, "retries": 2, "respect_robots": False}}
    created = client.post("/api/v1/tasks", json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def outcomes(client: Any, account: Account, task_id: str, base: str) -> dict[str, dict[str, Any]]:
    task = client.get(f"/api/v1/tasks/{task_id}", headers=account.headers).json()
    return {u["url"].removeprefix(base): u for u in task["urls"]}


def test_slow_and_pathological_urls_fail_in_their_budget_while_the_others_succeed(
    client: Any, account: Account, slow_site: SlowSite, limited_worker: WorkerProcess
) -> None:
    rules = {
        "title": "h1::text",
        # cubic in a page's depth: instant on /products, minutes on /deep
        "weight": {"type": "xpath", "selector": "count(//*[count(ancestor-or-self::*/descendant-or-self::*) > 0])"},
    }
    paths = ["/products", "/trickle-body", "/trickle-headers", "/deep?n=1000"]
    started = time.monotonic()
    task_id = submit(client, account, [slow_site.url + p for p in paths], rules)
    task = wait_for_task(task_id, timeout=60)
    assert time.monotonic() - started < TRICKLE_SECONDS - 5  # nothing waited for a trickle to end
    by_path = outcomes(client, account, task_id, slow_site.url)
    assert task.state.value == "completed", {p: (u["error_code"], u["error"]) for p, u in by_path.items()}
    assert by_path["/products"]["state"] == "succeeded" and by_path["/products"]["item_count"] == 1
    for path in ("/trickle-body", "/trickle-headers"):
        assert (by_path[path]["state"], by_path[path]["error_code"]) == ("failed", "url_budget_exceeded")
        assert by_path[path]["attempts"] == 1  # not retried: it would end the same way
    deep = by_path["/deep?n=1000"]
    assert (deep["state"], deep["error_code"], deep["attempts"]) == ("failed", "extraction_timeout", 1)
    assert f"longer than {EXTRACT_SECONDS:g}s" in deep["error"]
    assert not get_storage().exists(page_key(task_id, paths.index("/deep?n=1000")))


def test_an_oversized_result_is_refused_whole(
    client: Any, account: Account, slow_site: SlowSite, limited_worker: WorkerProcess
) -> None:
    rules = {"title": "h1::text", "blocks": {"selector": "div", "many": True}}
    # each div's text holds its descendants': 400 levels of 100 characters give ~8 MB of data
    paths = ["/products", f"/deep?n=400&text={'x' * 100}"]
    task_id = submit(client, account, [slow_site.url + p for p in paths], rules)
    task = wait_for_task(task_id, timeout=60)
    assert task.state.value == "completed"
    by_path = outcomes(client, account, task_id, slow_site.url)
    assert by_path["/products"]["state"] == "succeeded"
    big = by_path[paths[1]]
    assert (big["state"], big["error_code"], big["attempts"]) == ("failed", "result_too_large", 1)
    assert "262144 bytes" in big["error"]
    assert not get_storage().exists(page_key(task_id, 1))  # nothing partial
    assert get_storage().exists(page_key(task_id, 0))
    results = client.get(f"/api/v1/tasks/{task_id}/results", headers=account.headers).json()["results"]
    assert results[1]["data"] is None and results[1]["error_code"] == "result_too_large"


def test_the_task_limit_shares_out_over_its_urls(
    client: Any, account: Account, slow_site: SlowSite, limited_worker: WorkerProcess
) -> None:
    """A task's data is bounded too: each page may use its share of the task's limit."""
    rules = {"blocks": {"selector": "div", "many": True}}
    page = f"/deep?n=60&text={'x' * 100}"  # about 183 KB of data
    alone = submit(client, account, [slow_site.url + page], rules)  # may use 256 KiB
    shared = submit(
        client, account, [slow_site.url + page] + [f"{slow_site.url}/products?{n}" for n in range(3)], rules
    )
    assert wait_for_task(alone, timeout=60).state.value == "completed"
    assert wait_for_task(shared, timeout=60).state.value == "completed"
    assert outcomes(client, account, alone, slow_site.url)[page]["state"] == "succeeded"
    failed = outcomes(client, account, shared, slow_site.url)[page]
    assert (failed["state"], failed["error_code"]) == ("failed", "result_too_large")
    assert "131072 bytes" in failed["error"]  # 512 KiB / 4 URLs
