"""Reading py-spy's collapsed stacks (`--format raw`): top functions by self and by
inclusive samples, and the share of named stages of the worker's per-page path."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# stage -> a frame (function, file suffix) that marks it; first match from the leaf wins
STAGES = [
    ("politeness wait (DomainLimiter.slot sleep/acquire)", "slot", "worker/fetch.py"),
    ("robots.txt check (Redis GET + parse)", "_robots", "worker/fetch.py"),
    ("SSRF check (DNS resolve per URL)", "_check_target", "worker/fetch.py"),
    ("HTTP fetch (httpx/httpcore)", "_get_once", "worker/fetch.py"),
    ("decode (w3lib html_to_unicode)", "_decode", "worker/fetch.py"),
    ("extract (parsel/lxml + rules)", "extract", "common/extraction.py"),
    ("store result (storage.put + json)", "put", "common/storage.py"),
    ("record outcome (_save: 2 UPDATEs + commit)", "_save", "worker/runner.py"),
    ("lease heartbeat", "_heartbeat", "worker/runner.py"),
]


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for marker in ("site-packages/", "/app/", "/opt/", "/usr/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({file})"


def top(stacks: list[tuple[list[str], int]], n: int = 15) -> dict[str, list[tuple[str, float]]]:
    total = sum(c for _, c in stacks) or 1
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    for frames, count in stacks:
        names = [short(f) for f in frames]
        self_c[names[-1]] += count
        for name in set(names):
            incl_c[name] += count
    return {
        "self": [(k, round(100 * v / total, 1)) for k, v in self_c.most_common(n)],
        "inclusive": [(k, round(100 * v / total, 1)) for k, v in incl_c.most_common(n * 3)],
    }


def stages(stacks: list[tuple[list[str], int]], within: str = "_one") -> dict[str, float]:
    """Share of the samples under the per-URL function (`_Run._one`) spent in each stage."""
    shares: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        funcs = [m.group("func") for m in map(FRAME.match, frames) if m]
        if not any(f == within or f.endswith("." + within) for f in funcs):
            continue
        total += count
        label = "other"
        for frame in reversed(frames):
            m = FRAME.match(frame)
            if not m:
                continue
            func, file = m.group("func"), m.group("file")
            hit = next(
                (s for s, fn, suffix in STAGES if (func == fn or func.endswith("." + fn)) and file.endswith(suffix)),
                None,
            )
            if hit:
                label = hit
                break
        shares[label] += count
    return {k: round(100 * v / (total or 1), 1) for k, v in shares.most_common()}


def lines_under(stacks: list[tuple[list[str], int]], func: str, file_suffix: str) -> dict[str, float]:
    """Which line of `func` the samples under it were on (e.g. which statement of _save)."""
    shares: Counter[str] = Counter()
    for frames, count in stacks:
        for frame in frames:
            m = FRAME.match(frame)
            named = m and (m.group("func") == func or m.group("func").endswith("." + func))
            if named and m.group("file").endswith(file_suffix):
                shares[f"{file_suffix}:{m.group('line')}"] += count
                break
    total = sum(shares.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in shares.most_common(8)}
