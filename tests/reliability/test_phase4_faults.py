"""Faults on a deployed phase-4 stack (lb-01: HAProxy; api-01/02; worker-01/02; db-01;
redis-01; minio-01..04: the object store, results in its task-results bucket), on this
machine's Docker engine.

The local object store is SeaweedFS (MinIO cannot be built here; infra/specs/objectstore.py):
node 1 runs master + filer + S3 gateway + a volume server, nodes 2-4 volume servers, with
`-master.defaultReplication=001` (every object on two different servers). So one volume
node down must change nothing for reads and writes; two down lose reads of exactly the
objects whose both copies were there; node 1 down takes the S3 gateway with it (a single
point of failure of the local simulation only: MinIO on Hetzner has no such node).

Last, the stack is backed up with the ops CLI, destroyed, deployed afresh and restored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.specs.objectstore import backup_access_key
from tests.e2e.stack import docker, remove_leftovers, require_toolchain
from tests.reliability import scenarios
from tests.reliability.relstack import (
    Deployed,
    destroy,
    generated_passwords,
    new_id,
    object_fingerprint,
    report,
    selextract_cli,
    table_fingerprint,
    warm_up_results,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

NAME = "rel-p4"
NODES = [f"{NAME}-minio-{i:02d}-objectstore-1" for i in range(1, 5)]
BUCKET = "task-results"


@pytest.fixture(scope="module")
def p4(background: Any) -> Iterator[dict[str, Any]]:
    """Deployed in the background while the phase-1 module ran, when both run."""
    require_toolchain()
    d, up_s, error, batch = background.get(4)
    try:
        if error is not None:
            raise error
        yield {"d": d, "up_s": up_s, "backups": d.stack.workdir / "backups", "batch": batch}
    finally:
        if d is not None:
            left = destroy(d)
            assert left == {"containers": [], "networks": [], "volumes": []}, f"destroy left {left}"
        else:
            remove_leftovers(NAME)


def _run_task(d: Deployed, headers: dict[str, str], urls: list[str], timeout: float = 180, **options: Any) -> dict:
    with d.client() as client:
        created = client.post(
            "/api/v1/tasks",
            headers=headers,
            json={"urls": urls, "extract": {"title": "h1::text"}, "options": {"timeout": 15, **options}},
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


# --- the object store has room for what the stack writes ---------------------------------------

# stdin: the backup login "ACCESS SECRET" (only ops holds it; the app's key gets AccessDenied on
# `backups`, infra/specs/objectstore.py)
BUCKETS = """
import json, sys
import boto3
from common.storage import get_storage
s = get_storage()
access, secret = sys.stdin.read().split()
backup = boto3.client("s3", endpoint_url=s.client.meta.endpoint_url, region_name=s.client.meta.region_name,
                      aws_access_key_id=access, aws_secret_access_key=secret, config=s.client.meta.config)
failed = {}
for bucket, client in (("task-results", s.client), ("logs", s.client), ("backups", backup)):
    try:
        client.put_object(Bucket=bucket, Key="reliability/probe.json", Body=b"{}")
    except Exception as exc:
        failed[bucket] = f"{type(exc).__name__}: {exc}"[:200]
try:
    s.client.put_object(Bucket="backups", Key="reliability/app-probe.json", Body=b"{}")
    failed["backups (app key)"] = "the app's key could write"
except Exception as exc:
    if getattr(exc, "response", {}).get("Error", {}).get("Code") != "AccessDenied":
        failed["backups (app key)"] = f"{type(exc).__name__}: {exc}"[:200]
