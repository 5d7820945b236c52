"""One client against everyone (issue 17, the four high findings) on a deployed stack: a storm
of made-up HTTP methods, a gzip-bomb webhook receiver, a catastrophic regex and a
pathological page, and one site's robots.txt spelled 1,000 ways.

The checks are the mixin `Abuse`; a module subclasses it as `Test…` on a stack it deployed
(`test_phase1_faults.py` on rel-p1, or `test_abuse.py` alone). Hostile servers (the webhook
receiver, the site with a 3 MiB robots.txt and a deeply nested page) run in one container on
the stack's network, from the test site's image (`ABUSE_SERVER` below). Traffic from the
host goes only to 127.0.0.1 (the stack's published entry)."""

from __future__ import annotations

import json
import random
import re
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import TESTSITE_IMAGE, docker
from tests.reliability.relstack import Deployed, new_id, report

# --- the hostile server ----------------------------------------------------------------------

ABUSE_SERVER = r'''
import re, struct, sys, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = sys.argv[1]
LOG = open("/tmp/abuse.log", "a", buffering=1)
# 1 GiB of zeros as gzip (about 1 MiB on the wire): one fully flushed deflate block of 1 MiB
# repeated 1,024 times, with the gzip header and trailer written here (fast to build)
chunk = bytes(1 << 20)
raw = zlib.compressobj(9, zlib.DEFLATED, -15)
block = raw.compress(chunk) + raw.flush(zlib.Z_FULL_FLUSH)
crc = 0
for _ in range(1024):
    crc = zlib.crc32(chunk, crc)
BOMB = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + block * 1024 + raw.flush() + struct.pack("<II", crc, 1 << 30)
# 3 MiB of robots.txt (what a crawler reads of it: 500 KiB, RFC 9309)
lines = ["User-agent: *", "Disallow: /private/"]
while len(lines) < 80_000:
    lines.append(f"Disallow: /archive/{len(lines):08d}/{zlib.crc32(str(len(lines)).encode()):08x}/")
ROBOTS = ("\n".join(lines) + "\n").encode()
DEPTH = 2000
DEEP = ("<html><head><title>deep</title></head><body>" + "<div>" * DEPTH + "x" + "</div>" * DEPTH
        + "</body></html>").encode()


def spelling(i: int) -> str:
    """The i-th spelling of this host: user info and letter case vary, the origin does not."""
    host = "".join(c.upper() if c.isalpha() and (i >> k) & 1 else c for k, c in enumerate(HOST))
    return f"http://u{i}:pw{i}@{host}:8080/page/{i}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code, body, ctype="text/html; charset=utf-8", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def do_GET(self):
        LOG.write(f"GET {self.path}\n")
        path = self.path.split("?")[0]
        if path == "/ping":
            self._send(200, b"ok", "text/plain")
        elif path == "/robots.txt":
            self._send(200, ROBOTS, "text/plain")
        elif path == "/deep":
            self._send(200, DEEP)
        elif m := re.fullmatch(r"/go/(\d+)", path):
            self.send_response(302)
            self.send_header("Location", spelling(int(m[1])))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif m := re.fullmatch(r"/page/(\d+)", path):
            self._send(200, f"<html><body><h1>Page {m[1]}</h1></body></html>".encode())
        else:
            self._send(404, b"no")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        LOG.write(f"POST {self.path}\n")
        m = re.fullmatch(r"/hook/(\d{3})", self.path)
        code = int(m[1]) if m else 404
        # a gzip bomb whatever the client asked for (it sends Accept-Encoding: identity)
        self._send(code, BOMB, "application/json", [("Content-Encoding", "gzip")])


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
LOG.write(f"ready bomb={len(BOMB)} robots={len(ROBOTS)} deep={len(DEEP)}\n")
server.serve_forever()
'''


