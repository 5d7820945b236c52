"""Selextract end to end on a throwaway local stack `bench` (its own state, ports
38080/38443/39090; never the developer's `local` stack): deploy (cold `pulumi up`, then a
no-op one), the test site in a container on the stack network, an API key on an
unmetered `bench` plan, and scrape runs measured through the public API."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.measure import ContainerMeter, ProcResult, run_measured
from bench.rules import RULES
from tests.e2e.stack import LocalStack, docker, pulumi_bin, remove_leftovers

NAME = "bench"
HTTP, HTTPS, PROM = 38080, 38443, 39090
SITE = f"{NAME}-site"
SITE_PORT = 8080
BENCH_DIR = Path(__file__).resolve().parent
PYTHON_IMAGE = "selextract/python:3.11"
# roles on the request path (monitoring and exporters are reported apart)
REPLACE = re.compile(r"\+- \S+ (\S+) replace \[diff: ([^\]]*)\]")
SERVICE_ROLES = ("entry", "api", "worker", "postgres", "redis", "objectstore", "lb")


def overrides(concurrency: int) -> dict[str, Any]:
    """Pulumi.local.yaml (default workers, API) + our ports + a scraper that may reach the
    test site on the stack network. Politeness: `concurrency` requests in flight on the one
    test domain and no gap, the same limits the peers get (see README: 'concurrency')."""
    return {
        "selextract:local": {"httpPort": HTTP, "httpsPort": HTTPS, "monitoringPort": PROM},
        "selextract:scraper": {
            "allowedNetworks": ["172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8"],
            "domainConcurrency": concurrency,
            "domainDelayMs": 0,
        },
    }


@dataclass
class BenchStack:
    stack: LocalStack
    timings: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    client: httpx.Client | None = None

    # --- lifecycle --------------------------------------------------------------------------
    @classmethod
    def deploy(cls, workdir: Path, concurrency: int, log=print) -> BenchStack:
        if pulumi_bin() is None:
            raise RuntimeError("no pulumi CLI: run `make setup` (scripts/setup-pulumi.sh)")
        remove_leftovers(NAME)
        stack = LocalStack.create(NAME, workdir, overrides(concurrency))
        bench = cls(stack)
        try:
            log(f"  pulumi up (cold) of stack {NAME} …")
            bench.timings["up_cold"] = bench._pulumi_measured("up", "--yes", "--suppress-progress")
            log(f"    {bench.timings['up_cold']['seconds']:.1f} s")
            # a second preview/up should change nothing; what they report is recorded, not asserted
            bench.timings["preview_noop"] = bench._pulumi_measured("preview", "--diff")
            bench.timings["up_noop"] = bench._pulumi_measured("up", "--yes", "--suppress-progress")
        except BaseException:
            bench.destroy()
            raise
        log(
            f"  preview (no-op) {bench.timings['preview_noop']['seconds']:.1f} s, "
            f"up (no-op) {bench.timings['up_noop']['seconds']:.1f} s"
        )
        return bench

    def _pulumi_measured(self, *args: str) -> dict[str, Any]:
        cmd = [str(pulumi_bin()), *args, "--stack", self.stack.name, "--non-interactive"]
        res: ProcResult = run_measured(cmd, env=self.stack.env, cwd=self.stack.workdir, timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}")
        tail = res.stdout.split("Resources:")[-1].strip().splitlines()
        summary = [line for line in tail[:6] if line.strip() and not line.startswith("Duration")]
        changed = sorted({f"{m[1]} ({m[2]})" for m in REPLACE.finditer(res.stdout)})[:8]
        return {
            "seconds": round(res.seconds, 2),
            "cpu_seconds": round(res.cpu_seconds, 2),
            "peak_tree_mb": round(res.peak_tree_mb, 1),
            "peak_processes": res.peak_processes,
            "peak_single_rss_mb": round(res.peak_single_rss_mb, 1),
            "summary": " ".join(s.strip() for s in summary),
            "replaced": changed,
        }

    def destroy(self) -> None:
        if self.client is not None:
            self.client.close()
        docker("rm", "-f", SITE, check=False)
        try:
            self.stack.destroy()
        finally:
            remove_leftovers(NAME)

    # --- the test site and the account -----------------------------------------------------
    def start_site(self, site_dir: Path) -> str:
        docker("rm", "-f", SITE, check=False)
        docker(
            "run", "-d", "--name", SITE, "--network", f"{NAME}-net", "--label", f"selextract.stack={NAME}",
            "-v", f"{site_dir}:/site:ro", "-v", f"{BENCH_DIR}:/bench:ro", PYTHON_IMAGE,
            "python", "/bench/site.py", "serve", "--dir", "/site", "--host", "0.0.0.0", "--port", str(SITE_PORT),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "serving" not in docker("logs", SITE, check=False).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"test site container did not start: {docker('logs', SITE, check=False).stderr}")
            time.sleep(0.5)
        return f"http://{SITE}:{SITE_PORT}"

    def containers(self, role: str | None = None) -> dict[str, str]:
        args = ["ps", "--no-trunc", "--format", "{{.Names}} {{.ID}}", "--filter", f"label=selextract.stack={NAME}"]
        if role:
            args += ["--filter", f"label=selextract.role={role}"]
        rows = (line.split() for line in docker(*args).stdout.splitlines())
        return {name: cid for name, cid in rows if name != SITE}

    def role_of(self, name: str) -> str:
        out = docker("inspect", "--format", '{{index .Config.Labels "selextract.role"}}', name).stdout.strip()
        return out or "other"

    def api_container(self) -> str:
        return next(iter(self.containers("api")))

    def wait_ready(self, timeout: float = 180) -> httpx.Client:
        self.client = httpx.Client(base_url=f"https://127.0.0.1:{HTTPS}", verify=False, timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/health/ready").status_code == 200:
                    return self.client
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError("the bench stack's API never became ready")

    def create_key(self, email: str = "bench@example.com") -> str:
        """An API key whose account is on an unmetered `bench` plan: the benchmark measures
        the service, not the free plan's 30 requests/minute and 100 credits."""
        api = self.api_container()
        self.key = docker("exec", api, "python", "-m", "app.admin", "create-key", "--email", email, "--name", "bench")
        self.key = self.key.stdout.strip()
        script = (
            "from sqlalchemy import text\n"
            "from common.db import session_scope\n"
            "with session_scope() as s:\n"
            '    s.execute(text("INSERT INTO plans (id, name, monthly_credits, rate_limit_per_minute, '
            "max_concurrent_tasks) VALUES (99, 'bench', 2000000000, 2000000000, 1000000) "
            'ON CONFLICT (name) DO NOTHING"))\n'
            "    s.execute(text(\"UPDATE users SET plan_id = (SELECT id FROM plans WHERE name = 'bench') "
            f"WHERE email = '{email}'\"))\n"
        )
        docker("exec", api, "python", "-c", script)
        return self.key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def lift_entry_rate_limit(self) -> None:
        """The entry nginx limits each client address to 50 req/s (burst 100), which is what a
        single wrk client meets first; lift it in this throwaway stack's entry container only."""
        entry = next(iter(self.containers("entry")))
        sed = "sed -i 's/rate=[0-9]*r\\/s/rate=1000000r\\/s/' /etc/nginx/nginx.conf"
        docker("exec", entry, "sh", "-c", f"{sed} && nginx -t -q && nginx -s reload")
        time.sleep(1)

    def reconfigure(self, scraper: dict[str, Any]) -> dict[str, Any]:
        """Change `selextract:scraper` keys of the running stack and `pulumi up` (the API and
        worker containers are replaced with the new environment). Returns the up's timing."""
        path = self.stack.workdir / f"Pulumi.{self.stack.name}.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["config"]["selextract:scraper"] = {**doc["config"]["selextract:scraper"], **scraper}
        path.write_text(yaml.safe_dump(doc))
        self.stack.config = doc["config"]
        timing = self._pulumi_measured("up", "--yes", "--suppress-progress")
        self.wait_ready()
        return timing

    def api_workers(self) -> int:
        return int(self.stack.config.get("selextract:api", {}).get("uvicornWorkers", 2))

    # --- scraping -------------------------------------------------------------------------
    def submit(self, urls: list[str], rules: dict | None = None) -> str:
        assert self.client is not None
        r = self.client.post(
            "/api/v1/tasks",
            headers=self.headers,
            json={"urls": urls, "extract": rules or RULES, "options": {"retries": 1, "timeout": 30}},
        )
        if r.status_code != 201:
            raise RuntimeError(f"submit refused: {r.status_code} {r.text[:500]}")
        return r.json()["id"]

    def task(self, task_id: str) -> dict[str, Any]:
        assert self.client is not None
        r = self.client.get(f"/api/v1/tasks/{task_id}", headers=self.headers)
        r.raise_for_status()
        return r.json()

    def active(self) -> int:
        assert self.client is not None
        r = self.client.get("/api/v1/tasks", headers=self.headers, params={"state": ["queued", "running"], "limit": 1})
        r.raise_for_status()
        return int(r.json()["total"])

    def scrape(self, site: str, pages: int, per_task: int = 100, timeout: float = 900) -> dict[str, Any]:
        """Submit `pages` URLs as tasks of `per_task` (MAX_URLS_PER_TASK), wait until every
        task is finished, and measure the service containers' CPU and memory meanwhile."""
        names = self.containers()
        roles = {n: self.role_of(n) for n in names}
        service = {n: c for n, c in names.items() if roles[n] in SERVICE_ROLES}
        other = {n: c for n, c in names.items() if roles[n] not in SERVICE_ROLES}
        meter, background = ContainerMeter(service).start(), ContainerMeter(other).start()
        urls = [f"{site}/p/{i}.html" for i in range(pages)]
        t0 = time.time()
        ids = [self.submit(urls[i : i + per_task]) for i in range(0, pages, per_task)]
        submitted = time.time() - t0
        deadline = time.monotonic() + timeout
        while self.active():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Selextract did not finish {pages} pages in {timeout:.0f} s")
            time.sleep(0.2)
        polled = time.time() - t0
        meter.stop()
        background.stop()
        tasks = [self.task(i) for i in ids]
        finished = max(_ts(t["finished_at"]) for t in tasks)
        seconds = min(polled, finished - t0)
        ok = sum(t["succeeded_count"] for t in tasks)
        items = self.count_items(ids)
        by_role: dict[str, float] = {}
        for n, cpu in meter.cpu.items():
            by_role[roles[n]] = by_role.get(roles[n], 0.0) + cpu
        return {
            "pages": ok,
            "failed": sum(t["failed_count"] for t in tasks),
            "items": items,
            "tasks": len(ids),
            "seconds": seconds,
            "submit_seconds": submitted,
            "cpu_seconds": meter.cpu_total,
            "cpu_by_role": {k: round(v, 2) for k, v in sorted(by_role.items())},
            "peak_rss_mb": meter.peak_total_mb,
            "peak_by_container_mb": {k: round(v, 1) for k, v in sorted(meter.peak_mb.items())},
            "background_cpu_seconds": background.cpu_total,
        }

    def count_items(self, ids: list[str]) -> int:
        assert self.client is not None
        items = 0
        for task_id in ids:
            r = self.client.get(f"/api/v1/tasks/{task_id}/results", headers=self.headers, params={"format": "json"})
            r.raise_for_status()
            for row in r.json()["results"]:
                items += len((row.get("data") or {}).get("products") or [])
        return items


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def new_uuid() -> str:
    return str(uuid.uuid4())


def docker_json(*args: str) -> Any:
    return json.loads(subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout)
