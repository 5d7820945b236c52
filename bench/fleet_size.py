"""What one more worker server costs the Pulumi program: a phase 2 stack with 1, 2, 4, 8 and
100 worker servers under `pulumi.runtime.set_mocks` (bench/deploy_mock.py, one process per
size), for two programs: `--before` (a git revision's stacks/__main__.py; by default the
last one that built the app and worker images on every host) and `--after` (a program
file; by default the working tree's stacks/__main__.py).

    .venv/bin/python -m bench.fleet_size                       # table + bench/results/fleet-size.json
    .venv/bin/python -m bench.fleet_size --sizes 1 2 --preview-sizes 1 --after /tmp/wired-main.py

Mocks measure the program alone. A real `pulumi preview` (bench/deploy.py, `--preview-sizes`,
with the CLI `make setup` builds and a dummy HCLOUD_TOKEN) also starts one plugin process
per Docker provider (the `docker_providers` column: one per host, plus the one for this
machine's engine where the images are built); `up` also pays a full image build per
`image_builds`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.deploy import mock_run, preview_run
from tests.infra.pulumi_harness import ROOT

# The last revision whose program built app and worker images on every host's engine.
BEFORE_REV = "9515e52"
SIZES = (1, 2, 4, 8, 100)
PREVIEW_SIZES = (1, 2, 4, 8)
FIELDS = ("resources", "docker_providers", "image_builds", "image_pulls", "seconds", "cpu_seconds", "peak_rss_mb")
PREVIEW_FIELDS = ("resources", "seconds", "cpu_seconds", "peak_tree_mb", "peak_processes")
RESULTS = ROOT / "bench" / "results" / "fleet-size.json"


def program_at(rev: str, directory: Path) -> Path:
    """stacks/__main__.py as it was at `rev`, written to `directory`."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:stacks/__main__.py"], capture_output=True, text=True, check=True
    ).stdout
    path = directory / f"main-{rev}.py"
    path.write_text(text)
    return path


def measure(program: Path, sizes: tuple[int, ...], stack: str, repeat: int, preview: bool) -> list[dict[str, Any]]:
    """One row per size; of `repeat` runs the fastest (the machine is shared: others only add time)."""
    rows = []
    for n in sizes:
        runs = [
            preview_run(n, stack=stack, program=program) if preview else mock_run(n, stack=stack, program=program)
            for _ in range(repeat)
        ]
        row = min(runs, key=lambda r: r.get("seconds", float("inf")))
        rows.append(row)
        print(f"  {'preview' if preview else 'mocks'} {program.name} {n:>4}: {json.dumps(row)}", file=sys.stderr)
    return rows


def per_server(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, float]:
    """Slope between the smallest and the largest fleet: the cost of one more worker server."""
    ok = [r for r in rows if "error" not in r and isinstance(r.get("resources"), int)]
    if len(ok) < 2:
        return {}
    lo, hi = ok[0], ok[-1]
    span = hi["servers"] - lo["servers"]
    return {f: round((hi[f] - lo[f]) / span, 3) for f in fields if f in lo and f in hi}


def table(results: dict[str, Any], kind: str, fields: tuple[str, ...]) -> str:
    lines = [f"| {kind} | worker servers | " + " | ".join(fields) + " |", "|" + "---|" * (len(fields) + 2)]
    for label, block in results[kind].items():
        for row in block["rows"]:
            if "error" in row:
                lines.append(f"| {label} | {row['servers']} | error: {row['error'][-200:]!r} |")
                continue
            cells = [f"{row[f]:.1f}" if isinstance(row[f], float) else str(row[f]) for f in fields]
            lines.append(f"| {label} | {row['servers']} | " + " | ".join(cells) + " |")
        slope = block["per_server"]
        if slope:
            lines.append(f"| {label} | +1 (slope) | " + " | ".join(str(slope.get(f, "")) for f in fields) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default=BEFORE_REV, help=f"git revision of the old program (default {BEFORE_REV})")
    parser.add_argument("--after", type=Path, default=ROOT / "stacks" / "__main__.py", help="the new program file")
    parser.add_argument("--stack", default="phase2")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="mock runs")
    parser.add_argument("--preview-sizes", type=int, nargs="*", default=list(PREVIEW_SIZES), help="real previews")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and program; the fastest counts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"stack": args.stack, "mocks": {}, "preview": {}}
    with tempfile.TemporaryDirectory(prefix="fleet-size-") as tmp:
        programs = {f"before ({args.before})": program_at(args.before, Path(tmp)), "after": args.after.resolve()}
        for kind, sizes, fields in (("mocks", args.sizes, FIELDS), ("preview", args.preview_sizes, PREVIEW_FIELDS)):
            for label, program in programs.items():
                if sizes:
                    rows = measure(program, tuple(sorted(sizes)), args.stack, args.repeat, kind == "preview")
                    results[kind][label] = {"rows": rows, "per_server": per_server(rows, fields)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, "mocks", FIELDS))
    print()
    print(table(results, "preview", PREVIEW_FIELDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
