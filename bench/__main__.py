"""`make bench` / `python -m bench [--quick] [--only scrape,api,deploy]`: scraping
throughput (Selextract end to end vs. Scrapy vs. a plain asyncio+httpx loop), API latency
(wrk through the entry proxy vs. a bare FastAPI app) and deploy cost (the Pulumi program
under mocks and a real `pulumi preview` for 1…1,000 worker servers; `pulumi up` cold and
no-op of a throwaway local stack). Prints tables, writes bench/results/<mode>.json.
Traffic goes only to 127.0.0.1 and to the bench stack's own containers; every load loop
is bounded in count and time."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.measure import run_measured

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
HOST_SITE_PORT = 38888
CONCURRENCY = 16  # Scrapy's default CONCURRENT_REQUESTS; every engine gets the same


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))

    def version(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "n/a"

    from tests.e2e.stack import pulumi_bin

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": version("docker", "version", "--format", "{{.Server.Version}}"),
        "pulumi": version(str(pulumi_bin()), "version") if pulumi_bin() else "n/a",
        "wrk": version("sh", "-c", "wrk -v 2>&1 | head -1"),
        "loadavg_at_start": os.getloadavg(),
    }


# --- scraping ---------------------------------------------------------------------------------


class HostSite:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "site.py"), "serve", "--dir", str(self.directory),
             "--host", "127.0.0.1", "--port", str(HOST_SITE_PORT)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"test site did not start: {line}")
        return f"http://127.0.0.1:{HOST_SITE_PORT}"

    def __exit__(self, *exc: Any) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def peer(engine: str, base: str, pages: int, out_dir: Path) -> dict[str, Any]:
    res = run_measured(
        [sys.executable, "-m", "bench.peers", engine, "--base", base, "--pages", str(pages),
         "--concurrency", str(CONCURRENCY), "--out", str(out_dir / f"{engine}.jsonl")],
        cwd=ROOT, timeout=900,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"{engine} failed: {res.stderr[-3000:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    data["process_seconds"] = res.seconds
    data["process_cpu_seconds"] = res.cpu_seconds
    return data


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    for r in runs:
        r["pages_per_s"] = r["pages"] / r["seconds"]
        r["cpu_s_per_1000"] = 1000 * r["cpu_seconds"] / max(1, r["pages"])
    chosen = dict(max(runs, key=lambda r: r["pages_per_s"]))
    chosen["runs_pages_per_s"] = [round(r["pages_per_s"], 1) for r in runs]
    return chosen


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s wrk runs, fewer sizes, one run per engine")
    parser.add_argument("--only", default="scrape,api,deploy", help="comma list of: scrape, api, deploy")
    parser.add_argument("--pages", type=int, default=None, help="test-site pages (default 2000)")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy / pyinstrument")
    parser.add_argument("--keep-stack", action="store_true", help="leave the bench stack up (destroy yourself)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    mode = "quick" if args.quick else "full"
    pages = args.pages or 2000
    repeats = 1 if args.quick else 2
    wrk_seconds = 5 if args.quick else 30
    mock_sizes = [1, 10, 100] if args.quick else [1, 10, 100, 1000]
    preview_sizes = [1, 10] if args.quick else [1, 10, 100]
    out = args.out or BENCH / "results" / f"{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "machine": machine(), "concurrency": CONCURRENCY}  # fmt: skip
    log(f"bench ({mode}): {results['machine']['cpus']} CPUs, {results['machine']['memory_gib']} GiB, "
        f"load {results['machine']['loadavg_at_start']}")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="selextract-bench-"))
    tmp.chmod(0o755)
    stack = None
    try:
        if only & {"scrape", "api"}:
            from bench import site as site_mod

            log(f"== test site: generating {pages} pages")
            results["site"] = site_mod.generate(tmp / "site", pages)
            (tmp / "site").chmod(0o755)

        if "scrape" in only:
            log("== scraping: peers on 127.0.0.1")
            results["scrape"] = {"loadavg": os.getloadavg()}
            with HostSite(tmp / "site") as base:
                for engine in ("raw", "scrapy"):
                    runs = []
                    for i in range(repeats):
                        runs.append(peer(engine, base, pages, tmp))
                        log(f"  {engine} run {i + 1}: {runs[-1]['pages'] / runs[-1]['seconds']:.1f} pages/s")
                    results["scrape"][engine] = best(runs)

        if only & {"scrape", "api"} or "deploy" in only:
            from bench.selextract import BenchStack

            log("== Selextract: deploying the throwaway stack `bench`")
            stack = BenchStack.deploy(tmp / "stack", CONCURRENCY, log=log)
            results["local_stack"] = dict(stack.timings)
            if only & {"scrape", "api"}:
                site = stack.start_site(tmp / "site")
                stack.wait_ready()
                stack.create_key()

            if "scrape" in only:
                runs = []
                for i in range(repeats):
                    runs.append(stack.scrape(site, pages))
                    log(f"  selextract run {i + 1}: {runs[-1]['pages'] / runs[-1]['seconds']:.1f} pages/s")
                results["scrape"]["selextract"] = best(runs)
                if not args.no_profile:
                    from bench import profile

                    prof_dir = BENCH / "results" / f"profile-{mode}"
                    shutil.rmtree(prof_dir, ignore_errors=True)
                    prof_dir.mkdir(parents=True)
                    log("  profiling: py-spy on every worker process during one more run")
                    spy = profile.pyspy_during(
                        stack, lambda: stack.scrape(site, pages), 12 if args.quick else 20, prof_dir
                    )
                    log("  profiling: pyinstrument on the per-page path (one task, sequential)")
                    pyi = profile.pyinstrument_one_task(stack, site, 100, prof_dir)
                    results["profile"] = {"pyspy": spy, "pyinstrument": pyi}
                if not args.quick:
                    # the same fleet, 2 fetch threads per task instead of 8: 8 worker processes
                    # x 2 = the same 16 in flight, but 2 threads (not 8) per hot task row
                    log("  variant: scraper.concurrency = 2 (pulumi up with the new worker env)")
                    up = stack.reconfigure({"concurrency": 2})
                    site = stack.start_site(tmp / "site")
                    runs = [stack.scrape(site, pages) for _ in range(repeats)]
                    for r in runs:
                        log(f"  selextract (2 threads/task): {r['pages'] / r['seconds']:.1f} pages/s")
                    results["scrape"]["selextract_c2"] = best(runs)
                    results["scrape"]["selextract_c2"]["reconfigure_up"] = up

            if "api" in only:
                log("== API latency (wrk)")
                results["api"] = run_api(stack, site, wrk_seconds, BENCH / "results" / f"profile-{mode}")

        if stack is not None and not args.keep_stack:
            log("== destroying the bench stack")
            t0 = time.monotonic()
            stack.destroy()
            results.setdefault("local_stack", {})["destroy_seconds"] = round(time.monotonic() - t0, 1)
            stack = None

        if "deploy" in only:
            from bench import deploy

            log("== deploy cost: Pulumi program under mocks (phase 4)")
            results["deploy"] = {"mocks": [], "preview": [], "loadavg": os.getloadavg()}
            for n in mock_sizes:
                results["deploy"]["mocks"].append(deploy.mock_run(n))
                log(f"  mocks {n} workers: {report.brief(results['deploy']['mocks'][-1])}")
            for n in preview_sizes:
                results["deploy"]["preview"].append(deploy.preview_run(n))
                log(f"  pulumi preview {n} workers: {report.brief(results['deploy']['preview'][-1])}")
    finally:
        if stack is not None and not args.keep_stack:
            try:
                stack.destroy()
            except Exception as exc:  # leave the evidence; remove_leftovers already ran
                log(f"!! destroy failed: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["loadavg_at_end"] = os.getloadavg()
        out.write_text(json.dumps(results, indent=1, default=str))
        log(f"wrote {out}")
    print(report.render(results))
    return 0


def run_api(stack: Any, site: str, seconds: int, prof_dir: Path) -> dict[str, Any]:
    from bench import api
    from bench.selextract import HTTPS

    base = f"https://127.0.0.1:{HTTPS}"
    task_id = stack.submit([f"{site}/p/1.html"])
    deadline = time.monotonic() + 60
    while stack.task(task_id)["state"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
    body = json.dumps({"urls": [f"{site}/p/2.html"], "extract": {"title": "h1::text"}})
    res: dict[str, Any] = {"seconds_per_run": seconds, "loadavg": os.getloadavg(), "runs": []}

    def one(target: str, url: str, conns: int, **kw: Any) -> None:
        r = api.wrk(url, conns, seconds, **kw)
        r["target"] = target
        res["runs"].append(r)
        log(f"  {target:<28} c={conns:<3} {r['ok_rps']:8.0f} ok req/s  p95 {r['p95_ms']:7.1f} ms  "
            f"non-2xx {r['non2xx']}")  # fmt: skip

    # as deployed: the entry allows 50 req/s per client address (burst 100); wrk is one address
    one("health (as deployed, limited)", base + "/health", 50)
    stack.lift_entry_rate_limit()
    for conns in (50, 200):
        one("GET /health", base + "/health", conns)
        one("GET /api/v1/tasks/{id}", base + f"/api/v1/tasks/{task_id}", conns, token=stack.key)
    workers = list(stack.containers("worker"))
    subprocess.run(["docker", "pause", *workers], check=True, capture_output=True)
    try:  # the API's cost alone: queued tasks wait for the workers until the stack goes
        for conns in (50, 200):
            one("POST /api/v1/tasks", base + "/api/v1/tasks", conns, method="POST", token=stack.key, body=body)
    finally:
        subprocess.run(["docker", "unpause", *workers], check=False, capture_output=True)
    try:
        from bench import profile

        prof_dir.mkdir(parents=True, exist_ok=True)
        res["pyspy_get"] = profile.pyspy_api(stack, base + f"/api/v1/tasks/{task_id}", stack.key, 8, prof_dir)
    except Exception as exc:  # the profile is a bonus: never lose the measurements for it
        res["pyspy_get"] = {"error": str(exc)}
    with api.Hello(stack.api_workers()) as url:
        for conns in (50, 200):
            one("bare FastAPI hello-world", url, conns)
    return res


if __name__ == "__main__":
    sys.exit(main())
