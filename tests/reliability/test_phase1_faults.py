"""Faults on a deployed phase-1 stack (app-01: entry, API, workers, monitoring, results on
the app host's disk; db-01: Postgres; redis-01: Redis), on this machine's Docker engine.

The stack's first deploy is itself a fault: `pulumi up` is SIGKILLed while it creates the
containers; the next `scripts/up.sh` (its repair step, ops/repair.py, then `pulumi up`)
must converge. Then: a worker container killed in the middle of 500 tasks, Postgres and Redis
stopped under load, the results disk filled up, a container removed by hand, and the
secrets/users audit. Already covered elsewhere and not repeated here: schemathesis over
the API, auth and billing-webhook signatures/replays, SSRF incl. redirects and DNS
(tests/service/), a killed worker on a deployed stack and no password in the exported
state (tests/e2e/test_local_deploy.py), deploys under load (tests/e2e/test_zero_downtime.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.repair import REPORT_PREFIX
from tests.e2e.stack import ROOT, docker, remove_leftovers, require_toolchain
from tests.reliability import scenarios
from tests.reliability.abuse import Abuse
from tests.reliability.relstack import (
    Deployed,
    create_stack,
    destroy,
    fill,
    interrupted_up,
    make_small_disk,
    new_id,
    overrides,
    pending_operations,
    release_small_disk,
    report,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

NAME = "rel-p1"
RESULTS_VOLUME = f"{NAME}-app-01-results"
SMALL_DISK_MB = 24


@pytest.fixture(scope="module")
def p1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_toolchain()
    release_small_disk(RESULTS_VOLUME)
    remove_leftovers(NAME)
    stack = create_stack(NAME, tmp_path_factory.mktemp(NAME), overrides(1))
    d = Deployed(stack, 1)
    info: dict[str, Any] = {"d": d}
    try:
        # The results volume is the app host's result disk; give it a small backing store
        # before Pulumi declares it (see make_small_disk) so it can really fill up.
        info["disk"] = Path(make_small_disk(RESULTS_VOLUME, NAME, SMALL_DISK_MB))
        # Killed while it creates Postgres: that create waits for the container to become
        # healthy, so the kill always lands with operations pending.
        postgres_exists = lambda: docker("inspect", d.postgres, check=False).returncode == 0  # noqa: E731
        info["interrupted"] = interrupted_up(d, trigger=postgres_exists)
        info["pending"] = [op["resource"]["urn"].rsplit("::", 1)[-1] for op in pending_operations(d)]
        # what `scripts/up.sh` and `selextract deploy` do: the repair step, then `pulumi up`
        started = time.monotonic()
        info["repair_run"] = subprocess.run(
            [sys.executable, "-m", "ops.repair", NAME],
            cwd=stack.workdir,
            env={**stack.env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        lines = info["repair_run"].stdout.splitlines()
        info["repair"] = next(
            (json.loads(x.removeprefix(REPORT_PREFIX)) for x in lines if x.startswith(REPORT_PREFIX)), {}
        )
        info["up"] = d.pulumi("up", "--yes", "--stack", NAME, "--suppress-progress", check=False)
        info["up_s"] = round(time.monotonic() - started, 1)
        repair_run, up = info["repair_run"], info["up"]
        assert repair_run.returncode == 0 and up.returncode == 0, (
            f"repair exit {repair_run.returncode}: {repair_run.stdout[-2000:]} {repair_run.stderr[-2000:]}\n"
            f"up exit {up.returncode}: {up.stdout[-4000:]} {up.stderr[-2000:]}"
        )
        info["preview"] = d.stack.preview_no_changes()
        d.start_testsite()
        d.wait_ready()
        yield info
    finally:
        release_small_disk(RESULTS_VOLUME)
        left = destroy(d)
        assert left == {"containers": [], "networks": [], "volumes": []}, f"destroy left {left}"


def _run_task(d: Deployed, headers: dict[str, str], urls: list[str], timeout: float = 180) -> dict[str, Any]:
    with d.client() as client:
        created = client.post(
            "/api/v1/tasks",
            headers=headers,
            json={"urls": urls, "extract": {"title": "h1::text"}, "options": {"retries": 1, "timeout": 15}},
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + timeout
        while True:
            task = client.get(f"/api/v1/tasks/{created.json()['id']}", headers=headers).json()
            if task["state"] in scenarios.TERMINAL:
                task["url_errors"] = [(u["url"], u["error_code"], u["error"]) for u in task["urls"] if u["error_code"]]
                return task
            assert time.monotonic() < deadline, f"task still {task['state']} after {timeout} s"
            time.sleep(1)


# --- an interrupted `pulumi up` ---------------------------------------------------------------


def test_interrupted_up_converges_after_the_repair_step(p1: dict[str, Any]) -> None:
    interrupted, repaired, up = p1["interrupted"], p1["repair"], p1["up"]
    report(
        "phase 1",
        f"`pulumi up` SIGKILLed {interrupted['after_s']} s in (with its plugins), "
        f"{len(interrupted['containers'])} containers created, pending: {', '.join(p1['pending'])}",
        f"the next `scripts/up.sh` (repair step, then `pulumi up`) removed the stale lock "
        f"({len(repaired.get('stale_locks', []))}), {len(repaired.get('removed', []))} unrecorded containers, "
        f"imported {repaired.get('imported')}, cleared {repaired.get('cleared')}; `pulumi up` exit {up.returncode} "
        f"after {p1['up_s']} s in all; `preview --expect-no-changes` exit {p1['preview'].returncode}",
        "none (no data existed yet; volumes are adopted, never dropped)",
    )
    assert interrupted["killed"], "pulumi up finished before the kill: nothing was interrupted"
    assert p1["pending"], "the kill left no pending operation"
    assert p1["repair_run"].returncode == 0, p1["repair_run"].stderr[-2000:]
    assert repaired.get("stale_locks"), "the killed run's lock was not found"
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
    assert p1["preview"].returncode == 0, p1["preview"].stdout[-3000:]
    assert len(p1["d"].containers("worker")) == 2 and p1["d"].containers("api")


# --- a worker killed mid-batch (the tests up to its end run while its orphans wait) -------------


@pytest.fixture(scope="module")
def batch(p1: dict[str, Any], background: Any) -> scenarios.BatchRun:
    run = scenarios.start_batch(p1["d"], n=500)
    # meanwhile the phase-4 stack deploys and gets its own batch and kill, when its module runs too
    background.start(4, then=lambda d4: scenarios.start_batch(d4, n=500))
    return run


def test_worker_kill_lands_mid_batch(batch: scenarios.BatchRun) -> None:
    assert batch.killed and batch.in_flight, "the killed worker ran nothing: the fault did not happen mid-task"
    assert batch.killed_at_done < batch.n


LOSE_MESSAGE = """
import sys, redis
from common.config import get_settings
settings = get_settings()
client = redis.Redis.from_url(settings.redis_url.get_secret_value())
removed = 0
for raw in client.lrange(settings.celery_queue, 0, -1):
    if sys.argv[1].encode() in raw:
        removed += client.lrem(settings.celery_queue, 1, raw)
