"""How a run records URL outcomes: one ``task_urls`` write per URL under a shared lock on
the task row, progress counters refreshed in batches, and cancel ordered against both."""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, text
from svc_helpers import make_account
from svc_site import LocalSite

from common.config import get_settings
from common.db import get_engine, session_scope
from common.models import Task, TaskState, TaskUrl, UrlState
from common.storage import get_storage
from worker.runner import LeaseLost, ProgressBatch, TaskRunner, UrlJob, _Run

# --- the batching itself --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_flushes_every_n_outcomes() -> None:
    flushes: list[int] = []
    batch = ProgressBatch(lambda: flushes.append(1), every=3, interval=60, clock=Clock())
    for _ in range(7):
        batch.recorded()
    assert len(flushes) == 2 and batch.pending == 1
    batch.flush()
    assert len(flushes) == 3 and batch.pending == 0
    batch.flush()  # nothing pending: no statement
    assert len(flushes) == 3


def test_progress_flushes_on_the_first_outcome_after_the_interval() -> None:
    clock = Clock()
    flushes: list[float] = []
    batch = ProgressBatch(lambda: flushes.append(clock.now), every=100, interval=1.0, clock=clock)
    batch.recorded()
    clock.now = 0.5
    batch.recorded()
    assert flushes == []
    clock.now = 1.2
    batch.recorded()
    assert flushes == [1.2] and batch.pending == 0


def test_a_failed_flush_keeps_the_count_for_the_next_one() -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")

    batch = ProgressBatch(flaky, every=2, interval=60, clock=Clock())
    batch.recorded()
    batch.recorded()
    assert batch.pending == 2
    batch.flush()
    assert len(calls) == 2 and batch.pending == 0


# --- against Postgres -------------------------------------------------------------------------


def _submit(client: Any, site: LocalSite, n: int) -> tuple[Any, uuid.UUID]:
    user = make_account()
    urls = [f"{site.url}/products/{i}?r={uuid.uuid4().hex}" for i in range(n)]
    created = client.post("/api/v1/tasks", json={"urls": urls, "extract": {"h": "h1"}}, headers=user.headers)
    assert created.status_code == 201, created.text
    return user, uuid.UUID(created.json()["id"])


_RUNS: list[_Run] = []


@pytest.fixture(autouse=True)
def _close_runs() -> Any:
    yield
    while _RUNS:
        _RUNS.pop()._writer.close()  # what _Run.execute does at the end


def _claimed_run(task_id: uuid.UUID) -> _Run:
    fetcher: Any = SimpleNamespace(proxies=SimpleNamespace(proxies=[]))
    runner = TaskRunner(get_settings(), get_storage(), fetcher)
    owner = f"test/{uuid.uuid4().hex[:8]}"
    claimed = runner._claim(task_id, owner)
    assert isinstance(claimed, dict), claimed
    run = _Run(runner, task_id, owner, claimed)
    _RUNS.append(run)
    return run


def _jobs(task_id: uuid.UUID) -> list[UrlJob]:
    with session_scope() as session:
        rows = session.execute(
            select(TaskUrl.id, TaskUrl.position, TaskUrl.url, TaskUrl.attempts)
            .where(TaskUrl.task_id == task_id)
            .order_by(TaskUrl.position)
        ).all()
    return [UrlJob(r.id, r.position, r.url, r.attempts) for r in rows]


def _ok() -> dict[str, Any]:
    return {"state": UrlState.succeeded, "status_code": 200, "attempts": 1, "fetched_at": func.now()}


def _task(task_id: uuid.UUID) -> Task:
    with session_scope() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def _states(task_id: uuid.UUID) -> list[UrlState]:
    with session_scope() as session:
        return list(session.scalars(select(TaskUrl.state).where(TaskUrl.task_id == task_id).order_by(TaskUrl.position)))


def test_outcomes_are_written_once_and_counters_follow_in_batches(client: Any, site: LocalSite) -> None:
    _user, task_id = _submit(client, site, 3)
    run = _claimed_run(task_id)
    jobs = _jobs(task_id)
    run._save(jobs[0], succeeded=True, values=_ok())
    run._save(jobs[1], succeeded=False, values={"state": UrlState.failed, "error_code": "http_error", "attempts": 1})
    assert _states(task_id) == [UrlState.succeeded, UrlState.failed, UrlState.pending]
    assert (_task(task_id).succeeded_count, _task(task_id).failed_count) == (0, 0)  # not flushed yet
    run._progress.flush()
    assert (_task(task_id).succeeded_count, _task(task_id).failed_count) == (1, 1)
    # a second outcome for a recorded URL (a redelivered run) keeps the first one
    run._save(jobs[0], succeeded=False, values={"state": UrlState.failed, "error_code": "x", "attempts": 2})
    run._progress.flush()
    assert _states(task_id)[0] == UrlState.succeeded
    assert (_task(task_id).succeeded_count, _task(task_id).failed_count) == (1, 1)


