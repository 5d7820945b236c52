"""Running one scrape task: claim it, fetch its pending URLs in parallel, store each result,
then finish it or hand it back for a later attempt.

Exactly-once effects on top of at-least-once delivery:
- a run first takes a *lease* on the task row (one run at a time); a heartbeat renews it,
  so a killed worker's lease lapses and the redelivered message can take over;
- each URL's outcome is written once (``WHERE state = 'pending'``) with its result object
  under a fixed key, so a retry overwrites instead of duplicating;
- credits were charged once at submit time; the refund for failed URLs is one ledger row
  per task (unique constraint), so finishing twice cannot refund twice.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from common import accounting
from common.config import Settings
from common.db import get_engine, session_scope
from common.models import Task, TaskState, TaskUrl, UrlState
from common.netpolicy import strip_userinfo
from common.results import page_key
from common.storage import Storage, StorageError
from worker import attempts
from worker.extractor import ExtractionFailed, ExtractorPool, get_pool
from worker.fetch import Fetcher, FetchError, FetchOptions

log = logging.getLogger(__name__)
MAX_TASK_ATTEMPTS = 25
# A run whose lease lapsed without being handed back died with its worker process (or hung
# past the lease). After this many, the task's remaining URLs fail as ``worker_lost``:
# a task that kills every worker it reaches must not keep coming back (worker/attempts.py).
MAX_LOST_RUNS = 3
ACTIVE = (TaskState.queued, TaskState.running)
# The task's succeeded/failed counters are progress for the API; they are refreshed after
# this many recorded URLs or this many seconds, and set exactly when the run ends.
PROGRESS_EVERY = 20
PROGRESS_INTERVAL = 1.0


@dataclass(frozen=True)
class Outcome:
    """What the Celery task does next: nothing (done) or run again after ``countdown`` s."""

    done: bool
    countdown: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class UrlJob:
    id: int
    position: int
    url: str
    attempts: int


class ProgressBatch:
    """Runs ``flush`` after every ``every`` recorded outcomes, or on the first outcome
    ``interval`` seconds after the last flush, instead of once per URL.

    Thread-safe; one flush at a time (a thread that finds a flush running leaves the
    count for the next one). ``flush`` must be idempotent: it sets the counters from the
    recorded rows rather than adding to them, so a failed or skipped flush heals."""

    def __init__(
        self,
        flush: Callable[[], None],
        every: int = 20,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self.every = every
        self.interval = interval
        self._clock = clock
        self._pending = 0
        self._last = clock()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def recorded(self) -> None:
        with self._lock:
            self._pending += 1
            due = self._pending >= self.every or self._clock() - self._last >= self.interval
        if due:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Flush now if anything is pending (``wait=False``: unless a flush is running)."""
        if not self._flushing.acquire(blocking=wait):
            return
        try:
            with self._lock:
                pending, self._pending = self._pending, 0
                self._last = self._clock()
            if not pending:
                return
            try:
                self._flush()
            except Exception:  # progress is informational; the next flush or _finish sets it right
                log.exception("progress flush failed")
                with self._lock:
                    self._pending += pending
        finally:
            self._flushing.release()


class OutcomeWriter:
    """The connections that record URL outcomes, kept for the whole run and shared by its
    fetch threads (at most ``size``, so a high ``scraper.concurrency`` cannot take the
    whole engine pool).

    A pooled checkout per URL costs a ``pre_ping`` round trip and pool locking; a run
    records up to a hundred outcomes per thread. The connections are set to commit
    without waiting for the WAL flush (see ``_Run._save``), and that setting is reset
    before they go back to the pool (a connection that cannot be reset is discarded)."""

    def __init__(self, engine: Engine, size: int) -> None:
        self.engine = engine
        self.size = max(1, size)
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._opened: list[Connection] = []
        self._count = 0  # opened or being opened
        self._lock = threading.Lock()

    def _borrow(self) -> Connection:
        wait = 0.0
        while True:
            try:
                idle = self._idle.get(timeout=wait) if wait else self._idle.get_nowait()
                if not idle.closed:
                    return idle
                continue  # closed by close(): not ours to use
            except queue.Empty:
                pass
            with self._lock:
                may_open = self._count < self.size
                if may_open:
                    self._count += 1
            if may_open:
                break
            wait = 0.5  # every connection is busy: take the first one back (re-check now and then)
        try:
            conn = self.engine.connect()
        except BaseException:
            with self._lock:
                self._count -= 1
            raise
        with self._lock:
            self._opened.append(conn)
        try:
            conn.exec_driver_sql("SET synchronous_commit = off")
            conn.commit()
        except BaseException:
            self._forget(conn)
            raise
        return conn

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._opened:
                self._opened.remove(conn)
                self._count -= 1
        _discard(conn)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        conn = self._borrow()
        try:
            with conn.begin():
                yield conn
        except DBAPIError:
            self._forget(conn)  # a broken connection is not handed out again
            raise
        except BaseException:
            self._idle.put(conn)
            raise
        self._idle.put(conn)

    @property
    def opened(self) -> int:
        with self._lock:
            return len(self._opened)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
            self._count -= len(opened)
        for conn in opened:
            if conn.closed:
                continue
            try:
                if conn.in_transaction():
                    conn.rollback()
                conn.exec_driver_sql("RESET synchronous_commit")
                conn.commit()
                conn.close()
            except Exception:
                _discard(conn)


