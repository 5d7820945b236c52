"""Fault scenarios run on more than one layout: each drives the fault on a deployed stack
and returns what it observed; the test modules assert on that record and report it."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.stack import docker
from tests.reliability.relstack import (
    Deployed,
    Submission,
    SubmitLoad,
    generated_passwords,
    grep_secrets,
    new_id,
    report,
    submit_many,
    submit_until_accepted,
    wait_healthy,
)

TERMINAL = ("completed", "failed", "cancelled")

# --- a worker container killed in the middle of a 500-task batch --------------------------------

RESULTS_CHECK = """
import json, sys
from common.results import page_key
from common.storage import get_storage
s = get_storage()
ok, bad = 0, []
for task_id, title in json.load(sys.stdin):
    try:
        record = json.loads(s.get(page_key(task_id, 0)))
        assert record["data"]["title"] == title, record
        ok += 1
    except Exception as exc:
        bad.append(f"{task_id}: {type(exc).__name__}: {exc}"[:200])
print(json.dumps({"ok": ok, "bad": bad[:20], "bad_count": len(bad)}))
"""


@dataclass
class BatchRun:
    n: int
    email: str
    killed: str = ""
    killed_at_done: int = 0
    in_flight: list[str] = field(default_factory=list)
    submissions: dict[str, Submission] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    seconds_to_finish_after_kill: float = 0.0
    seconds_total: float = 0.0
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> columns
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    killed_state: str = ""  # the killed container, 3 s after the kill
    url_errors: list[list[str]] = field(default_factory=list)  # (code, message, count) of failed URLs
    lost_messages: list[str] = field(default_factory=list)  # tasks whose queue message died with the worker
    started: float = 0.0
    killed_at: float = 0.0
    killed_wall: float = 0.0
    started_wall: float = 0.0
    submitter: threading.Thread | None = None


def title_of(i: int) -> str:
    return f"Product {i % 20 + 1:02d}"


def start_batch(d: Deployed, n: int = 500, kill_after: float = 0.2) -> BatchRun:
    """Submit `n` one-URL tasks; once `kill_after` of them are done, SIGKILL the worker
    container holding the most running tasks. Returns right after the kill: the tests
    that do not disturb the batch run while its orphaned tasks wait for their leases to
    lapse; `finish_batch` then waits for the end and collects the evidence."""
    run = BatchRun(n=n, email=f"batch-{new_id()}@reliability.test")
    headers = d.account(run.email)
    bodies = {
        f"batch-{i}": {
            "urls": [f"{d.site}/products/product-{i % 20 + 1:02d}.html?task={i}"],
            "extract": {"title": "h1::text", "price": ".price::text"},
            "options": {"retries": 2, "timeout": 15},
        }
        for i in range(n)
    }
    workers = {docker("inspect", "-f", "{{.Config.Hostname}}", c).stdout.strip(): c for c in d.containers("worker")}
    assert len(workers) >= 2, f"{d.name}: the batch needs at least two worker containers, found {workers}"
    run.started, run.started_wall = time.monotonic(), time.time()
    run.submitter = threading.Thread(
        target=lambda: run.submissions.update(submit_many(d, headers, bodies)), daemon=True
    )
    run.submitter.start()
    while True:
        assert time.monotonic() - run.started < 300, f"{d.name}: the batch never got {kill_after:.0%} done"
        states = d.task_states(run.email)
        done = sum(states.get(s, 0) for s in TERMINAL)
        if done >= n * kill_after:
            leased = d.sql(
                "SELECT split_part(t.lease_owner, '/', 1), string_agg(t.id::text, ',') FROM tasks t "
                f"JOIN users u ON u.id = t.user_id WHERE u.email = '{run.email}' AND t.state = 'running' "
                "AND t.lease_owner IS NOT NULL GROUP BY 1"
            )
            busy = sorted(((len(ids.split(",")), host, ids) for host, ids in leased if host in workers), reverse=True)
            if busy:
                _, host, ids = busy[0]
                docker("kill", workers[host])
                run.killed_at, run.killed_wall = time.monotonic(), time.time()
                run.killed, run.killed_at_done, run.in_flight = workers[host], done, ids.split(",")
                break
        time.sleep(0.3)
    time.sleep(3)
    run.killed_state = docker("inspect", "-f", "{{.State.Status}}", run.killed, check=False).stdout.strip()
    return run


LOST_AFTER_S = 90  # a queued task never claimed this long after its message was sent, with nothing
# else left to do, had its message taken off the queue by the killed worker


def wait_batch(d: Deployed, run: BatchRun, timeout: float = 420) -> tuple[dict[str, int], list[str]]:
    """Wait for every task of the batch. Tasks the killed worker had taken off the queue
    but not yet claimed are not lost (the database holds them) but only the reaper's
    15-minute resend (worker/reaper.py:QUEUED_RESEND) brings them back; once they are all
    that is left, their `enqueued_at` is moved back 15 minutes so the reaper acts now —
    the delay itself is test_phase1_faults.py::test_a_lost_queue_message_is_resent_within_minutes."""
    lost: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        states = d.task_states(run.email)
        pending = run.n - sum(states.get(s, 0) for s in TERMINAL)
        if pending == 0 or time.monotonic() > deadline:
            return states, lost
        stuck = [
            row[0]
            for row in d.sql(
                "SELECT t.id FROM tasks t JOIN users u ON u.id = t.user_id "
                f"WHERE u.email = '{run.email}' AND t.state = 'queued' AND t.attempts = 0 "
                f"AND t.enqueued_at < now() - interval '{LOST_AFTER_S} seconds'"
            )
        ]
        if stuck and len(stuck) == pending:
            ids = ",".join(f"'{t}'" for t in stuck)
            d.sql(f"UPDATE tasks SET enqueued_at = enqueued_at - interval '15 minutes' WHERE id IN ({ids})")
            lost += [t for t in stuck if t not in lost]
        time.sleep(2)


def finish_batch(d: Deployed, run: BatchRun) -> BatchRun:
    assert run.submitter is not None
    run.submitter.join(timeout=300)
    assert not run.submitter.is_alive(), "submissions did not finish"
    run.states, run.lost_messages = wait_batch(d, run)
    last = float(
        d.sql(
            "SELECT extract(epoch FROM max(t.finished_at)) FROM tasks t JOIN users u ON u.id = t.user_id "
            f"WHERE u.email = '{run.email}'"
        )[0][0]
    )
    run.seconds_to_finish_after_kill = round(last - run.killed_wall, 1)
    run.seconds_total = round(last - run.started_wall, 1)
    docker("start", run.killed, check=False)  # back to the deployed shape (no-op if it was replaced)
    for task_id, state, ok, failed, charged, attempts, key in d.sql(
        "SELECT t.id, t.state, t.succeeded_count, t.failed_count, t.credits_charged, t.attempts, t.idempotency_key "
        f"FROM tasks t JOIN users u ON u.id = t.user_id WHERE u.email = '{run.email}'"
    ):
        run.rows[task_id] = {
            "state": state,
            "succeeded": int(ok),
            "failed": int(failed),
            "charged": int(charged),
            "attempts": int(attempts),
            "key": key,
        }
    run.ledger = d.ledger(run.email)
    run.url_errors = url_errors(d, run.email)
    expected = [[tid, title_of(int(row["key"].split("-")[1]))] for tid, row in run.rows.items()]
    run.results = json.loads(d.api_python(RESULTS_CHECK, stdin=json.dumps(expected)))
    return run


# --- Postgres, then Redis, stopped under a steady submit load -----------------------------------


@dataclass
class OutageRun:
    email: str
    events: dict[str, float] = field(default_factory=dict)
    submissions: list[Submission] = field(default_factory=list)
    reads: list[tuple[float, int | None]] = field(default_factory=list)
    retried: dict[str, Submission] = field(default_factory=dict)  # keys accepted only on a client retry
    accepted: dict[str, str] = field(default_factory=dict)  # key -> task id
    states: dict[str, int] = field(default_factory=dict)
    wait_s: float = 0.0
    db_tasks: dict[str, tuple[str, str]] = field(default_factory=dict)  # task id -> (key, state)
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)
    url_errors: list[list[str]] = field(default_factory=list)

    WINDOWS = (
        ("before", None, "pg_stop"),
        ("postgres down", "pg_stop", "pg_start"),
        ("postgres back", "pg_start", "redis_stop"),
        ("redis down", "redis_stop", "redis_start"),
        ("redis back", "redis_start", "end"),
    )

    def window(self, t: float) -> str:
        for name, start, end in self.WINDOWS:
            if (start is None or t >= self.events[start]) and t < self.events[end]:
                return name
        return "after"

    def statuses(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {name: Counter() for name, _, _ in self.WINDOWS}
        for s in self.submissions:
            out.setdefault(self.window(s.started), Counter())[f"POST {s.status or 'no answer'}"] += 1
        for started, status in self.reads:
            out.setdefault(self.window(started), Counter())[f"GET {status or 'no answer'}"] += 1
        return out

    def first_success_after(self, event: str) -> float | None:
        times = [s.started for s in self.submissions if s.task_id and s.started >= self.events[event]]
        return round(min(times) - self.events[event], 1) if times else None

    def failures_between(self, start: float, end: float) -> list[Submission]:
        return [s for s in self.submissions if start <= s.started < end and not s.task_id]

    def summary(self) -> str:
        parts = []
        for name, counts in self.statuses().items():
            if counts:
                parts.append(f"{name}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        return "; ".join(parts)


def start_outage(d: Deployed, down_s: float = 8, settle_s: float = 6) -> OutageRun:
    """Stop Postgres for `down_s`, start it, then the same with Redis, while a client
    submits a task every 0.25 s; afterwards the client re-sends (same Idempotency-Key)
    what was not accepted. `finish_outage` waits for every accepted task."""
    run = OutageRun(email=f"outage-{new_id()}@reliability.test")
    headers = d.account(run.email)
    with SubmitLoad(d, headers, prefix=f"out-{new_id()}") as load:
        time.sleep(4)
        for dep, container in (("pg", d.postgres), ("redis", d.redis)):
            run.events[f"{dep}_stop"] = time.monotonic()
            docker("stop", "-t", "30", container)
            run.events[f"{dep}_stopped"] = time.monotonic()
            time.sleep(down_s)
            run.events[f"{dep}_start"] = time.monotonic()
            docker("start", container)
            wait_healthy(container)
            run.events[f"{dep}_healthy"] = time.monotonic()
            time.sleep(settle_s)
        run.events["end"] = time.monotonic()
    run.submissions, run.reads = list(load.submissions), list(load.reads)
    with d.client() as client:
        for s in run.submissions:
            if s.task_id:
                run.accepted[s.key] = s.task_id
                continue
            again = submit_until_accepted(client, headers, s.key, load.body(int(s.key.rsplit("-", 1)[1])))
            run.retried[s.key] = again
            if again.task_id:
                run.accepted[s.key] = again.task_id
    return run


def finish_outage(d: Deployed, run: OutageRun) -> OutageRun:
    run.states, run.wait_s = d.wait_tasks_done(run.email, len(run.accepted), timeout=300)
    run.wait_s = round(time.monotonic() - run.events["end"], 1)
    for task_id, key, state in d.sql(
        "SELECT t.id, t.idempotency_key, t.state FROM tasks t JOIN users u ON u.id = t.user_id "
        f"WHERE u.email = '{run.email}'"
    ):
        run.db_tasks[task_id] = (key, state)
    run.ledger = d.ledger(run.email)
    run.url_errors = url_errors(d, run.email)
    return run


def url_errors(d: Deployed, email: str) -> list[list[str]]:
    """The most frequent (error code, message) of `email`'s URLs that did not succeed."""
    return d.sql(
        "SELECT coalesce(tu.error_code, '-'), left(coalesce(tu.error, ''), 160), count(*) FROM task_urls tu "
        f"JOIN tasks t ON t.id = tu.task_id JOIN users u ON u.id = t.user_id WHERE u.email = '{email}' "
        "AND tu.state <> 'succeeded' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"
    )


