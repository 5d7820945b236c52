"""Scrape tasks: submit, inspect, list, cancel, download results."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.api.deps import CurrentUser, SessionDep, SettingsDep
from app.crud import tasks as crud
from app.schemas.common import error_responses
from app.schemas.tasks import TaskCreate, TaskDetail, TaskOut, TaskPage
from common.models import TaskState, UrlState
from common.results import download_parts
from common.storage import get_storage

router = APIRouter(prefix="/tasks", tags=["tasks"])


TASK_LINKS = {
    name: {"operationId": operation, "parameters": {"task_id": "$response.body#/id"}}
    for name, operation in (
        ("GetTask", "get_task"),
        ("CancelTask", "cancel_task"),
        ("GetResults", "get_task_results"),
        ("DeleteTask", "delete_task"),
    )
}


@router.post(
    "",
    response_model=TaskOut,
    status_code=status.HTTP_201_CREATED,
    operation_id="create_task",
    responses={
        200: {"model": TaskOut, "description": "Same Idempotency-Key as an earlier request: that task"},
        201: {"links": TASK_LINKS},
        **error_responses(400, 401, 402, 429),
    },
)
def create_task(
    body: TaskCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="Retry-safe submission: the same key returns the same task, charged once",
        ),
    ] = None,
):
    """Queue a scrape of one or many URLs with the given extraction rules.

    Costs one credit per URL, charged now; URLs that fail are refunded when the task ends.
    """
    task, created = crud.submit(session, settings, user, body, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/api/v1/tasks/{task.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return crud.to_out(task, settings.public_base_url)


@router.get("", response_model=TaskPage, operation_id="list_tasks", responses=error_responses(401, 429))
def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[list[TaskState] | None, Query(description="Only tasks in these states")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
):
    """Your tasks, newest first."""
    items, total = crud.list_for_user(session, user, state or [], limit, offset)
    page = TaskPage(
        items=[crud.to_out(t, settings.public_base_url) for t in items], total=total, limit=limit, offset=offset
    )
    session.commit()  # release the connection before the response is validated in the threadpool
    return page


def _task_or_404(session: SessionDep, user: CurrentUser, task_id: uuid.UUID, with_urls: bool = False):
    task = crud.get_for_user(session, user, task_id, with_urls=with_urls)
    if task is None:
        raise crud.TaskRejected(404, "no such task")
    return task


@router.get("/{task_id}", response_model=TaskDetail, operation_id="get_task", responses=error_responses(401, 404, 429))
def get_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Response:
    """A task with the outcome of each URL (the per-URL error report)."""
    body = crud.detail_json(session, user, task_id, settings.public_base_url)
    session.commit()  # release the connection before the response goes out
    if body is None:
        raise crud.TaskRejected(404, "no such task")
    return Response(content=body, media_type="application/json")


@router.post(
    "/{task_id}/cancel",
    response_model=TaskOut,
    operation_id="cancel_task",
    responses={200: {"links": TASK_LINKS}, **error_responses(401, 404, 409, 429)},
)
def cancel_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep):
    """Stop a queued or running task. Credits for URLs not done yet are refunded."""
    return crud.to_out(crud.cancel(session, user, task_id), settings.public_base_url)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_task",
    responses=error_responses(401, 404, 409, 429),
)
def delete_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Delete a finished task and its results (credits already spent stay spent)."""
    crud.delete(session, user, task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class PageResult(BaseModel):
    url: str
    final_url: str | None
    status_code: int | None
    state: UrlState
    error_code: str | None
    error: str | None
    data: dict[str, Any] | None


class ResultsDocument(BaseModel):
    task_id: uuid.UUID
    state: TaskState
    created_at: str | None
    finished_at: str | None
    results: list[PageResult]


@router.get(
    "/{task_id}/results",
    response_class=StreamingResponse,
    operation_id="get_task_results",
    responses={
        200: {
            "description": "Results so far (complete once the task has finished), one entry per URL",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ResultsDocument"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        **error_responses(401, 404, 429),
    },
)
def task_results(
    task_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query(description="json document or CSV (one row per item)")] = "json",
) -> StreamingResponse:
    """Download extracted data as JSON or CSV. CSV gets one row per item of the single
    list field, if there is exactly one, else one row per URL."""
    task = _task_or_404(session, user, task_id, with_urls=True)
    body, media_type, headers = download_parts(get_storage(), task, list(task.urls), format)
    return StreamingResponse(body, media_type=media_type, headers=headers)
