"""Tables (Markdown, readable in a terminal too) and the goal check, from the results JSON:
`python -m bench.report bench/results/full.json` re-renders a saved run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + r["error"].strip().splitlines()[-1][:200]
    mem = r.get("peak_tree_mb", r.get("peak_rss_mb", 0))
    return f"{r.get('resources')} resources, {r['seconds']:.1f} s, peak {mem:.0f} MB"


def table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    out: list[str] = []
    m = res.get("machine", {})
    out.append(
        f"Machine: {m.get('cpus')} x {m.get('cpu_model')}, {m.get('memory_gib')} GiB, kernel {m.get('kernel')}, "
        f"Python {m.get('python')}, Docker {m.get('docker')}, {m.get('pulumi')}; mode {res.get('mode')}, "
        f"{res.get('started')}; load average at start {m.get('loadavg_at_start')}"
    )
    goals: list[str] = []
    sc = res.get("scrape", {})
    if sc:
        site = res.get("site", {})
        out.append(
            f"\n### Scraping throughput ({site.get('pages')} pages of ~{site.get('avg_bytes', 0) // 1024} KB, "
            f"{site.get('items_per_page')} items each, {site.get('slow_pages')} slow; "
            f"{res.get('concurrency')} requests in flight for every engine)\n"
        )
        scrapy = sc.get("scrapy")
        rows = []
        for key, label in (("selextract", "Selextract end to end"),
                           ("selextract_c2", "Selextract, scraper.concurrency=2"), ("scrapy", "Scrapy 2.19"),
                           ("raw", "asyncio + httpx + parsel")):  # fmt: skip
            r = sc.get(key)
            if not r:
                continue
            ratio = r["pages_per_s"] / scrapy["pages_per_s"] if scrapy else float("nan")
            cpu_ratio = r["cpu_s_per_1000"] / scrapy["cpu_s_per_1000"] if scrapy else float("nan")
            rows.append([label, r["pages"], r["items"], r["pages_per_s"], r["cpu_s_per_1000"], r["peak_rss_mb"],
                         f"{ratio:.2f}x", f"{cpu_ratio:.2f}x", ", ".join(map(str, r["runs_pages_per_s"]))])  # fmt: skip
        out.append(table(["engine", "pages", "items", "pages/s", "CPU s / 1,000 pages", "peak memory MB",
                          "pages/s vs Scrapy", "CPU vs Scrapy", "runs (pages/s)"], rows))  # fmt: skip
        s, raw = sc.get("selextract"), sc.get("raw")
        if s:
            out.append(f"\nSelextract CPU by role (s, best run): {s.get('cpu_by_role')}; "
                       f"20 submits took {s.get('submit_seconds', 0):.1f} s")  # fmt: skip
        if s and scrapy:
            r1 = s["pages_per_s"] / scrapy["pages_per_s"]
            goals.append(f"Selextract ≥ 1.0x Scrapy pages/s: {r1:.2f}x → {'MET' if r1 >= 1.0 else 'NOT MET'}")
        if s and raw:
            r2 = raw["pages_per_s"] / s["pages_per_s"]
            goals.append(f"within 1.5x of the raw loop: raw is {r2:.2f}x faster → {'MET' if r2 <= 1.5 else 'NOT MET'}")
    prof = res.get("profile", {})
    if prof.get("pyspy", {}).get("stages_pct_of_per_page_wall"):
        out.append("\n### Where a worker thread's time goes per page (py-spy, wall clock, all worker processes)\n")
        st = prof["pyspy"]["stages_pct_of_per_page_wall"]
        out.append(table(["stage", "% of per-page wall time"], [[k, v] for k, v in st.items()]))
        out.append(f"\n_save by line: {prof['pyspy'].get('save_lines_pct')}")
    pyi = prof.get("pyinstrument", {})
    if pyi.get("cpu_ms_per_page_steps"):
        out.append(f"\npyinstrument, one task sequential: {pyi['sequential_ms_per_page']:.1f} ms per page; "
                   "CPU ms per page of single steps:")  # fmt: skip
        out.append(table(["step", "CPU ms / page"], [[k, v] for k, v in pyi["cpu_ms_per_page_steps"].items()]))
    api = res.get("api")
    if api:
        out.append(f"\n### API latency (wrk, {api['seconds_per_run']} s per run, 127.0.0.1)\n")
        bare = {r["connections"]: r for r in api["runs"] if r["target"].startswith("bare")}
        rows = []
        for r in api["runs"]:
            b = bare.get(r["connections"])
            ratio = f"{r['ok_rps'] / b['ok_rps']:.0%}" if b else "-"
            rows.append([r["target"], r["connections"], r["ok_rps"], r["non2xx"] + r["socket_errors"],
                         r["p50_ms"], r["p95_ms"], r["p99_ms"], ratio])  # fmt: skip
        out.append(table(["endpoint", "conns", "2xx req/s", "errors", "p50 ms", "p95 ms", "p99 ms",
                          "vs bare app"], rows))  # fmt: skip
        for r in api["runs"]:
            if r["connections"] == 200 and r["target"].startswith("GET /") and "as deployed" not in r["target"]:
                b = bare.get(200)
                ok = r["p95_ms"] < 50 and b and r["ok_rps"] >= 0.5 * b["ok_rps"]
                share = r["ok_rps"] / b["ok_rps"] if b else float("nan")
                verdict = "MET" if ok else "NOT MET"
                goals.append(
                    f"{r['target']} @200: p95 {r['p95_ms']:.0f} ms (< 50), {share:.0%} of bare (≥ 50 %) → {verdict}"
                )
    spy = (api or {}).get("pyspy_get", {})
    if spy.get("inclusive_pct"):
        out.append("\nAPI GET /tasks/{id} @50, py-spy --gil (share of Python time, inclusive):")
        out.append(table(["function", "%"], spy["inclusive_pct"][:12]))
    ls = res.get("local_stack")
    if ls:
        out.append("\n### Local stack `bench` (phase 0 on this Docker engine)\n")
        rows = [[k.replace("_", " "), v["seconds"], v["cpu_seconds"], v["peak_tree_mb"], v["summary"]]
                for k, v in ls.items() if isinstance(v, dict)]  # fmt: skip
        out.append(table(["pulumi", "seconds", "CPU s (CLI tree)", "peak memory MB (PSS)", "result"], rows))
        if "destroy_seconds" in ls:
            out.append(f"\ndestroy: {ls['destroy_seconds']} s")
    dep = res.get("deploy")
    if dep:
        out.append("\n### Deploy cost: phase 4 program by worker-fleet size\n")
        prev = {p["servers"]: p for p in dep.get("preview", [])}
        rows = []
        for mk in dep.get("mocks", []):
            p = prev.get(mk["servers"], {})
            if "error" in mk:
                rows.append([mk["servers"], "error", "", "", "", "", ""])
                continue
            rows.append([mk["servers"], mk["resources"], mk["seconds"], mk["peak_rss_mb"],
                         p.get("seconds", "-") if "error" not in p else "error",
                         p.get("peak_tree_mb", "-"), p.get("peak_processes", "-")])  # fmt: skip
        out.append(table(["worker servers", "resources", "mocks s", "mocks peak RSS MB", "pulumi preview s",
                          "preview peak MB (PSS, tree)", "preview processes"], rows))  # fmt: skip
    if goals:
        out.append("\n### Goals\n")
        out.extend(f"- {g}" for g in goals)
    return "\n".join(out)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