def check_batch(d: Deployed, run: BatchRun) -> None:
    """Every task of the batch completed exactly once: one terminal state, one result per
    URL with the right data, one charge and no refund in the ledger."""
    attempts = Counter(row["attempts"] for row in run.rows.values())
    in_flight_attempts = Counter(run.rows[t]["attempts"] for t in run.in_flight if t in run.rows)
    lost = run.n - sum(1 for r in run.rows.values() if r["state"] == "completed" and r["succeeded"] == 1)
    report(
        d.layout,
        f"worker container {run.killed.removeprefix(d.name + '-')} SIGKILLed (`docker kill`) mid-batch of "
        f"{run.n} one-URL tasks ({run.killed_at_done} done, {len(run.in_flight)} running on it; "
        f"3 s later it was {run.killed_state})",
        f"last task finished {run.seconds_to_finish_after_kill} s after the kill ({run.seconds_total} s after the "
        "first submission); "
        f"its running tasks taken over after their lease lapsed (attempts {dict(sorted(in_flight_attempts.items()))}); "
        + (
            f"{len(run.lost_messages)} task(s) whose queue message died with the worker sat queued (the reaper "
            "resends only after 15 min; the test moved the clock of those rows on); "
            if run.lost_messages
            else ""
        )
        + f"all tasks: attempts {dict(sorted(attempts.items()))}; states {run.states}; "
        f"{run.results.get('ok')} results read back",
        "none" if lost == 0 and run.results.get("bad_count") == 0 else f"{lost} tasks not completed",
    )
    assert len(run.submissions) == run.n and all(s.task_id for s in run.submissions.values()), "submissions failed"
    assert len(run.rows) == run.n, f"{len(run.rows)} task rows for {run.n} submissions"
    assert run.in_flight, "the killed worker ran nothing: the fault did not happen mid-task"
    not_done = {t: r for t, r in run.rows.items() if not (r["state"] == "completed" and r["succeeded"] == 1)}
    assert not not_done, (
        f"{len(not_done)} tasks not completed exactly once, e.g. {list(not_done.items())[:3]}, "
        f"URL errors {run.url_errors}"
    )
    assert all(r["failed"] == 0 and r["charged"] == 1 for r in run.rows.values())
    charges = {t: e for t, e in run.ledger.items() if e.get("charge_rows") != 1 or e.get("charge") != -1}
    refunds = {t: e for t, e in run.ledger.items() if "refund" in e}
    assert set(run.ledger) == set(run.rows) and not charges and not refunds, (charges, refunds)
    assert run.results == {"ok": run.n, "bad": [], "bad_count": 0}, run.results