print(json.dumps(failed))
"""


def test_every_bucket_accepts_writes(p4: dict[str, Any]) -> None:
    d = p4["d"]
    secret = d.stack.pulumi("stack", "output", "--stack", d.stack.name, "--show-secrets", "objectStoreBackupKey")
    login = backup_access_key(d.stack.config.get("selextract:objectStore", {}).get("accessKey", "selextract"))
    failed = json.loads(d.api_python(BUCKETS, stdin=f"{login} {secret.stdout.strip()}\n"))
    report(
        "phase 4",
        "one object written to each bucket the stack creates (task-results and logs with the app's key, "
        "backups with the backup key; the app's key is refused there)",
        "all written" if not failed else f"refused: {failed}",
        "n/a" if not failed else "writes to those buckets fail (backups not copied off the host)",
    )
    assert failed == {}, failed


# --- a worker killed mid-batch (the tests up to its end run while its orphans wait) -------------


@pytest.fixture(scope="module")
def batch(p4: dict[str, Any]) -> scenarios.BatchRun:
    """Started in the background right after the deploy, when the phase-1 module ran first."""
    if isinstance(p4["batch"], BaseException):
        raise p4["batch"]
    return p4["batch"] or scenarios.start_batch(p4["d"], n=500)


def test_worker_kill_lands_mid_batch(batch: scenarios.BatchRun) -> None:
    assert batch.killed and batch.in_flight, "the killed worker ran nothing: the fault did not happen mid-task"
    assert batch.killed_at_done < batch.n


# --- secrets and users ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(p4: dict[str, Any]) -> Deployed:
    return p4["d"]


class TestSecretsAndUsers(scenarios.SecretsAndUsers):
    """No generated password in plain text anywhere; no service process as root."""


def test_worker_killed_mid_batch_of_500_loses_and_doubles_nothing(
    p4: dict[str, Any], batch: scenarios.BatchRun
) -> None:
    d = p4["d"]
    scenarios.check_batch(d, scenarios.finish_batch(d, batch))


# --- Postgres and Redis stopped under load (the tests up to `outage` run while the reaper
# queues what was accepted during the Redis outage) --------------------------------------------


class TestDependencyOutage(scenarios.DependencyOutage):
    """Postgres, then Redis, stopped under a steady submit load (fixtures in conftest.py)."""


def test_dependency_outage_loses_no_accepted_task(p4: dict[str, Any], outage: scenarios.OutageRun) -> None:
    scenarios.check_outage_no_loss(p4["d"], outage)


# --- object-store nodes down ------------------------------------------------------------------

PROBE = """
import json, sys
from common.storage import get_storage
s = get_storage()
cmd, keys = sys.argv[1], json.load(sys.stdin)
failed = {}
for key in keys:
    body = json.dumps({"key": key, "pad": "x" * 300}).encode()
    try:
        if cmd == "put":
            s.put(key, body, "application/json")
        else:
            got = s.get(key)
            assert got == body or key.startswith("tasks/"), "content differs"
            json.loads(got)
    except Exception as exc:
        failed[key] = f"{type(exc).__name__}: {exc}"[:160]
print(json.dumps(failed))
"""

LAYOUT = """
import json, sys, urllib.request
master, filer, bucket = sys.argv[1:4]
keys = json.load(sys.stdin)
def get(url):
    return json.load(urllib.request.urlopen(url, timeout=10))
volumes = {}
status = get(f"http://{master}:9333/vol/status")
for dc in status["Volumes"]["DataCenters"].values():
    for rack in dc.values():
        for node, vols in rack.items():
            for v in vols or []:
                volumes.setdefault(str(v["Id"]), []).append(node.split(":")[0])
objects = {}
for key in keys:
    meta = get(f"http://{filer}:8888/buckets/{bucket}/{key}?metadata=true")
    objects[key] = sorted({str(c["fid"]["volume_id"]) for c in meta.get("chunks") or []})
