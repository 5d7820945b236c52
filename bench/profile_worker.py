"""pyinstrument on the worker's per-page path, run INSIDE a container of the deployed
worker image on the bench stack's network (same env, same results volume), so the
profile is of the code and libraries the workers really run:

1. `_Run._one` (fetch → decode → extract → store → record outcome) for every URL of one
   task, sequentially in the main thread (pyinstrument samples one thread: this is the
   per-page cost without the lock contention the thread pool adds; py-spy covers that);
2. CPU per page of each step in isolation on the bench pages: Selextract's `extract`
   with the task rules vs. the same selectors written directly in parsel, and the decode.

    python /bench/profile_worker.py <task-id> /out   (started by bench.profile)
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, "/bench-parent")  # bench.peers / bench.rules, mounted read-only


def main(task_id: str, out: Path) -> None:
    from pyinstrument import Profiler

    from common.config import get_settings
    from common.extraction import ExtractionRules, extract
    from common.storage import get_storage
    from worker.runner import TaskRunner, _Run
    from worker.tasks import get_fetcher

    settings = get_settings()
    runner = TaskRunner(settings, get_storage(), get_fetcher())
    owner = f"{socket.gethostname()}/{os.getpid()}/profile"
    claimed = runner._claim(uuid.UUID(task_id), owner)
    assert isinstance(claimed, dict), f"could not claim the task: {claimed}"
    run = _Run(runner, uuid.UUID(task_id), owner, claimed)
    jobs = run._pending()
    run._one(jobs[0])  # warm: connection pools, robots.txt, DNS cache of the resolver
    profiler = Profiler(interval=0.0005)
    t0 = time.perf_counter()
    profiler.start()
    for job in jobs[1:]:
        run._one(job)
    profiler.stop()
    seq_ms = 1000 * (time.perf_counter() - t0) / max(1, len(jobs) - 1)
    run._finish()
    (out / "pyinstrument-one.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    (out / "pyinstrument-one.html").write_text(profiler.output_html())
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()

    # 2. steps in isolation (CPU, no I/O): the pages come from the fetcher once
    from parsel import Selector
    from w3lib.encoding import html_to_unicode

    from bench.peers import extract as parsel_extract
    from bench.rules import RULES

    fetcher = get_fetcher()
    page = fetcher.fetch(jobs[1].url, run.fetch_options)
    body = page.text.encode()
    rules = ExtractionRules.model_validate(RULES)
    n = 200

    def per_page(fn) -> float:
        t = time.process_time()
        for _ in range(n):
            fn()
        return 1000 * (time.process_time() - t) / n

    steps = {
        "decode (html_to_unicode)": per_page(lambda: html_to_unicode("text/html; charset=utf-8", body)),
        "selextract extract() with the task rules": per_page(lambda: extract(page.text, page.final_url, rules)),
        "same selectors, parsel directly": per_page(lambda: parsel_extract(Selector(text=page.text), page.final_url)),
        "parse only (parsel Selector)": per_page(lambda: Selector(text=page.text)),
        "json.dumps(record)": per_page(
            lambda: json.dumps({"data": extract(page.text, page.final_url, rules)}, ensure_ascii=False)
        ),
    }
    steps["json.dumps(record)"] -= steps["selextract extract() with the task rules"]

    def frames(frame, depth=0, acc=None):
        acc = [] if acc is None else acc
        if depth < 14:
            acc.append({"depth": depth, "function": frame.function, "file": frame.file_path_short,
                        "line": frame.line_no, "seconds": frame.time})  # fmt: skip
            for child in frame.children:
                if child.time >= 0.01 * root.time:
                    frames(child, depth + 1, acc)
        return acc

    (out / "profile.json").write_text(
        json.dumps(
            {
                "pages": len(jobs) - 1,
                "sequential_ms_per_page": seq_ms,
                "cpu_ms_per_page_steps": steps,
                "tree": frames(root),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