def check_outage_no_loss(d: Deployed, run: OutageRun) -> None:
    keys = {s.key for s in run.submissions}
    lost = {k for k in keys if k not in run.accepted}
    not_done = {t: s for t, (_, s) in run.db_tasks.items() if s != "completed"}
    report(
        d.layout,
        "Postgres stopped 8 s, then Redis stopped 8 s, under a steady submit load (2 clients, each 1 task / 0.25 s)",
        f"{run.summary()}; {len(run.retried)} submissions re-sent by the client with the same Idempotency-Key; "
        f"{len(run.accepted)} accepted tasks all finished {run.wait_s:.0f} s after the load ended "
        f"(tasks accepted while Redis was down are queued by the reaper); states {run.states}",
        "none" if not lost and not not_done else f"{len(lost)} never accepted, {len(not_done)} not completed",
    )
    assert not lost, f"never accepted even on retry: {sorted(lost)[:10]}"
    assert len(run.db_tasks) == len(keys), f"{len(run.db_tasks)} tasks in the database for {len(keys)} keys"
    assert {key for key, _ in run.db_tasks.values()} == keys
    assert set(run.db_tasks) == set(run.accepted.values()), "a task the client was never told about exists"
    assert not not_done, f"accepted tasks not completed: {list(not_done.items())[:5]}, URL errors {run.url_errors}"
    bad_ledger = {t: e for t, e in run.ledger.items() if e != {"charge": -1, "charge_rows": 1}}
    assert set(run.ledger) == set(run.db_tasks) and not bad_ledger, bad_ledger


