"""Where task results live in storage and how they are assembled for download.

The worker writes one JSON object per URL (``tasks/<id>/pages/<position>.json``, so a
retry overwrites it); downloads stream them in URL order as one JSON document or CSV.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from common.extraction import ExtractionRules, csv_columns, csv_rows, csv_text
from common.models import Task, TaskUrl, UrlState
from common.storage import ObjectNotFound, Storage


def page_key(task_id: uuid.UUID | str, position: int) -> str:
    return f"tasks/{task_id}/pages/{position:05d}.json"


def task_prefix(task_id: uuid.UUID | str) -> str:
    return f"tasks/{task_id}"


def page_record(storage: Storage, task: Task, url: TaskUrl) -> dict[str, Any]:
    record: dict[str, Any] = {
        "url": url.url,
        "final_url": url.final_url,
        "status_code": url.status_code,
        "state": url.state.value,
        "error_code": url.error_code,
        "error": url.error,
        "data": None,
    }
    if url.state == UrlState.succeeded:
        try:
            record["data"] = json.loads(storage.get(page_key(task.id, url.position)))["data"]
        except ObjectNotFound:
            record["error"] = "result object missing from storage"
    return record


def page_records(storage: Storage, task: Task, urls: list[TaskUrl]) -> list[dict[str, Any]]:
    """Every URL's record, read before a download starts: a StorageError then becomes a
    clean 503 instead of a 200 whose body breaks off after the headers went out. A task
    holds at most the API's 100 URLs, so this stays small."""
    return [page_record(storage, task, url) for url in urls]


def iter_json(task: Task, records: list[dict[str, Any]]) -> Iterator[bytes]:
    head = {
        "task_id": str(task.id),
        "state": task.state.value,
        "created_at": task.created_at.isoformat() if task.created_at else None,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
    }
    yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "results": ['
    for index, record in enumerate(records):
        prefix = b"," if index else b""
        yield prefix + json.dumps(record, ensure_ascii=False).encode()
    yield b"]}"


def iter_csv(task: Task, records: list[dict[str, Any]]) -> Iterator[bytes]:
    rules = ExtractionRules.stored(task.rules)  # checked when submitted; not re-checked
    yield ("\ufeff" + csv_text([csv_columns(rules)])).encode()  # BOM: spreadsheets detect UTF-8
    for record in records:
        yield csv_text(csv_rows(record, rules)).encode()


def download_parts(
    storage: Storage, task: Task, urls: list[TaskUrl], fmt: str
) -> tuple[Iterator[bytes], str, dict[str, str]]:
    """Body, media type and headers of a results download (API and console alike)."""
    records = page_records(storage, task, urls)
    headers = {"Content-Disposition": f'attachment; filename="selextract-{task.id}.{fmt}"'}
    if fmt == "csv":
        return iter_csv(task, records), "text/csv; charset=utf-8", headers
    return iter_json(task, records), "application/json", headers


def task_links(base_url: str, task_id: uuid.UUID | str) -> dict[str, str]:
    api = f"{base_url}/api/v1/tasks/{task_id}"
    return {
        "self": api,
        "results_json": f"{api}/results?format=json",
        "results_csv": f"{api}/results?format=csv",
    }


def webhook_payload(task: Task, base_url: str) -> dict[str, Any]:
    """The body of a completion webhook (documented in the console's API page)."""
    return {
        "event": f"task.{task.state.value}",
        "task": {
            "id": str(task.id),
            "state": task.state.value,
            "url_count": task.url_count,
            "succeeded_count": task.succeeded_count,
            "failed_count": task.failed_count,
            "credits_charged": task.credits_charged,
            "error": task.error,
            "created_at": task.created_at.isoformat() if task.created_at else None,
            "finished_at": task.finished_at.isoformat() if task.finished_at else None,
        },
        "links": task_links(base_url, task.id),
    }