def test_cancel_sets_the_counters_and_later_outcomes_are_refused(client: Any, site: LocalSite) -> None:
    user, task_id = _submit(client, site, 3)
    run = _claimed_run(task_id)
    jobs = _jobs(task_id)
    run._save(jobs[0], succeeded=True, values=_ok())  # recorded, not flushed
    cancelled = client.post(f"/api/v1/tasks/{task_id}/cancel", headers=user.headers).json()
    assert cancelled["state"] == "cancelled"
    assert (cancelled["succeeded_count"], cancelled["credits_charged"]) == (1, 1)
    with pytest.raises(LeaseLost):
        run._save(jobs[1], succeeded=True, values=_ok())
    assert run.stop.is_set()
    assert _states(task_id) == [UrlState.succeeded, UrlState.pending, UrlState.pending]


def test_outcome_connections_go_back_to_the_pool_as_they_came(client: Any, site: LocalSite) -> None:
    """Outcomes commit without waiting for the WAL flush; that must not leak into the pool."""
    _user, task_id = _submit(client, site, 1)
    run = _claimed_run(task_id)
    with run._writer.transaction() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    run._writer.close()
    engine = get_engine()
    connections = [engine.connect() for _ in range(engine.pool.size() + 2)]  # every pooled one, and more
    try:
        at_default = "SELECT setting = reset_val FROM pg_settings WHERE name = 'synchronous_commit'"
        assert {c.exec_driver_sql(at_default).scalar() for c in connections} == {True}
    finally:
        for c in connections:
            c.close()


def _waiting_for_a_lock(statement: str) -> bool:
    # a fresh session each time: pg_stat_activity is a snapshot per transaction
    with session_scope() as session:
        return bool(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND query LIKE :q"
                ),
                {"q": statement + "%"},
            ).scalar()
        )


def test_a_write_waits_for_a_cancel_in_progress_and_then_is_refused(client: Any, site: LocalSite) -> None:
    """Cancel holds the task row FOR UPDATE while it counts; an outcome arriving meanwhile
    must wait, then see the cancel, so it is never both refunded and counted done."""
    _user, task_id = _submit(client, site, 2)
    run = _claimed_run(task_id)
    [job, _] = _jobs(task_id)
    result: dict[str, Any] = {}

    def record() -> None:
        try:
            run._save(job, succeeded=True, values=_ok())
            result["outcome"] = "written"
        except LeaseLost:
            result["outcome"] = "lease lost"

    with session_scope() as cancel:
        cancel.execute(select(Task.id).where(Task.id == task_id).with_for_update())
        writer = threading.Thread(target=record)
        writer.start()
        deadline = time.monotonic() + 20
        while not _waiting_for_a_lock("UPDATE task_urls"):
            assert writer.is_alive() and time.monotonic() < deadline, "the write did not wait for the lock"
            time.sleep(0.05)
        cancel.execute(
            Task.__table__.update()
            .where(Task.__table__.c.id == task_id)
            .values(state=TaskState.cancelled, lease_owner=None)
        )
    writer.join(timeout=20)
    assert result == {"outcome": "lease lost"}
    assert _states(task_id) == [UrlState.pending, UrlState.pending]


def test_outcomes_in_flight_do_not_hold_up_the_heartbeat_or_a_progress_flush(client: Any, site: LocalSite) -> None:
    """The lock an outcome takes on the task row (key share) must not make the lease
    renewal or the counters' refresh (plain UPDATEs of the row) wait for it."""
    _user, task_id = _submit(client, site, 2)
    run = _claimed_run(task_id)
    [job, _] = _jobs(task_id)
    run._save(job, succeeded=True, values=_ok())
    done = threading.Event()

    def flush() -> None:
        run._flush_progress()
        done.set()

    with session_scope() as in_flight:  # an outcome's transaction, not committed yet
        assert in_flight.execute(select(run._owned_key_share())).scalar()
        flusher = threading.Thread(target=flush)
        flusher.start()
        assert done.wait(20), "the progress flush waited for an outcome's row lock"
    flusher.join(timeout=5)
    assert _task(task_id).succeeded_count == 1


def test_fetch_threads_share_a_bounded_set_of_outcome_connections(service_env: dict[str, str]) -> None:
    from worker.runner import OutcomeWriter

    writer = OutcomeWriter(get_engine(), size=2)
    busy, peak, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal busy, peak
        for _ in range(5):
            with writer.transaction() as conn:
                with lock:
                    busy += 1
                    peak = max(peak, busy)
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
                time.sleep(0.01)
                with lock:
                    busy -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert writer.opened == 2 and peak == 2
    writer.close()
    assert writer.opened == 0