# "no answer": a request caught at the moment the container went away can hang past the
# client's 5 s timeout (reported; see the report table)
OUTAGE_ANSWERS = {"POST 503", "GET 503", "POST no answer", "GET no answer"}


class SecretsAndUsers:
    """Checks on every layout; a module subclasses it as `Test…` where they run."""

    def test_no_generated_password_in_plain_text(self, deployed: Deployed) -> None:
        """State, state backups, container logs and Pulumi output (Redis included: its
        password once sat on redis-server's command line, kept plain in the state)."""
        assert scan_plaintext_secrets(deployed)["hits"] == []

    def test_no_service_process_runs_as_root(self, deployed: Deployed) -> None:
        check_non_root(deployed)


class DependencyOutage:
    """The same checks on every layout; a module subclasses it as `Test…` where they run."""

    def test_postgres_outage_answers_503_not_500(self, outage_started: OutageRun) -> None:
        answers = answers_during(outage_started, "pg_stop", "pg_healthy")
        assert answers, "no failed answer while Postgres was down: the outage was not observed"
        assert set(answers) <= OUTAGE_ANSWERS, answers
        assert answers["POST 503"] + answers["GET 503"] >= 1, answers

    def test_redis_outage_never_answers_500(self, outage_started: OutageRun) -> None:
        answers = answers_during(outage_started, "redis_stop", "redis_healthy")
        assert not any(k.endswith(" 500") for k in answers), answers
        assert set(answers) <= OUTAGE_ANSWERS, answers

    def test_dependency_outage_recovers_by_itself(self, outage_started: OutageRun) -> None:
        check_outage_recovers(outage_started)