print(json.dumps({"volumes": {k: sorted(v) for k, v in volumes.items()}, "objects": objects}))
"""


def _probe(d: Deployed, cmd: str, keys: list[str]) -> dict[str, str]:
    return json.loads(d.api_python(PROBE, cmd, stdin=json.dumps(keys), timeout=300))


def _layout(d: Deployed, keys: list[str]) -> dict[str, Any]:
    return json.loads(d.api_python(LAYOUT, NODES[0], NODES[0], BUCKET, stdin=json.dumps(keys)))


def _wait_nodes(d: Deployed, count: int, timeout: float = 60) -> float:
    """Until the master lists `count` volume servers."""
    code = (
        "import json, sys, urllib.request; s = json.load(urllib.request.urlopen("
        f"'http://{NODES[0]}:9333/dir/status', timeout=5)); "
        "print(sum(len(r['DataNodes']) for dc in s['Topology']['DataCenters'] for r in dc['Racks']))"
    )
    start = time.monotonic()
    while True:
        try:
            if int(d.api_python(code, timeout=30).strip()) == count:
                return round(time.monotonic() - start, 1)
        except (AssertionError, ValueError):
            pass
        assert time.monotonic() - start < timeout, f"the master never listed {count} volume servers"
        time.sleep(1)


def _download(client: httpx.Client, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    """A result download: status, and whether the body arrived whole (valid JSON)."""
    try:
        response = client.get(f"/api/v1/tasks/{task_id}/results?format=json", headers=headers)
    except httpx.HTTPError as exc:  # the body broke off after a 200
        return {"status": "broken after headers", "whole": False, "error": f"{type(exc).__name__}"}
    try:
        body = response.json()
    except ValueError:
        return {"status": response.status_code, "whole": False}
    return {"status": response.status_code, "whole": True, "body": body}


@pytest.fixture(scope="module")
def object_store(p4: dict[str, Any]) -> dict[str, Any]:
    d = p4["d"]
    headers = d.account(f"store-{new_id()}@reliability.test")
    site = d.site
    out: dict[str, Any] = {}
    before = _run_task(d, headers, [f"{site}/products/product-{i:02d}.html" for i in range(1, 11)])
    assert before["state"] == "completed", before["url_errors"]
    task_keys = [f"tasks/{before['id']}/pages/{i:05d}.json" for i in range(10)]
    probe_keys = [f"reliability/{new_id()}/{i:03d}.json" for i in range(60)]
    assert _probe(d, "put", probe_keys) == {}
    keys = task_keys + probe_keys
    with d.client() as client:
        baseline = _download(client, headers, before["id"])
        assert baseline["status"] == 200 and baseline["whole"]

        # --- one volume node (node 2) down ---
        docker("stop", "-t", "10", NODES[1])
        one: dict[str, Any] = {"read_failures": _probe(d, "get", keys)}
        fresh = [f"reliability/{new_id()}/one-down-{i:03d}.json" for i in range(30)]
        one["write_failures"] = _probe(d, "put", fresh)
        one["task"] = _run_task(d, headers, [f"{site}/pages/page-{i}.html" for i in range(1, 6)])
        one["download"] = _download(client, headers, one["task"]["id"])
        one["old_download"] = _download(client, headers, before["id"])
        docker("start", NODES[1])
        one["rejoin_s"] = _wait_nodes(d, 4)
        keys += fresh + [f"tasks/{one['task']['id']}/pages/{i:05d}.json" for i in range(5)]
        out["one"] = one

        # --- two volume nodes down: the pair holding every copy of some volume, if any ---
        layout = _layout(d, keys)
        volume_nodes = [n for n in NODES[1:]]
        pair = next(
            (sorted(holders) for holders in layout["volumes"].values() if set(holders) <= set(volume_nodes)
             and len(holders) == 2),
            volume_nodes[:2],
        )  # fmt: skip
        expected_lost = sorted(
            k
            for k, vols in layout["objects"].items()
            if vols and all(set(layout["volumes"][v]) <= set(pair) for v in vols)
        )
        docker("stop", "-t", "10", *pair)
        two: dict[str, Any] = {"pair": pair, "layout": layout, "expected_lost": expected_lost}
        two["read_failures"] = _probe(d, "get", keys)
        two["write_failures"] = _probe(d, "put", [f"reliability/{new_id()}/two-down-{i:03d}.json" for i in range(10)])
        lost_tasks = sorted({k.split("/")[1] for k in expected_lost if k.startswith("tasks/")})
        two["download_of_lost"] = _download(client, headers, lost_tasks[0]) if lost_tasks else None
        two["ready"] = client.get("/health/ready").status_code
        docker("start", *pair)
        two["rejoin_s"] = _wait_nodes(d, 4)
        two["after_failures"] = _probe(d, "get", keys)
        out["two"] = two

        # --- node 1 (master + filer + S3 gateway) down ---
        docker("stop", "-t", "10", NODES[0])
        gw: dict[str, Any] = {"read_failures": len(_probe(d, "get", keys[:5]))}
        ready = client.get("/health/ready")
        gw["ready"] = (ready.status_code, ready.json().get("failing"))
        gw["download"] = _download(client, headers, before["id"])
        created = client.post(
            "/api/v1/tasks",
            headers=headers,
            json={"urls": [f"{site}/table.html"], "extract": {"title": "h1::text"}, "options": {"retries": 4}},
        )
        gw["submit"] = created.status_code
        time.sleep(8)
        gw["task_while_down"] = client.get(f"/api/v1/tasks/{created.json()['id']}", headers=headers).json()
        docker("start", NODES[0])
        started = time.monotonic()
        _wait_nodes(d, 4, timeout=120)
        d.wait_ready(timeout=120)
        gw["recovered_s"] = round(time.monotonic() - started, 1)
        gw["after_failures"] = _probe(d, "get", keys)
        deadline = time.monotonic() + 180
        while True:
            task = client.get(f"/api/v1/tasks/{created.json()['id']}", headers=headers).json()
            if task["state"] in scenarios.TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(2)
        gw["task_after"] = task
        gw["download_after"] = _download(client, headers, before["id"])
        out["gateway"] = gw
    out["keys"], out["baseline"] = keys, baseline
    return out


def test_one_volume_node_down_keeps_reads_and_writes(object_store: dict[str, Any]) -> None:
    one = object_store["one"]
    report(
        "phase 4",
        "object store: volume node 2 of 4 stopped",
        f"{len(object_store['keys']) - 35} earlier objects read: {len(one['read_failures'])} failures; 30 new "
        f"objects written: {len(one['write_failures'])} failures; a 5-URL task {one['task']['state']}, its results "
        f"and an earlier task's downloaded whole; node rejoined in {one['rejoin_s']} s",
        "none",
    )
    assert one["read_failures"] == {} and one["write_failures"] == {}, one
    assert one["task"]["state"] == "completed" and one["task"]["succeeded_count"] == 5
    assert one["download"]["status"] == 200 and one["download"]["whole"]
    assert one["old_download"]["body"] == object_store["baseline"]["body"]


def test_two_volume_nodes_down_lose_only_objects_with_both_copies_there(object_store: dict[str, Any]) -> None:
    two = object_store["two"]
    failed = sorted(two["read_failures"])
    total = len(object_store["keys"])
    report(
        "phase 4",
        f"object store: volume nodes {', '.join(n.split('-')[3] for n in two['pair'])} stopped together "
        f"(volume → servers: {two['layout']['volumes']})",
        f"reads: {total - len(failed)} of {total} objects readable; the {len(failed)} unreadable are exactly those "
        f"whose two copies were both on the stopped nodes (predicted {len(two['expected_lost'])}); "
        f"writes: {len(two['write_failures'])} of 10 refused"
        + (" (no volume with two live servers left to write to)" if two["write_failures"] else "")
        + "; result download of an affected task: "
        + f"{(two['download_of_lost'] or {}).get('status')}; after restart all readable "
        f"({len(two['after_failures'])} failures)",
        f"reads of {len(failed)} objects unavailable while down; none lost",
    )
    assert failed == two["expected_lost"], {"unexpected": sorted(set(failed) - set(two["expected_lost"]))[:5],
                                            "missing": sorted(set(two["expected_lost"]) - set(failed))[:5]}  # fmt: skip
    assert two["after_failures"] == {}, two["after_failures"]


def test_gateway_node_down_is_the_local_single_point_of_failure_and_recovers(object_store: dict[str, Any]) -> None:
    gw = object_store["gateway"]
    report(
        "phase 4",
        "object store: node 1 (SeaweedFS master + filer + S3 gateway) stopped",
        f"every S3 call fails ({gw['read_failures']}/5 reads); /health/ready {gw['ready']}; a result download "
        f"answered {gw['download']['status']} (whole body: {gw['download']['whole']}); a task submitted meanwhile was "
        f"{gw['submit']} accepted, {gw['task_while_down']['state']} while down, {gw['task_after']['state']} after "
        f"restart; service ready {gw['recovered_s']} s after node 1 restarted; all objects readable again",
        "none (unavailable while down: a single point of failure of the local SeaweedFS layout only)",
    )
    assert gw["read_failures"] == 5
    assert gw["ready"] == (503, ["storage"])
    assert gw["submit"] == 201 and gw["task_after"]["state"] == "completed", gw["task_after"]
    assert gw["after_failures"] == {}
    assert gw["download_after"]["body"] == object_store["baseline"]["body"]


def test_result_download_answers_503_while_storage_cannot_serve(object_store: dict[str, Any]) -> None:
    downloads = [object_store["gateway"]["download"], object_store["two"]["download_of_lost"]]
    assert [x["status"] for x in downloads if x] == [503] * len([x for x in downloads if x]), downloads


# --- backup → destroy → restore into a fresh stack ------------------------------------------------


VOLATILE_KEY = "reliability:volatile"


@pytest.fixture(scope="module")
def restored(p4: dict[str, Any]) -> dict[str, Any]:
    """`selextract backup create` → `backup verify` → `pulumi destroy` → a fresh `pulumi up`
    (new passwords) → `selextract restore latest`, with fingerprints of every table and
    every result object taken right before the backup and right after the restore."""
    d, backups = p4["d"], Path(p4["backups"])
    out: dict[str, Any] = {}
    headers = d.account(f"backup-{new_id()}@reliability.test")
    task = _run_task(d, headers, [f"{d.site}/products.html", f"{d.site}/table.html"])
    with d.client() as client:
        out["before_download"] = client.get(f"/api/v1/tasks/{task['id']}/results?format=json", headers=headers).json()
    # A key with a TTL, as the rate limiter and the reaper lock keep all the time.
    docker("exec", d.redis, "sh", "-c", f'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning SET {VOLATILE_KEY} 1 EX 4')
    # No API call between the fingerprint and the backup (API calls touch api_keys.last_used_at).
    out["rows_before"], out["objects_before"] = table_fingerprint(d), object_fingerprint(d)
    out["created"] = selextract_cli(d, backups, "backup", "create", "--no-prune")
    time.sleep(5)  # the volatile key expires
    out["verified"] = selextract_cli(d, backups, "backup", "verify", "latest", check=False)
    passwords_before = generated_passwords(d)

    out["destroy_left"] = destroy(d)
    started = time.monotonic()
    d.up()
    warm_up_results(d)
    d.start_testsite()
    d.wait_ready()
    out["redeploy_s"] = round(time.monotonic() - started, 1)
    out["fresh_rows"] = table_fingerprint(d)
    out["fresh_passwords"] = generated_passwords(d) != passwords_before

    out["restored"] = selextract_cli(d, backups, "restore", "latest", "--yes", check=False)
    out["rows_after"], out["objects_after"] = table_fingerprint(d), object_fingerprint(d)
    with d.client() as client:
        out["after_download"] = client.get(f"/api/v1/tasks/{task['id']}/results?format=json", headers=headers).json()
    out["again"] = _run_task(d, headers, [f"{d.site}/pages/page-3.html"])
    rows = sum(n for n, _ in out["rows_before"].values())
    fresh_total = sum(n for n, _ in out["fresh_rows"].values())
    created, verified, restored = out["created"], out["verified"], out["restored"]
    failing = [f"{c['name']}: {c['detail']}" for r in (verified, restored) for c in r.get("checks", []) if not c["ok"]]
    report(
        "phase 4",
        "`selextract backup create` → `backup verify` → `pulumi destroy` → fresh `pulumi up` (new passwords) → "
        "`selextract restore latest`",
        f"backup {created['id']} ({created['kind']}, {sum(c['bytes'] for c in created['components'].values())} "
        f"bytes); destroy left {out['destroy_left']}; fresh stack ({fresh_total} rows) ready in "
        f"{out['redeploy_s']} s; after restore {rows} rows in {len(out['rows_before'])} tables and "
        f"{len(out['objects_before'])} objects identical (md5 per table and per object); the old API key reads "
        f"the old task's results; a new task {out['again']['state']}; verify/restore reports "
        f"ok={verified.get('ok')}/{restored.get('ok')} ({'; '.join(failing) or 'all checks ok'})",
        "none" if out["rows_after"] == out["rows_before"] and out["objects_after"] == out["objects_before"] else "yes",
    )
    return out


def test_backup_destroy_restore_gives_the_same_rows_and_objects(restored: dict[str, Any]) -> None:
    r = restored
    assert r["destroy_left"] == {"containers": [], "networks": [], "volumes": []}, r["destroy_left"]
    assert r["fresh_passwords"], "not a fresh stack: same generated passwords"
    before, after = r["rows_before"], r["rows_after"]
    assert after == before, {t: (before.get(t), after.get(t)) for t in before if before.get(t) != after.get(t)}
    assert r["objects_after"] == r["objects_before"], (len(r["objects_before"]), len(r["objects_after"]))
    assert r["after_download"] == r["before_download"]
    assert r["again"]["state"] == "completed"
    checks = {c["name"]: c["ok"] for x in (r["verified"], r["restored"]) for c in x.get("checks", [])}
    assert checks.get("database restore") and checks.get("database") and checks.get("results"), checks


def test_backup_verify_and_restore_report_ok(restored: dict[str, Any]) -> None:
    assert restored["verified"].get("ok") is True, restored["verified"]
    assert restored["restored"].get("ok") is True, restored["restored"]