print(removed)
"""


@pytest.fixture(scope="module")
def lost_message(p1: dict[str, Any], batch: scenarios.BatchRun) -> dict[str, Any]:
    """A task whose queue message is gone while its row says queued: what a worker killed
    between taking a message off the queue and claiming the task leaves behind (seen with
    the batch above), reproduced on purpose: the workers stop, a task is submitted, its
    message is taken off the queue, the workers start again."""
    d = p1["d"]
    headers = d.account(f"lost-{new_id()}@reliability.test")
    workers = d.containers("worker")
    docker("stop", "-t", "30", *workers)
    try:
        with d.client() as client:
            created = client.post(
                "/api/v1/tasks", headers=headers, json={"urls": [f"{d.site}/table.html"], "extract": {"t": "h1::text"}}
            )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        removed = int(d.api_python(LOSE_MESSAGE, task_id).strip())
    finally:
        docker("start", *workers)
    return {"task": task_id, "headers": headers, "sent": time.monotonic(), "removed": removed}


def test_lost_queue_message_is_staged(lost_message: dict[str, Any]) -> None:
    assert lost_message["removed"] == 1, "the task's message was not on the queue"


# --- a container removed by hand ------------------------------------------------------------------


def test_refresh_and_up_restore_a_container_removed_by_hand(p1: dict[str, Any], batch: scenarios.BatchRun) -> None:
    """The operator removes the worker container that was just killed; `pulumi refresh`
    notices, `pulumi up` puts a new one in its place (while the batch goes on)."""
    d = p1["d"]
    victim = batch.killed
    docker("rm", "-f", victim)
    plain = d.stack.preview_no_changes()  # without a refresh Pulumi does not see the drift
    refresh = d.pulumi("refresh", "--yes", "--stack", NAME, "--suppress-progress")
    up = d.up()
    after = d.containers("worker")
    preview = d.stack.preview_no_changes()
    report(
        "phase 1",
        f"the killed worker container {victim.removeprefix(NAME + '-')} removed with `docker rm -f`",
        f"`pulumi preview` alone sees {'no drift' if plain.returncode == 0 else 'changes'}; `pulumi refresh` drops it "
        f"from the state, `pulumi up` recreates it under the same name "
        f"({'running' if victim in after else 'missing'}); preview afterwards exit {preview.returncode}",
        "none (workers are stateless)",
    )
    assert refresh.returncode == 0 and up.returncode == 0
    assert victim in after, after
    assert preview.returncode == 0, preview.stdout[-3000:]


# --- secrets and users ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(p1: dict[str, Any]) -> Deployed:
    return p1["d"]


class TestSecretsAndUsers(scenarios.SecretsAndUsers):
    """No generated password in plain text anywhere; no service process as root."""


def test_stateless_exporters_can_run_with_a_read_only_root(p1: dict[str, Any]) -> None:
    d = p1["d"]
    results = {c: scenarios.runs_read_only(d, c) for c in scenarios.stateless_containers(d)}
    assert len(results) == 3 and all(ok for ok, _ in results.values()), results


def test_stateless_exporters_are_deployed_read_only(p1: dict[str, Any]) -> None:
    users = {cu.name: cu for cu in scenarios.container_users(p1["d"])}
    writable = [c for c in scenarios.stateless_containers(p1["d"]) if not users[c].read_only]
    assert not writable, writable


def test_worker_killed_mid_batch_of_500_loses_and_doubles_nothing(
    p1: dict[str, Any], batch: scenarios.BatchRun
) -> None:
    d = p1["d"]
    scenarios.check_batch(d, scenarios.finish_batch(d, batch))


def test_a_lost_queue_message_is_resent_within_minutes(p1: dict[str, Any], lost_message: dict[str, Any]) -> None:
    d = p1["d"]
    # lease grace (60 s) + one reaper interval (30 s) + the run itself
    time.sleep(max(0.0, lost_message["sent"] + 110 - time.monotonic()))
    with d.client() as client:
        task = client.get(f"/api/v1/tasks/{lost_message['task']}", headers=lost_message["headers"]).json()
    waited = round(time.monotonic() - lost_message["sent"])
    report(
        "phase 1",
        "a task's queue message lost (taken off the Redis list; its row says queued), as a worker killed between "
        "receiving and claiming leaves it",
        f"{waited} s later the task is {task['state']} (URL attempts {[u['attempts'] for u in task['urls']]}); "
        "the reaper resends a queued task past the lease grace as soon as the broker holds no message for it",
        "none" if task["state"] == "completed" else "the task waits for the 15-minute resend",
    )
    if task["state"] != "completed":  # let the reaper finish it now, for the tests that follow
        d.sql(f"UPDATE tasks SET enqueued_at = enqueued_at - interval '15 minutes' WHERE id = '{lost_message['task']}'")
    assert task["state"] == "completed", task


# --- Postgres and Redis stopped under load (the tests up to `outage` run while the reaper
# queues what was accepted during the Redis outage) --------------------------------------------


class TestDependencyOutage(scenarios.DependencyOutage):
    """Postgres, then Redis, stopped under a steady submit load (fixtures in conftest.py)."""


# --- bad input on the deployed stack ----------------------------------------------------------


def test_deployed_scraper_refuses_internal_targets(p1: dict[str, Any]) -> None:
    """The deployment's allow-list re-opens the private ranges the test site lives in;
    loopback and link-local (cloud metadata) stay refused, also behind a DNS name or a
    redirect. (The guard itself: tests/service/test_fetch.py.)"""
    d = p1["d"]
    headers = d.account(f"ssrf-{new_id()}@reliability.test")
    with d.client() as client:
        literal = {
            url: client.post(
                "/api/v1/tasks", headers=headers, json={"urls": [url], "extract": {"t": "title::text"}}
            ).status_code
            for url in ("http://127.0.0.1:8000/health", "http://169.254.169.254/latest/meta-data/", "http://[::1]/")
        }
    indirect = [
        "http://localhost:8000/health",
        f"{d.site}/redirect?to=http://169.254.169.254/latest/meta-data/",
        f"{d.site}/redirect?to=http://127.0.0.1:8000/health",
        f"{d.site}/products.html",
    ]
    task = _run_task(d, headers, indirect)
    with d.client() as client:
        detail = client.get(f"/api/v1/tasks/{task['id']}", headers=headers).json()
    codes = {u["url"]: u["error_code"] for u in detail["urls"]}
    report(
        "phase 1",
        "tasks aimed at 127.0.0.1, ::1, 169.254.169.254, `localhost` and redirects into them (allow-list: RFC 1918)",
        f"literal addresses refused at submission ({sorted(set(literal.values()))}); DNS name and redirects fail "
        f"with {sorted({c for c in codes.values() if c})}, never fetched; the allowed test site works",
        "n/a",
    )
    assert set(literal.values()) == {422}, literal
    assert [codes[u] for u in indirect] == ["forbidden_address"] * 3 + [None], codes


def test_deployed_api_keeps_accounts_apart(p1: dict[str, Any]) -> None:
    """Through the deployed entry: no key, a bogus key, a revoked key and another
    account's key can neither read nor change a task; an unsigned billing webhook changes
    nothing. (Full coverage: tests/service/test_auth.py, test_tasks_api.py, test_billing.py.)"""
    d = p1["d"]
    owner = d.account(f"owner-{new_id()}@reliability.test")
    other = d.account(f"other-{new_id()}@reliability.test")
    task = _run_task(d, owner, [f"{d.site}/products.html"])
    with d.client() as client:
        created = client.post("/api/v1/keys", headers=owner, json={"name": "to-revoke"})
        assert created.status_code in (200, 201), created.text
        revoked = {"Authorization": f"Bearer {created.json()['key']}"}
        assert client.delete(f"/api/v1/keys/{created.json()['id']}", headers=owner).status_code == 204
        path = f"/api/v1/tasks/{task['id']}"
        answers: dict[str, list[int]] = {}
        for who, headers in (("none", {}), ("bogus", {"Authorization": "Bearer sx_nope"}), ("revoked", revoked),
                             ("other", other)):  # fmt: skip
            answers[who] = [
                client.get(path, headers=headers).status_code,
                client.get(path + "/results", headers=headers).status_code,
                client.post(path + "/cancel", headers=headers).status_code,
                client.delete(path, headers=headers).status_code,
            ]
        events_before = d.sql("SELECT count(*) FROM webhook_events")[0][0]
        hook = client.post(
            "/api/v1/billing/lemonsqueezy",
            headers={"X-Signature": "0" * 64, "Content-Type": "application/json"},
            content=json.dumps({"meta": {"event_name": "subscription_created"}, "data": {"id": "1"}}),
        )
        events_after = d.sql("SELECT count(*) FROM webhook_events")[0][0]
        still = client.get(path, headers=owner).json()
    report(
        "phase 1",
        "no key / bogus key / revoked key / another account's key on a task; billing webhook with a bad signature",
        f"answers (GET, results, cancel, DELETE): {answers}; webhook {hook.status_code}, "
        f"webhook_events {events_before}→{events_after}; the task unchanged ({still['state']})",
        "none",
    )
    assert answers["none"] == [401] * 4 and answers["bogus"] == [401] * 4 and answers["revoked"] == [401] * 4
    assert answers["other"] == [404] * 4
    assert hook.status_code in (401, 503) and events_before == events_after
    assert still["state"] == "completed" and still["succeeded_count"] == 1


def test_dependency_outage_loses_no_accepted_task(p1: dict[str, Any], outage: scenarios.OutageRun) -> None:
    scenarios.check_outage_no_loss(p1["d"], outage)


# --- the results disk fills up ---------------------------------------------------------------


def _while_full(d: Deployed, headers: dict[str, str], client: Any, filler: Path, url: str, baseline: Any,
                disk: Path) -> dict[str, Any]:  # fmt: skip
    site = d.site
    out: dict[str, Any] = {"filled_bytes": fill(filler)}
    out["free_bytes"] = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    started = time.monotonic()
    out["full"] = _run_task(d, headers, [f"{site}/pages/page-1.html", f"{site}/pages/page-2.html"])
    out["full_s"] = round(time.monotonic() - started, 1)
    out["full_detail"] = client.get(f"/api/v1/tasks/{out['full']['id']}", headers=headers).json()
    out["ready_when_full"] = client.get("/health/ready").status_code
    out["baseline_intact"] = client.get(url, headers=headers).json() == baseline
    out["partial_files"] = [str(p) for p in disk.rglob(".tmp-*")]
    files = [p for p in disk.rglob("*.json")]
    unreadable = []
    for p in files:
        try:
            json.loads(p.read_bytes())
        except ValueError:
            unreadable.append(str(p))
    out["result_files"], out["unreadable"] = len(files), unreadable
    out["succeeded_urls"] = int(d.sql("SELECT count(*) FROM task_urls WHERE state = 'succeeded'")[0][0])
    out["ledger"] = d.sql(f"SELECT kind, credits FROM usage_ledger WHERE task_id = '{out['full']['id']}' ORDER BY kind")
    return out


@pytest.fixture(scope="module")
def full_disk(p1: dict[str, Any]) -> dict[str, Any]:
    d, disk = p1["d"], p1["disk"]
    worker = d.containers("worker")[0]
    df = docker("exec", worker, "df", "-k", "/data/results").stdout.splitlines()[-1].split()
    assert df[0] == "tmpfs" and int(df[1]) <= SMALL_DISK_MB * 1024, f"the small disk is not what workers see: {df}"
    headers = d.account(f"disk-{new_id()}@reliability.test")
    site = d.site
    out: dict[str, Any] = {}
    with d.client() as client:
        before = _run_task(d, headers, [f"{site}/products.html", f"{site}/table.html"])
        assert before["state"] == "completed", before["url_errors"]["url_errors"]
        url = f"/api/v1/tasks/{before['id']}/results?format=json"
        baseline = client.get(url, headers=headers).json()
        filler = disk / "reliability-filler"
        try:
            out.update(_while_full(d, headers, client, filler, url, baseline, disk))
        finally:
            filler.unlink(missing_ok=True)
        out["after"] = _run_task(d, headers, [f"{site}/pages/page-1.html", f"{site}/pages/page-2.html"])
    errors = {(u["error_code"], (u["error"] or "")[:120]) for u in out["full_detail"]["urls"]}
    report(
        "phase 1",
        f"result disk (app-01's results volume, {SMALL_DISK_MB} MB) filled to {out['free_bytes']} bytes free",
        f"new task {out['full']['state']} in {out['full_s']} s, URL errors {sorted(errors)}, credits refunded "
        f"({out['ledger']}); /health/ready {out['ready_when_full']}; earlier results intact: "
        f"{out['baseline_intact']}; {len(out['partial_files'])} partial files; {out['result_files']} result files "
        f"all valid JSON = {out['succeeded_urls']} succeeded URLs; after freeing space: {out['after']['state']}",
        "none" if out["baseline_intact"] and not out["unreadable"] else "results damaged",
    )
    return out


def test_full_result_disk_corrupts_nothing_and_recovers(full_disk: dict[str, Any]) -> None:
    assert full_disk["free_bytes"] < 64 * 1024, full_disk["free_bytes"]
    full = full_disk["full_detail"]
    assert full["state"] == "failed" and full["succeeded_count"] == 0, full
    assert all("No space left on device" in (u["error"] or "") for u in full["urls"]), full["urls"]
    assert full["credits_charged"] == 0 and full_disk["ledger"] == [["charge", "-2"], ["refund", "2"]]
    assert full_disk["baseline_intact"]
    assert full_disk["partial_files"] == [] and full_disk["unreadable"] == []
    assert full_disk["result_files"] == full_disk["succeeded_urls"]
    assert full_disk["after"]["state"] == "completed" and full_disk["after"]["succeeded_count"] == 2


def test_full_result_disk_is_reported_as_a_storage_error(full_disk: dict[str, Any]) -> None:
    codes = {u["error_code"] for u in full_disk["full_detail"]["urls"]}
    assert codes == {"storage_error"}, codes


# --- one client against everyone (issue 17's high findings; test_abuse.py skips when this runs) --


class TestAbuse(Abuse):
    """A storm of made-up methods, a gzip-bomb webhook receiver, a catastrophic regex and a
    pathological page, one site's robots.txt spelled 1,000 ways (checks in abuse.py)."""