def check_outage_recovers(run: OutageRun, grace_s: float = 10) -> None:
    """After each dependency is healthy again the API accepts within `grace_s` and every
    submission from then until the next fault is accepted, without any restart."""
    for dep, next_event in (("pg", "redis_stop"), ("redis", "end")):
        first = run.first_success_after(f"{dep}_healthy")
        assert first is not None and first <= grace_s, f"{dep}: first accepted submission {first} s after recovery"
        failing = run.failures_between(run.events[f"{dep}_healthy"] + grace_s, run.events[next_event])
        assert not failing, f"{dep}: still failing after recovery: {[(f.status, f.detail) for f in failing[:5]]}"


def answers_during(run: OutageRun, start: str, end: str) -> Counter[str]:
    out: Counter[str] = Counter()
    lo, hi = run.events[start], run.events[end]
    for s in run.submissions:
        if lo <= s.started < hi and not s.task_id:
            out[f"POST {s.status or 'no answer'}"] += 1
    for started, status in run.reads:
        if lo <= started < hi and status != 200:
            out[f"GET {status or 'no answer'}"] += 1
    return out


# --- no secret in plain text ------------------------------------------------------------------


def scan_plaintext_secrets(d: Deployed) -> dict[str, Any]:
    """Every generated password, searched for in the exported state, every file of the
    state backend (checkpoints, history, backups), every container's logs and the output
    of every pulumi command this run made."""
    secrets = generated_passwords(d)
    assert len(secrets) >= 4, f"expected the stack's generated passwords, found {sorted(secrets)}"
    texts = [("`pulumi stack export`", d.stack.export_state())]
    state_dir = d.stack.workdir / "state"
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    texts += [(f"state file {p.relative_to(state_dir)}", p.read_text(errors="ignore")) for p in files]
    containers = d.containers(running=False)
    for c in containers:
        logs = docker("logs", c, check=False, timeout=120)
        texts.append((f"docker logs {c}", logs.stdout + logs.stderr))
    texts.append(("pulumi CLI output", "\n".join(d.outputs_log + d.stack.log)))
    hits = grep_secrets(texts, secrets)
    where = Counter(h.rsplit(": ", 1)[1] for h in hits)
    kinds = {"`pulumi": "the exported state", "state": "state-backend files", "docker": "container logs"}
    places = sorted({kinds.get(h.split(" ")[0], "pulumi output") for h in hits})
    report(
        d.layout,
        f"grep for each of the {len(secrets)} generated passwords ({', '.join(sorted(secrets))})",
        f"searched the exported state, {len(files)} state-backend files, the logs of {len(containers)} containers "
        f"and every pulumi command's output: "
        + (f"found {dict(where)} in {len(hits)} places ({', '.join(places)})" if hits else "no hit"),
        "none" if not hits else "a password readable by anyone who can read the state",
    )
    return {"secrets": secrets, "hits": hits}