class AbuseServer:
    """The hostile server in a container on the stack's network (named `<stack>-abuse`)."""

    def __init__(self, d: Deployed) -> None:
        self.name = f"{d.name}-abuse"
        self.url = f"http://{self.name}:8080"

    def start(self, d: Deployed, timeout: float = 60) -> AbuseServer:
        docker("rm", "-f", self.name, check=False)
        docker(
            "run", "-d", "--name", self.name, "--network", f"{d.name}-net",
            "--label", f"selextract.stack={d.name}", "--entrypoint", "python3", TESTSITE_IMAGE,
            "-c", ABUSE_SERVER, self.name,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.log().startswith("ready"):
            state = docker("inspect", "-f", "{{.State.Status}}", self.name, check=False).stdout.strip()
            assert state == "running" and time.monotonic() < deadline, (
                f"{self.name} did not start ({state}): {docker('logs', self.name, check=False).stderr[-2000:]}"
            )
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def log(self) -> str:
        return docker("exec", self.name, "cat", "/tmp/abuse.log", check=False).stdout

    def requests(self) -> Counter[str]:
        """'GET /robots.txt', 'POST /hook/500', … -> how many were received."""
        return Counter(re.sub(r"^(GET /(?:go|page))/\d+$", r"\1/n", line) for line in self.log().splitlines()[1:])


# --- probes ------------------------------------------------------------------------------------


def _cgroup_dir(container_id: str) -> tuple[Path, int] | None:
    """The container's memory cgroup and its version (1 or 2), as the host sees it."""
    for path, version in (
        (Path(f"/sys/fs/cgroup/memory/docker/{container_id}"), 1),
        (Path(f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope"), 1),
        (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope"), 2),
        (Path(f"/sys/fs/cgroup/docker/{container_id}"), 2),
    ):
        if path.is_dir():
            return path, version
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # gone meanwhile (a process), or not readable
        return ""


def oom_kills_and_limit(container_id: str) -> dict[str, int]:
    """The kernel's OOM kills in the container's memory cgroup and its limit (bytes)."""
    found = _cgroup_dir(container_id)
    if found is None:
        return {}
    path, version = found
    events, limit = ("memory.oom_control", "memory.limit_in_bytes") if version == 1 else ("memory.events", "memory.max")
    kills = re.search(r"oom_kill (\d+)", _read(path / events))
    size = _read(path / limit).strip()
    return {"oom_kills": int(kills[1]) if kills else 0, "limit": int(size) if size.isdigit() else 0}


def peak_rss(container: str) -> dict[int, int]:
    """host pid -> peak resident memory (VmHWM, KiB) of each process in the container: what a
    body inflated in memory would raise (the cgroup's own peak also counts page cache)."""
    out = {}
    for line in docker("top", container, "-eo", "pid").stdout.splitlines()[1:]:
        hwm = re.search(r"VmHWM:\s+(\d+)", _read(Path(f"/proc/{line.strip()}/status")))
        if hwm:
            out[int(line)] = int(hwm[1])
    return out


def worker_state(d: Deployed) -> dict[str, dict[str, Any]]:
    """Per worker container: restarts, start time, OOM kills, memory limit, peak RSS per process."""
    out: dict[str, dict[str, Any]] = {}
    for name in d.containers("worker"):
        cid, restarts, started = docker(
            "inspect", "-f", "{{.Id}} {{.RestartCount}} {{.State.StartedAt}}", name
        ).stdout.split()
        out[name] = {
            "restarts": int(restarts),
            "started": started,
            "hwm": peak_rss(name),
            **oom_kills_and_limit(cid),
        }
    return out


def rss_rise_mib(before: dict[str, Any], after: dict[str, Any]) -> int:
    """The largest rise of one process's peak RSS between two `worker_state`s of a container,
    in MiB; a process started meanwhile (a recycled child, a respawned extraction helper) is
    measured against the largest peak the container's processes had before."""
    largest = max(before["hwm"].values(), default=0)
    return max((kib - before["hwm"].get(pid, largest) for pid, kib in after["hwm"].items()), default=0) >> 10


METRICS = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode())"
LATENCY = "selextract_http_request_duration_seconds"


def api_metrics(d: Deployed) -> dict[str, Any]:
    """What each API container's /metrics holds of the request metric, read inside it (the
    entry refuses /metrics): its label sets, every method label, the size of the
    multiprocess directory (on the API's 64 MiB tmpfs) and the restart count."""
    out: dict[str, Any] = {}
    for name in d.containers("api"):
        text = docker("exec", name, "python", "-c", METRICS).stdout
        series = [line for line in text.splitlines() if line.startswith(LATENCY + "_count{")]
        labels = {line.split("{", 1)[1].rsplit("}", 1)[0] for line in series}
        joined = " ".join(labels)
        size = docker("exec", name, "du", "-sk", "/tmp/selextract-metrics").stdout.split()[0]
        restarts = docker("inspect", "-f", "{{.RestartCount}}", name).stdout.strip()
        out[name] = {
            "lines": sum(1 for line in text.splitlines() if line.startswith(LATENCY)),
            "label_sets": labels,
            "methods": set(re.findall(r'method="([^"]*)"', joined)),
            "routes": set(re.findall(r'route="([^"]*)"', joined)),
            "kib": int(size),
            "restarts": int(restarts),
        }
    return out


def storm(d: Deployed, n: int = 10_000, threads: int = 32) -> tuple[Counter[int | str], set[str], float]:
    """`n` requests with made-up methods (A-Z, 5-10 letters) to a real route and to random
    paths, `threads` at a time, through the published entry; (answers, methods, seconds)."""
    rng = random.Random(17)
    methods = ["".join(rng.choices(string.ascii_uppercase, k=rng.randint(5, 10))) for _ in range(n)]
    answers: Counter[int | str] = Counter()
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = d.client(timeout=10)
            with lock:
                clients.append(client)
        path = "/api/v1/tasks" if i % 2 else f"/{methods[i].lower()}"
        try:
            status: int | str = client.request(methods[i], path).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        with lock:
            answers[status] += 1

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(n)))
    finally:
        for client in clients:
            client.close()
    return answers, set(methods), round(time.monotonic() - started, 1)


REDIS_PROBE = """
import json, redis
from common.config import get_settings
client = redis.Redis.from_url(get_settings().redis_url.get_secret_value())
keys = [k.decode() for k in client.scan_iter("selextract:robots:v2:*", count=1000)]
print(json.dumps({
    "used_memory": client.info("memory")["used_memory"],
    "maxmemory": client.info("memory").get("maxmemory", 0),
    "robots": {k: client.memory_usage(k) or 0 for k in keys},
}))
"""


def redis_probe(d: Deployed) -> dict[str, Any]:
    """Redis memory and every robots.txt record with its size, read inside the API container."""
    return json.loads(d.api_python(REDIS_PROBE))


def submit(d: Deployed, headers: dict[str, str], body: dict[str, Any]) -> str:
    with d.client() as client:
        created = client.post("/api/v1/tasks", headers=headers, json=body)
    assert created.status_code == 201, created.text[:500]
    return str(created.json()["id"])


def task_rows(d: Deployed, ids: list[str]) -> dict[str, dict[str, Any]]:
    """state, webhook status and seconds from creation to finish of each task."""
    quoted = ",".join(f"'{t}'" for t in ids)
    rows = d.sql(
        "SELECT id, state, coalesce(webhook_status, ''), "
        "coalesce(extract(epoch FROM finished_at - created_at)::text, ''), "
        "coalesce(extract(epoch FROM finished_at)::text, '') "
        f"FROM tasks WHERE id IN ({quoted})"
    )
    return {
        tid: {
            "state": state,
            "webhook": hook,
            "seconds": round(float(secs), 1) if secs else None,
            "finished": float(fin) if fin else None,
        }
        for tid, state, hook, secs, fin in rows
    }


def wait_for(
    d: Deployed, ids: list[str], done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, dict[str, Any]]:
    """Poll the tasks' rows until `done(row)` holds for each, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rows = task_rows(d, ids)
        if all(done(rows.get(t, {})) for t in ids) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def url_errors(d: Deployed, task_id: str) -> Counter[str]:
    return Counter(
        code
        for (code,) in d.sql(f"SELECT coalesce(error_code, state::text) FROM task_urls WHERE task_id = '{task_id}'")
    )


TERMINAL = ("completed", "failed", "cancelled")
SIMPLE = {"title": "h1::text"}
# cubic in the nesting depth: each div counts its descendants' ancestors (2,000 deep: over a
# minute of CPU in lxml), all plain XPath 1.0, so it passes the submission checks
CUBIC_XPATH = "//div[count(.//div[count(ancestor::div) > 0]) > 0]"
EVIL_REGEX = "re:test(//h1, '(a+)+$')"
WEBHOOK_ATTEMPTS = 5  # WEBHOOK_MAX_ATTEMPTS, default
EXTRACT_BUDGET_S = 10  # SCRAPER_EXTRACT_SECONDS, default


# --- the checks ----------------------------------------------------------------------------------


class Abuse:
    """The four high findings of issue 17 on a deployed stack (fixture `deployed`)."""

    @pytest.fixture(scope="class")
    @classmethod
    def abuse(cls, deployed: Deployed) -> Iterator[dict[str, Any]]:
        """The hostile server, an account, and the gzip-bomb webhooks under way: two tasks
        whose receivers answer 200 and 500 with 1 GiB of gzip (checked last, so the 500's
        retries run while the other checks do)."""
        d = deployed
        server = AbuseServer(d).start(d)
        headers = d.account(f"abuse-{new_id()}@reliability.test")
        try:
            before = worker_state(d)
            hooks = {
                code: submit(
                    d,
                    headers,
                    {
                        "urls": [f"{d.site}/products.html"],
                        "extract": SIMPLE,
                        "webhook_url": f"{server.url}/hook/{code}",
                    },
                )
                for code in (200, 500)
            }
            yield {"d": d, "server": server, "headers": headers, "workers_before": before, "hooks": hooks,
                   "started": time.monotonic()}  # fmt: skip
        finally:
            server.stop()

    def test_a_catastrophic_regex_is_refused_at_submission(self, abuse: dict[str, Any]) -> None:
        d, headers = abuse["d"], abuse["headers"]
        body = {"urls": [f"{d.site}/products.html"], "extract": {"x": {"type": "xpath", "selector": EVIL_REGEX}}}
        with d.client() as client:
            started = time.monotonic()
            answer = client.post("/api/v1/tasks", headers=headers, json=body)
            took = round((time.monotonic() - started) * 1000)
        message = answer.json()["detail"][0]["msg"] if answer.status_code == 422 else answer.text[:200]
        report(
            d.layout,
            f"a task with a catastrophic-backtracking XPath regex `{EVIL_REGEX}`",
            f"{answer.status_code} at submission in {took} ms: {message[:110]}…",
            "n/a (nothing accepted)",
        )
        assert answer.status_code == 422, answer.text[:500]
        assert "re:test() are not supported" in message and took < 2000

    def test_random_methods_add_no_metric_series(self, abuse: dict[str, Any]) -> None:
        d = abuse["d"]
        before = api_metrics(d)
        answers, methods, seconds = storm(d)
        time.sleep(3)  # the entry's rate limit refills; answers already counted
        after = api_metrics(d)
        with d.client(timeout=10) as client:
            ready = client.get("/health/ready").status_code
        reached = sum(n for status, n in answers.items() if status not in (429, 503) and isinstance(status, int))
        new_sets = {name: after[name]["label_sets"] - before[name]["label_sets"] for name in after}
        sets = [f"{len(before[n]['label_sets'])}→{len(after[n]['label_sets'])}" for n in after]
        files = [f"{before[n]['kib']}→{after[n]['kib']} KiB" for n in after]
        labels = sorted(set().union(*(a["methods"] for a in after.values())))
        report(
            d.layout,
            "10,000 requests with made-up HTTP methods (A-Z, 5-10 letters; half to /api/v1/tasks, half to random "
            "paths), 32 at a time, on the published entry",
            f"{seconds} s; answers {dict(sorted(answers.items(), key=str))} ({reached} passed the entry's rate "
            f"limit to the API); request-metric label sets per API container {sets} (new: "
            f"{sorted(set().union(*new_sets.values()))}), method labels {labels}; multiprocess files {files}; "
            f"API restarts unchanged; /health/ready {ready}",
            "none",
        )
        assert reached >= 100, f"too few requests reached the API to show anything: {answers}"
        allowed = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
        for name, a in after.items():
            assert a["methods"] <= allowed, (name, sorted(a["methods"] - allowed)[:10])
            assert not {f"/{m.lower()}" for m in methods} & a["routes"], (name, sorted(a["routes"])[:10])
            # made-up methods all count as `other`: on the real route and `unmatched`, per status
            assert len(new_sets[name]) <= 8, (name, sorted(new_sets[name]))
            assert a["restarts"] == before[name]["restarts"]
            assert a["kib"] - before[name]["kib"] < 1024, (before[name]["kib"], a["kib"])
        assert ready == 200

    def test_a_pathological_page_fails_in_its_budget_while_others_flow(self, abuse: dict[str, Any]) -> None:
        d, headers, server = abuse["d"], abuse["headers"], abuse["server"]
        rules = {"x": {"type": "xpath", "selector": CUBIC_XPATH, "many": True}}
        slow = submit(
            d,
            headers,
            {"urls": [f"{server.url}/deep?n={i}" for i in range(4)], "extract": rules, "options": {"retries": 2}},
        )
        time.sleep(1)  # its URLs are being extracted when the ordinary task arrives
        normal = submit(d, headers, {"urls": [f"{d.site}/products.html"], "extract": SIMPLE})
        rows = wait_for(d, [slow, normal], lambda r: r.get("state") in TERMINAL, timeout=120)
        errors = url_errors(d, slow)
        report(
            d.layout,
            f"a task of 4 URLs of a 2,000-deep nested page (22 KB) with the cubic XPath `{CUBIC_XPATH}` "
            f"(over a minute of CPU each), then an ordinary task",
            f"the pathological task {rows[slow]['state']} after {rows[slow]['seconds']} s, URLs {dict(errors)} "
            f"(budget {EXTRACT_BUDGET_S} s of CPU and wall clock per page, not retried); the ordinary task "
            f"{rows[normal]['state']} in {rows[normal]['seconds']} s, meanwhile",
            "none (the failed URLs are refunded)",
        )
        assert rows[slow]["state"] == "failed" and errors == {"extraction_timeout": 4}, (rows, errors)
        assert rows[slow]["seconds"] is not None and rows[slow]["seconds"] < 4 * EXTRACT_BUDGET_S + 20
        assert rows[normal]["state"] == "completed" and rows[normal]["seconds"] < 20, rows
        assert rows[normal]["finished"] < rows[slow]["finished"], "the ordinary task waited for the slow one"

    def test_one_site_spelled_1000_ways_keeps_redis_bounded(self, abuse: dict[str, Any]) -> None:
        d, headers, server = abuse["d"], abuse["headers"], abuse["server"]
        before = redis_probe(d)
        ids = [
            submit(
                d,
                headers,
                {
                    "urls": [f"{server.url}/go/{t * 100 + i}" for i in range(100)],
                    "extract": SIMPLE,
                    "options": {"retries": 0},
                },
            )
            for t in range(10)
        ]
        rows = wait_for(d, ids, lambda r: r.get("state") in TERMINAL, timeout=150)
        after = redis_probe(d)
        received = server.requests()
        fetched, pages = received["GET /robots.txt"], received["GET /page/n"]
        normal = submit(d, headers, {"urls": [f"{d.site}/products.html"], "extract": SIMPLE})
        normal_row = wait_for(d, [normal], lambda r: r.get("state") in TERMINAL, timeout=60)[normal]
        ours = {k: v for k, v in after["robots"].items() if server.name in k}
        grown = after["used_memory"] - before["used_memory"]
        report(
            d.layout,
            "1,000 URLs redirecting to one site (3 MiB robots.txt) spelled 1,000 ways (`http://u<i>:pw<i>@"
            "ReL-p1-AbUsE:8080/…`: user info and letter case)",
            f"{sum(r['state'] == 'completed' for r in rows.values())}/10 tasks completed, {pages} pages fetched; "
            f"its robots.txt fetched {fetched}x since the server started, Redis holds {len(ours)} entry for it "
            f"({sum(ours.values())} bytes); "
            f"Redis used_memory {before['used_memory'] >> 20}→{after['used_memory'] >> 20} MiB (maxmemory "
            f"{int(after['maxmemory'] or 0) >> 20} MiB; robots records are bounded at 2 x ROBOTS_REDIS_BUDGET_BYTES "
            f"= 64 MiB whatever the sites); an ordinary task afterwards {normal_row['state']} in "
            f"{normal_row['seconds']} s",
            "none",
        )
        assert all(r["state"] == "completed" for r in rows.values()), rows
        assert pages >= 1000
        assert list(ours) == [f"selextract:robots:v2:http://{server.name}:8080"], sorted(after["robots"])
        assert sum(ours.values()) <= 600 * 1024  # at most 500 KiB are read, stored compressed
        assert fetched <= 20, f"robots.txt fetched {fetched} times (about once per worker process)"
        assert grown < 32 << 20, f"Redis grew by {grown} bytes"
        assert normal_row["state"] == "completed", normal_row

    def test_a_gzip_bomb_webhook_receiver_cannot_hurt_the_workers(self, abuse: dict[str, Any]) -> None:
        d, server, hooks = abuse["d"], abuse["server"], abuse["hooks"]
        ended = lambda r: r.get("webhook") == "delivered" or r.get("webhook", "").startswith("failed")  # noqa: E731
        left = max(10.0, 180 - (time.monotonic() - abuse["started"]))
        rows = wait_for(d, list(hooks.values()), ended, timeout=left)
        posts = server.requests()
        before, after = abuse["workers_before"], worker_state(d)
        rise = {n: rss_rise_mib(before[n], s) for n, s in after.items() if n in before}
        report(
            d.layout,
            "webhook receivers answering 200 and 500 with a gzip bomb (1 GiB of zeros, "
            f"{server.log().split('bomb=')[1].split()[0]} bytes on the wire)",
            f"200: `{rows[hooks[200]]['webhook']}` after {posts['POST /hook/200']} POST; 500: "
            f"`{rows[hooks[500]]['webhook']}` after {posts['POST /hook/500']} POSTs; worker containers: restarts "
            f"{[s['restarts'] for s in after.values()]} (before {[s['restarts'] for s in before.values()]}), OOM kills "
            f"{[s.get('oom_kills') for s in after.values()]}, largest rise of a process's peak RSS "
            f"{list(rise.values())} MiB (limit {[s.get('limit', 0) >> 20 for s in after.values()]} MiB per container)",
            "none",
        )
        assert rows[hooks[200]]["webhook"] == "delivered" and posts["POST /hook/200"] == 1, (rows, posts)
        assert rows[hooks[500]]["webhook"].startswith("failed: HTTP 500"), rows
        assert posts["POST /hook/500"] == WEBHOOK_ATTEMPTS, posts
        assert set(after) == set(before), (sorted(before), sorted(after))
        for name, state in after.items():
            assert state["restarts"] == before[name]["restarts"] and state["started"] == before[name]["started"]
            assert state.get("oom_kills") == before[name].get("oom_kills"), (name, state)
            # the bomb inflated would take 1 GiB, more than the container may use
            assert rise[name] < 256, f"{name}: a process's peak RSS rose by {rise[name]} MiB"
