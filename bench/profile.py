"""Where Selextract's time goes on the bench stack: py-spy (wall clock, every thread of
every worker process) during an end-to-end run, and pyinstrument on the per-page path in
a container of the worker image (bench/profile_worker.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench import collapsed
from bench.selextract import NAME, BenchStack
from tests.e2e.stack import docker

BENCH_DIR = Path(__file__).resolve().parent
PYSPY = Path(sys.executable).parent / "py-spy"


def _pyinstrument_dir() -> Path:
    import pyinstrument

    return Path(pyinstrument.__file__).parent


def pyspy_during(bench: BenchStack, run, seconds: int, out: Path) -> dict[str, Any]:
    """Record every worker container's processes (with idle: wall time) while `run()` goes."""
    roots = []
    for name in bench.containers("worker"):
        top = docker("top", name, "-o", "pid").stdout.split()[1:]
        roots.append(top[0])
    procs = [
        subprocess.Popen(
            [
                str(PYSPY),
                "record",
                "--pid",
                pid,
                "--subprocesses",
                "--idle",
                "--nonblocking",
                "-r",
                "50",
                "-d",
                str(seconds),
                "--format",
                "raw",
                "-o",
                str(out / f"pyspy-{i}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, pid in enumerate(roots)
    ]
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(run()))
    worker.start()
    for p in procs:
        p.wait(timeout=seconds + 60)
    worker.join()
    files = [out / f"pyspy-{i}.txt" for i in range(len(roots))]
    stacks = [s for f in files if f.exists() for s in collapsed.parse(f)]
    if not stacks:
        return {"error": "py-spy recorded nothing (ptrace not permitted?)", "run": result}
    return {
        "samples": sum(c for _, c in stacks),
        "stages_pct_of_per_page_wall": collapsed.stages(stacks),
        "save_lines_pct": collapsed.lines_under(stacks, "_save", "worker/runner.py"),
        "top_self_pct": collapsed.top(stacks)["self"],
        "run": result,
    }


def pyinstrument_one_task(bench: BenchStack, site: str, pages: int, out: Path) -> dict[str, Any]:
    """Pause the workers, submit one task, run the per-page path under pyinstrument in a
    sibling container of the worker image, then let the workers go again."""
    workers = list(bench.containers("worker"))
    image = docker("inspect", "--format", "{{.Config.Image}}", workers[0]).stdout.strip()
    env = docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", workers[0]).stdout
    docker("pause", *workers)
    try:
        task_id = bench.submit([f"{site}/p/{i}.html" for i in range(pages)])
        with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
            f.write(env)
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o777)
        proc = docker(
            "run", "--rm", "--name", f"{NAME}-profile", "--network", f"{NAME}-net", "--env-file", f.name,
            "--label", f"selextract.stack={NAME}", "-v", f"{NAME}-app-01-results:/data/results",
            "-v", f"{_pyinstrument_dir()}:/extra/pyinstrument:ro", "-e", "PYTHONPATH=/srv:/extra",
            "-v", f"{BENCH_DIR}:/bench-parent/bench:ro", "-v", f"{BENCH_DIR}:/bench:ro", "-v", f"{out}:/out",
            "--user", "10001", image, "python", "/bench/profile_worker.py", task_id, "/out",
            check=False, timeout=600,
        )  # fmt: skip
        Path(f.name).unlink()
        if proc.returncode != 0:
            return {"error": proc.stderr[-3000:]}
    finally:
        docker("unpause", *workers, check=False)
    data = json.loads((out / "profile.json").read_text())
    data["text"] = str(out / "pyinstrument-one.txt")
    return data


def pyspy_api(bench: BenchStack, url: str, token: str, seconds: int, out: Path) -> dict[str, Any]:
    """Python time of the API processes (samples of threads holding the GIL) under a wrk
    GET load: which code a request's CPU goes to."""
    from bench import api

    api_name = next(iter(bench.containers("api")))
    pid = docker("top", api_name, "-o", "pid").stdout.split()[1]
    path = out / "pyspy-api-get.txt"
    spy = subprocess.Popen(
        [str(PYSPY), "record", "--pid", pid, "--subprocesses", "--gil", "--nonblocking", "-r", "100",
         "-d", str(seconds), "--format", "raw", "-o", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    load = api.wrk(url, 50, seconds + 2, token=token)
    spy.wait(timeout=seconds + 60)
    if not path.exists():
        return {"error": "py-spy recorded nothing"}
    stacks = collapsed.parse(path)
    t = collapsed.top(stacks, 20)
    keep = ("app/", "common/", "sqlalchemy/orm/session", "fastapi/dependencies", "pydantic", "psycopg/connection")
    return {
        "samples": sum(c for _, c in stacks),
        "wrk": load,
        "top_self_pct": t["self"],
        "inclusive_pct": [x for x in t["inclusive"] if any(k in x[0] for k in keep)][:25],
    }