def _discard(conn: Connection) -> None:
    """Drop a connection instead of returning it to the pool."""
    try:
        conn.invalidate()
        conn.close()
    except Exception:
        log.debug("closing a discarded connection failed", exc_info=True)


class LeaseLost(Exception):
    """The task was cancelled or taken over while we worked on it."""


def now() -> datetime:
    return datetime.now(UTC)


class TaskRunner:
    def __init__(
        self, settings: Settings, storage: Storage, fetcher: Fetcher, extractor: ExtractorPool | None = None
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.fetcher = fetcher
        self.extractor = extractor or get_pool(settings)

    def run(self, task_id: uuid.UUID) -> Outcome:
        owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        claimed = self._claim(task_id, owner)
        if isinstance(claimed, Outcome):
            return claimed
        run = _Run(self, task_id, owner, claimed)
        return run.execute()

    def _claim(self, task_id: uuid.UUID, owner: str) -> dict[str, Any] | Outcome:
        lease = timedelta(seconds=self.settings.task_lease_seconds)
        with session_scope(self.settings) as session:
            # the row as the claim finds it (locked as the claim's UPDATE would lock it)
            prior_owner = session.scalar(
                select(Task.lease_owner).where(Task.id == task_id).with_for_update(key_share=True)
            )
            row = session.execute(
                update(Task)
                .where(
                    Task.id == task_id,
                    Task.state.in_(ACTIVE),
                    (Task.lease_expires_at.is_(None)) | (Task.lease_expires_at < func.now()),
                )
                .values(
                    state=TaskState.running,
                    lease_owner=owner,
                    lease_expires_at=func.now() + lease,
                    attempts=Task.attempts + 1,
                    started_at=func.coalesce(Task.started_at, func.now()),
                    retry_at=None,
                )
                .returning(Task.rules, Task.options, Task.attempts)
            ).first()
            if row is not None:
                # taking over a lapsed lease that was never released: the run before died;
                # counted before the commit, so a Redis outage undoes the claim too
                lost = attempts.bump(self.settings, "lost-run", task_id) if prior_owner is not None else 0
                return {"rules": row.rules, "options": row.options, "attempts": row.attempts, "lost_runs": lost}
            task = session.get(Task, task_id)
            if task is None or task.state.terminal:
                return Outcome(done=True, reason="task missing or already finished")
            remaining = (task.lease_expires_at - now()).total_seconds() if task.lease_expires_at else 1.0
            return Outcome(done=False, countdown=max(1.0, remaining + 0.5), reason="another run holds the lease")


class _Run:
    """State of one claimed run (one Celery attempt)."""

    def __init__(self, runner: TaskRunner, task_id: uuid.UUID, owner: str, claimed: dict[str, Any]) -> None:
        self.settings = runner.settings
        self.storage = runner.storage
        self.fetcher = runner.fetcher
        self.extractor = runner.extractor
        self.task_id = task_id
        self.owner = owner
        # applied by the extraction helpers (worker/extractor.py), which parse them once
        self.rules_json = json.dumps(claimed["rules"], sort_keys=True)
        self.max_result_bytes = self.settings.scraper_max_result_bytes
        self.options: dict[str, Any] = claimed["options"]
        self.attempt: int = claimed["attempts"]
        self.lost_runs: int = claimed.get("lost_runs", 0)
        self.max_retries = int(self.options.get("retries", 2))
        self.fetch_options = FetchOptions(
            timeout=float(self.options.get("timeout", self.settings.scraper_default_timeout)),
            use_proxy=bool(self.options.get("use_proxy")) and bool(self.fetcher.proxies.proxies),
            respect_robots=bool(self.options.get("respect_robots", True)),
            render_js=bool(self.options.get("render_js", False)),
        )
        self.stop = threading.Event()
        self.stop_reason = ""
        self.deferred = 0
        # one per fetch thread, but leave 3 of the engine's pool_size + 2 x pool_size overflow
        # (common/db.py) to the heartbeat, the reaper and the end of the run
        engine_max = 3 * self.settings.database_pool_size
        self._writer = OutcomeWriter(
            get_engine(self.settings), min(self.settings.scraper_concurrency, max(1, engine_max - 3))
        )
        self._progress = ProgressBatch(self._flush_progress, every=PROGRESS_EVERY, interval=PROGRESS_INTERVAL)

    # --- lifecycle ------------------------------------------------------------------------
    def execute(self) -> Outcome:
        heartbeat = threading.Thread(target=self._heartbeat, name=f"lease-{self.task_id}", daemon=True)
        heartbeat.start()
        try:
            jobs = self._pending()
            if self.attempt > MAX_TASK_ATTEMPTS:
                self._give_up(jobs, "gave_up", f"not finished after {MAX_TASK_ATTEMPTS} attempts")
                jobs = []
            elif self.lost_runs >= MAX_LOST_RUNS:
                log.warning("task %s: its worker process died %d times; failing it", self.task_id, self.lost_runs)
                self._give_up(
                    jobs, "worker_lost", f"the worker process died {self.lost_runs} times while running this task"
                )
                jobs = []
            self._process(jobs)
        except SoftTimeLimitExceeded:
            self._halt("soft time limit reached")
            return self._release(countdown=1.0, reason="soft time limit; continuing in a new attempt")
        except LeaseLost:
            pass
        finally:
            self.stop.set()
            heartbeat.join(timeout=5)
            self._writer.close()
        if self.stop_reason:
            log.info("task %s: run stopped: %s", self.task_id, self.stop_reason)
            return Outcome(done=True, reason=self.stop_reason)
        if self.deferred:
            return self._release(countdown=self._backoff(), reason=f"{self.deferred} URL(s) to retry")
        self._finish()
        return Outcome(done=True, reason="finished")

    def _halt(self, reason: str) -> None:
        self.stop.set()
        self.stop_reason = self.stop_reason or reason

    def _heartbeat(self) -> None:
        interval = max(1.0, self.settings.task_lease_seconds / 3)
        lease = timedelta(seconds=self.settings.task_lease_seconds)
        while not self.stop.wait(interval):
            try:
                with session_scope(self.settings) as session:
                    renewed = session.execute(
                        update(Task)
                        .where(
                            Task.id == self.task_id,
                            Task.lease_owner == self.owner,
                            Task.state == TaskState.running,
                        )
                        .values(lease_expires_at=func.now() + lease)
                        .returning(Task.id)
                    ).first()
            except Exception:  # a DB hiccup must not kill the run; the lease has slack
                log.exception("task %s: lease renewal failed", self.task_id)
                continue
            if renewed is None:
                self._halt("task cancelled or taken over by another run")
            else:
                self._progress.flush(wait=False)

    def _pending(self) -> list[UrlJob]:
        with session_scope(self.settings) as session:
            rows = session.execute(
                select(TaskUrl.id, TaskUrl.position, TaskUrl.url, TaskUrl.attempts)
                .where(TaskUrl.task_id == self.task_id, TaskUrl.state == UrlState.pending)
                .order_by(TaskUrl.position)
            ).all()
        return [UrlJob(r.id, r.position, r.url, r.attempts) for r in rows]

    def _result_cap(self) -> int:
        """Bytes of extracted data one page may store: the per-page limit, or the task's
        share of the per-task limit if smaller (so a download stays bounded)."""
        with session_scope(self.settings) as session:
            urls = session.scalar(select(Task.url_count).where(Task.id == self.task_id)) or 1
        return min(self.settings.scraper_max_result_bytes, self.settings.scraper_max_task_result_bytes // urls)

    def _process(self, jobs: list[UrlJob]) -> None:
        if not jobs:
            return
        self.max_result_bytes = self._result_cap()
        workers = min(self.settings.scraper_concurrency, len(jobs))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"fetch-{str(self.task_id)[:8]}")
        try:
            futures = [pool.submit(self._one, job) for job in jobs]
            wait(futures)
            for future in futures:
                exc = future.exception()
                if exc is not None and not isinstance(exc, LeaseLost):
                    raise exc
        except BaseException:
            self.stop.set()  # queued URLs are skipped; only in-flight fetches are waited for
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # --- one URL --------------------------------------------------------------------------
    def _one(self, job: UrlJob) -> None:
        if self.stop.is_set():
            return
        page = None
        try:
            page = self.fetcher.fetch(job.url, self.fetch_options)
            extracted = self.extractor.extract(self.rules_json, page.text, page.final_url, self.max_result_bytes)
            head = {
                "url": job.url,
                "final_url": page.final_url,
                "status_code": page.status_code,
                "fetched_at": now().isoformat(),
            }
            # the record is {**head, "data": data}; the helper already serialised the data
            record = json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "data": ' + extracted.data + b"}"
            self.storage.put(page_key(self.task_id, job.position), record, "application/json")
        except FetchError as exc:
            self._failed(job, exc.code, str(exc), exc.retryable, exc.status_code)
            return
        except ExtractionFailed as exc:  # the page's own doing: trying again would end the same way
            self._failed(job, exc.code, str(exc), retryable=False, status_code=page.status_code if page else None)
            return
        except StorageError as exc:
            self._failed(job, "storage_error", str(exc), retryable=True)
            return
        except Exception as exc:
            log.exception("task %s: unexpected error on %s", self.task_id, strip_userinfo(job.url))
            self._failed(job, "internal_error", f"{type(exc).__name__}: {exc}", retryable=False)
            return
        self._save(
            job,
            succeeded=True,
            values={
                "state": UrlState.succeeded,
                "status_code": page.status_code,
                "final_url": page.final_url,
                "error_code": None,
                "error": None,
                "item_count": extracted.item_count,
                "content_bytes": page.size,
                "elapsed_ms": page.elapsed_ms,
                "fetched_at": func.now(),
                "attempts": job.attempts + 1,
            },
        )

    def _failed(self, job: UrlJob, code: str, message: str, retryable: bool, status_code: int | None = None) -> None:
        attempts = job.attempts + 1
        final = not retryable or attempts > self.max_retries
        values: dict[str, Any] = {
            "error_code": code,
            "error": message[:2000],
            "status_code": status_code,
            "attempts": attempts,
            "fetched_at": func.now(),
        }
        if final:
            values["state"] = UrlState.failed
        else:
            self.deferred += 1
        log.info(
            "task %s: %s failed (%s, attempt %d, %s)",
            self.task_id,
            strip_userinfo(job.url),
            code,
            attempts,
            "final" if final else "will retry",
        )
        self._save(job, succeeded=False, values=values, counts=final)

    def _save(self, job: UrlJob, *, succeeded: bool, values: dict[str, Any], counts: bool = True) -> None:
        """Record a URL outcome if we still own the task.

        One statement, no task-row write: a ``FOR KEY SHARE`` lock on the task row orders
        the write with a cancel (and ``_finish``), which take the row ``FOR UPDATE``, so each
        URL is either counted done or refunded. It conflicts with nothing else: sibling
        threads, the heartbeat and the progress flush do not wait for each other. The
        progress counters on the task row are refreshed in batches by ``_progress``.

        The commit does not wait for the WAL flush: losing it in a Postgres crash only
        leaves the URL pending, to be fetched again under the same result key; cancel and
        finish commit synchronously, which flushes every earlier outcome with them."""
        with self._writer.transaction() as session:
            written = session.execute(
                update(TaskUrl)
                .where(TaskUrl.id == job.id, TaskUrl.state == UrlState.pending, self._owned_key_share())
                .values(**values)
                .returning(TaskUrl.id)
            ).first()
            if written is None:
                owned = session.execute(
                    select(Task.id).where(
                        Task.id == self.task_id, Task.lease_owner == self.owner, Task.state == TaskState.running
                    )
                ).first()
                if owned is None:
                    self._halt("task cancelled or taken over by another run")
                    raise LeaseLost()
                return  # already recorded by an earlier run: keep the first outcome
        if counts:
            self._progress.recorded()

    def _owned_key_share(self) -> Any:
        """``EXISTS`` our lease on the task row, taking a key-share row lock on it."""
        return (
            select(Task.id)
            .where(Task.id == self.task_id, Task.lease_owner == self.owner, Task.state == TaskState.running)
            .with_for_update(read=True, key_share=True)  # FOR KEY SHARE
            .exists()
        )

    def _flush_progress(self) -> None:
        """Set the task's counters from its recorded URLs (idempotent, so a lost flush heals)."""
        with self._writer.transaction() as session:  # progress only: recomputed by the next flush
            session.execute(
                update(Task)
                .where(Task.id == self.task_id, Task.lease_owner == self.owner, Task.state == TaskState.running)
                .values(
                    succeeded_count=_url_count(self.task_id, UrlState.succeeded),
                    failed_count=_url_count(self.task_id, UrlState.failed),
                )
            )

    # --- end of a run ---------------------------------------------------------------------
    def _backoff(self) -> float:
        base = self.settings.scraper_retry_backoff * (2 ** max(0, self.attempt - 1))
        return min(self.settings.scraper_retry_backoff_max, base) * random.uniform(0.8, 1.2)

    def _release(self, countdown: float, reason: str) -> Outcome:
        with session_scope(self.settings) as session:
            session.execute(
                update(Task)
                .where(Task.id == self.task_id, Task.lease_owner == self.owner)
                .values(
                    succeeded_count=_url_count(self.task_id, UrlState.succeeded),
                    failed_count=_url_count(self.task_id, UrlState.failed),
                    lease_owner=None,
                    lease_expires_at=None,
                    retry_at=func.now() + timedelta(seconds=countdown),
                    enqueued_at=func.now(),
                )
            )
        return Outcome(done=False, countdown=countdown, reason=reason)

    def _give_up(self, jobs: list[UrlJob], code: str, reason: str) -> None:
        for job in jobs:
            self._failed(job, code, f"{reason}; not retried", retryable=False)

    def _finish(self) -> None:
        webhook = False
        with session_scope(self.settings) as session:
            task = session.scalar(select(Task).where(Task.id == self.task_id).with_for_update())
            if task is None or task.state != TaskState.running or task.lease_owner != self.owner:
                return
            outcome = _tally(session, task)
            task.state = TaskState.completed if outcome["succeeded"] else TaskState.failed
            task.succeeded_count = outcome["succeeded"]
            task.failed_count = outcome["failed"]
            task.error = outcome["summary"]
            task.finished_at = now()
            task.lease_owner = None
            task.lease_expires_at = None
            task.retry_at = None
            accounting.refund(session, task, outcome["failed"], f"{outcome['failed']} URL(s) failed")
            if task.webhook_url:
                task.webhook_status = "pending"
                webhook = True
        log.info("task %s: %s", self.task_id, outcome["summary"] or "all URLs succeeded")
        if webhook:
            _send_webhook_soon(self.task_id)


def _url_count(task_id: uuid.UUID, state: UrlState) -> Any:
    """Scalar subquery: how many of the task's URLs are in ``state``."""
    return (
        select(func.count())
        .select_from(TaskUrl)
        .where(TaskUrl.task_id == task_id, TaskUrl.state == state)
        .scalar_subquery()
    )


def _tally(session: Session, task: Task) -> dict[str, Any]:
    rows = session.execute(
        select(TaskUrl.state, TaskUrl.error_code, func.count())
        .where(TaskUrl.task_id == task.id)
        .group_by(TaskUrl.state, TaskUrl.error_code)
    ).all()
    succeeded = sum(n for state, _code, n in rows if state == UrlState.succeeded)
    errors = Counter({code or "error": n for state, code, n in rows if state == UrlState.failed})
    failed = sum(errors.values())
    summary = None
    if failed:
        detail = ", ".join(f"{code}: {n}" for code, n in errors.most_common())
        summary = f"{failed} of {task.url_count} URL(s) failed ({detail})"
    return {"succeeded": succeeded, "failed": failed, "summary": summary}


def _send_webhook_soon(task_id: uuid.UUID) -> None:
    from common.queue import enqueue_webhook

    try:
        enqueue_webhook(task_id)
    except Exception:  # the reaper re-sends webhooks left 'pending'
        log.exception("task %s: could not queue the completion webhook", task_id)