# --- container users and root file systems ----------------------------------------------------

# Processes allowed to run as root, and why.
ROOT_MASTERS = {
    "entry": ("nginx", "nginx master: binds 80/443 and reads the TLS key; its workers run as nobody"),
    "lb": ("haproxy", "haproxy master (-W): binds 80/443 after the entrypoint wrote the first certificate; "
           "its worker drops to the haproxy user"),
}  # fmt: skip


@dataclass
class ContainerUser:
    name: str
    role: str
    user: str
    read_only: bool
    processes: list[tuple[str, str]]  # (user, command)

    @property
    def root_processes(self) -> list[str]:
        return [cmd for user, cmd in self.processes if user in ("root", "0")]


def container_users(d: Deployed) -> list[ContainerUser]:
    out = []
    for name in d.containers():
        info = json.loads(docker("inspect", name).stdout)[0]
        role = (info["Config"].get("Labels") or {}).get("selextract.role", "")
        if not role:
            continue  # the test site
        # `docker top` wants a pid column; (pid, user, command) per process
        top = docker("top", name, "-eo", "pid,user,comm").stdout.splitlines()[1:]
        procs = [tuple(line.split(None, 2)[1:]) for line in top if line.strip()]
        assert procs, f"docker top {name} listed no process"
        out.append(
            ContainerUser(
                name, role, info["Config"].get("User") or "(image default)", info["HostConfig"]["ReadonlyRootfs"],
                [(u, c.strip()) for u, c in procs],
            )
        )  # fmt: skip
    return out


def check_non_root(d: Deployed) -> list[ContainerUser]:
    users = container_users(d)
    wrong = []
    for cu in users:
        allowed = ROOT_MASTERS.get(cu.role)
        root = cu.root_processes
        if root and not (allowed and len(root) == 1 and root[0].startswith(allowed[0])):
            wrong.append(f"{cu.name}: root processes {root}")
    ro = sorted({f"{cu.role}" for cu in users if cu.read_only})
    rw = sorted({f"{cu.name.removeprefix(d.name + '-')}" for cu in users if not cu.read_only})
    masters = [k for k in ROOT_MASTERS if any(u.role == k for u in users)]
    report(
        d.layout,
        f"process owners (`docker top`) and root file systems of the {len(users)} running containers",
        f"no root process except the proxy masters ({', '.join(masters)}); "
        f"read-only root: {', '.join(ro)}; writable root: {', '.join(rw)}",
        "n/a",
    )
    assert not wrong, wrong
    assert all(cu.read_only and cu.user == "10001" for cu in users if cu.role in ("api", "worker"))
    return users


STATELESS = ("node-exporter", "postgres-exporter", "redis-exporter")


def stateless_containers(d: Deployed) -> list[str]:
    return [c for c in d.containers("monitoring") if any(s in c for s in STATELESS)]


def runs_read_only(d: Deployed, container: str, seconds: float = 4) -> tuple[bool, str]:
    """Does a copy of `container` (same image, command, user, env, network) keep running
    with a read-only root file system and a tmpfs /tmp?"""
    info = json.loads(docker("inspect", container).stdout)[0]
    cfg = info["Config"]
    clone = f"{d.name}-rocheck-{new_id()}"
    args = ["run", "-d", "--name", clone, "--label", f"selextract.stack={d.name}", "--read-only", "--tmpfs", "/tmp"]
    args += ["--network", f"{d.name}-net"]
    if cfg.get("User"):
        args += ["--user", cfg["User"]]
    for env in cfg.get("Env") or []:
        args += ["-e", env]
    if cfg.get("Entrypoint"):
        args += ["--entrypoint", cfg["Entrypoint"][0]]
    args.append(cfg["Image"])
    args += (cfg.get("Entrypoint") or [])[1:] + (cfg.get("Cmd") or [])
    try:
        docker(*args)
        time.sleep(seconds)
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", clone).stdout.strip()
        logs = docker("logs", "--tail", "5", clone, check=False)
        return state.startswith("true"), f"{state}: {(logs.stdout + logs.stderr)[-400:]}"
    finally:
        docker("rm", "-f", clone, check=False)
