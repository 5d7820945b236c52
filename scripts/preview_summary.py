#!/usr/bin/env python3
"""Turn `pulumi preview --json` into a short Markdown summary for a pull-request comment.

    PULUMI_ENABLE_STREAMING_JSON_PREVIEW=true \
        pulumi preview --stack phase3 --policy-pack policies --json > preview.jsonl 2> preview.err
    python scripts/preview_summary.py preview.jsonl --stack phase3 --errors preview.err > summary.md

The summary counts adds/changes/replacements/deletes per resource type, lists every
replacement and deletion (those lose data or addresses, so a reviewer must see them),
names the changed properties of updates, and shows the preview's policy violations,
errors and warnings.

Both JSON forms of `pulumi preview --json` are read: the default digest (one document with
`steps`, `diagnostics`, `changeSummary`) and the engine event stream printed when
PULUMI_ENABLE_STREAMING_JSON_PREVIEW is set (one event per line). Only the stream carries
policy violations; with the digest, pass them in with `--policy-log` (the text output of
a preview run with `--policy-pack`) or `--events` (an event stream or `--event-log` file).
If the preview died before printing JSON, `--errors` (its stderr) says why.
Standard library only, so CI can run it with any Python 3.9+.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `op` values of `pulumi preview --json` steps, by what a reviewer cares about.
ADD_OPS = {"create", "import"}
CHANGE_OPS = {"update"}
REPLACE_OPS = {"replace", "create-replacement", "delete-replaced", "import-replacement", "discard-replaced"}
DELETE_OPS = {"delete"}
COLUMNS = ("add", "change", "replace", "delete")
ROOT_TYPE = "pulumi:pulumi:Stack"
MAX_LISTED = 25  # replacements/deletions/updates listed by name before "… and N more"


@dataclass
class Change:
    kind: str  # add | change | replace | delete
    op: str
    type: str
    name: str
    urn: str
    properties: list[str] = field(default_factory=list)


@dataclass
class Summary:
    stack: str
    changes: list[Change]
    unchanged: int
    errors: list[str]
    warnings: list[str]
    policy_violations: list[str]

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(v.startswith("**mandatory**") for v in self.policy_violations)


def parse_urn(urn: str) -> tuple[str, str]:
    """(type, name) of a URN `urn:pulumi:<stack>::<project>::<parent$type>::<name>`."""
    parts = urn.split("::")
    if len(parts) < 4:
        return "?", urn
    return parts[2].split("$")[-1], "::".join(parts[3:])


def _kind(op: str) -> str | None:
    for kind, ops in (("add", ADD_OPS), ("change", CHANGE_OPS), ("replace", REPLACE_OPS), ("delete", DELETE_OPS)):
        if op in ops:
            return kind
    return None  # same, read, refresh, discard: nothing a reviewer needs to weigh


def summarize(
    preview: dict[str, Any],
    *,
    stack: str = "",
    policy_log: str = "",
    events: list[dict[str, Any]] | None = None,
    stderr: str = "",
) -> Summary:
    changes: dict[str, Change] = {}
    for step in preview.get("steps") or []:
        op, urn = str(step.get("op", "")), str(step.get("urn", ""))
        kind = _kind(op)
        typ, name = parse_urn(urn)
        typ = (step.get("newState") or {}).get("type") or (step.get("oldState") or {}).get("type") or typ
        if kind is None or typ == ROOT_TYPE:
            continue
        props = step.get("replaceReasons") if kind == "replace" else None
        props = props or step.get("diffReasons") or sorted((step.get("detailedDiff") or {}).keys())
        seen = changes.get(urn)
        if seen is not None and seen.kind == "replace":
            # create-replacement/delete-replaced and the logical replace: one replacement
            seen.properties = seen.properties or [str(p) for p in props or []]
            if op == "replace":
                seen.op = op
            continue
        changes[urn] = Change(kind, op, typ, name, urn, [str(p) for p in props or []])
    summary = preview.get("changeSummary") or {}
    diagnostics = preview.get("diagnostics") or []

    def messages(severity: str) -> list[str]:
        out = []
        for d in diagnostics:
            if d.get("severity") == severity and d.get("message"):
                where = parse_urn(d["urn"])[1] if d.get("urn") else ""
                text = " ".join(str(d["message"]).split())
                out.append(f"{where}: {text}" if where and not text.startswith(where) else text)
        return list(dict.fromkeys(out))

    errors = messages("error")
    if preview.get("result") == "failed" and not errors:
        errors.append("preview failed")
    if not preview and stderr.strip():  # no JSON at all: the preview died early; say why
        errors.append(" ".join(stderr.strip().splitlines()[-1].split())[:500])
    return Summary(
        stack=stack or _stack_of(preview),
        changes=list(changes.values()),
        unchanged=int(summary.get("same", 0) or 0),
        errors=errors,
        warnings=messages("warning"),
        policy_violations=list(dict.fromkeys(policy_events(events or []) + policy_violations(policy_log))),
    )


def _stack_of(preview: dict[str, Any]) -> str:
    for step in preview.get("steps") or []:
        m = re.match(r"urn:pulumi:([^:]+)::", str(step.get("urn", "")))
        if m:
            return m.group(1)
    return "?"


def policy_events(events: list[dict[str, Any]]) -> list[str]:
    """Violations from the engine event log (`pulumi preview --event-log FILE`)."""
    out = []
    for event in events:
        p = event.get("policyEvent")
        if not isinstance(p, dict):
            continue
        where = parse_urn(p["resourceUrn"]) if p.get("resourceUrn") else None
        place = f" ({where[0]}: {where[1]})" if where else ""
        lines = [ln.strip() for ln in str(p.get("message", "")).splitlines() if ln.strip()]
        # the SDK puts the policy description first, then what is wrong
        reason = lines[-1] if lines else ""
        level = p.get("enforcementLevel") or "advisory"
        out.append(f"**{level}** `{p.get('policyName', '?')}`{place}{': ' + reason if reason else ''}")
    return out


_POLICY_LINE = re.compile(r"^\s*- \[(mandatory|advisory|remediate)\](?:\s*\[severity: \w+\])?\s+(\S+)\s+\((.*)\)\s*$")


def policy_violations(log: str) -> list[str]:
    """Violations from the `Policies:` section of a text-mode `pulumi preview --policy-pack …`:

    - [mandatory]  only-entry-publishes-publicly  (docker:index/container:Container: phase3-db-01-postgres-1)
      No container publishes a port on a public address except the entry …
      container phase3-db-01-postgres-1 publishes port 5432 …
    """
    out: list[str] = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = _POLICY_LINE.match(_strip_ansi(line))
        if not m:
            continue
        level, policy, where = m.groups()
        detail = [_strip_ansi(x).strip() for x in lines[i + 1 : i + 4]]
        detail = [d for d in detail if d and not d.startswith("- [")]
        # first detail line is the policy description; the second names what is wrong
        reason = detail[1] if len(detail) > 1 else (detail[0] if detail else "")
        out.append(f"**{level}** `{policy}` ({where}){': ' + reason if reason else ''}")
    return out


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _cell(n: int, highlight: bool) -> str:
    if not n:
        return ""
    return f"**{n}**" if highlight else str(n)


def _line(c: Change) -> str:
    why = f" ({', '.join(f'`{p}`' for p in c.properties[:6])}{', …' if len(c.properties) > 6 else ''})"
    return f"- `{c.type}` **{c.name}**{why if c.properties else ''}"


def _listed(changes: list[Change]) -> list[str]:
    lines = [_line(c) for c in changes[:MAX_LISTED]]
    if len(changes) > MAX_LISTED:
        lines.append(f"- … and {len(changes) - MAX_LISTED} more")
    return lines


def render(s: Summary) -> str:
    counts = {k: s.count(k) for k in COLUMNS}
    verbs = {"add": "to add", "change": "to change", "replace": "to replace", "delete": "to delete"}
    totals = ", ".join(f"{counts[k]} {verbs[k]}" for k in COLUMNS if counts[k]) or "no changes"
    status = "❌ preview failed" if s.failed else ("⚠️" if counts["replace"] or counts["delete"] else "✅")
    out = [f"### {status} `{s.stack}`: {totals}", ""]

    if s.policy_violations:
        out += ["**Policy violations**", "", *(f"- {v}" for v in s.policy_violations), ""]
    if s.errors:
        out += ["**Errors**", "", *(f"- {e}" for e in s.errors[:MAX_LISTED]), ""]

    destructive = [c for c in s.changes if c.kind in ("replace", "delete")]
    if destructive:
        out += [
            "> [!CAUTION]",
            f"> {counts['replace']} replacement(s) and {counts['delete']} deletion(s): data, addresses or"
            " running containers on these resources go away.",
            "",
        ]
        for kind, title in (("replace", "Replaced (delete + create)"), ("delete", "Deleted")):
            these = [c for c in s.changes if c.kind == kind]
            if these:
                out += [f"**{title}**", "", *_listed(these), ""]

    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for c in s.changes:
        by_type[c.type][c.kind] += 1
    if by_type:
        out += ["| Resource type | Add | Change | Replace | Delete |", "| --- | ---: | ---: | ---: | ---: |"]
        for typ in sorted(by_type, key=lambda t: (-by_type[t]["replace"] - by_type[t]["delete"], t)):
            n = by_type[typ]
            cells = [_cell(n[k], k in ("replace", "delete")) for k in COLUMNS]
            out.append(f"| `{typ}` | {' | '.join(cells)} |")
        out.append("")
    out.append(f"{s.unchanged} resource(s) unchanged.")

    updates = [c for c in s.changes if c.kind == "change"]
    if updates:
        out += [
            "",
            f"<details><summary>Updated in place ({len(updates)})</summary>",
            "",
            *_listed(updates),
            "",
            "</details>",
        ]
    if s.warnings:
        out += ["", f"<details><summary>Warnings ({len(s.warnings)})</summary>", ""]
        out += [*(f"- {w}" for w in s.warnings[:MAX_LISTED]), "", "</details>"]
    return "\n".join(out).rstrip() + "\n"


def parse_events(text: str) -> list[dict[str, Any]]:
    """Engine events, one JSON object per line (other lines are skipped)."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "sequence" in event:
            events.append(event)
    return events


def load_events(path: str) -> list[dict[str, Any]]:
    return parse_events(Path(path).read_text(errors="replace"))


def digest_from_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The `pulumi preview --json` digest rebuilt from a streamed preview's engine events."""
    steps, diagnostics, summary = [], [], {}
    for event in events:
        if (pre := event.get("resourcePreEvent")) and isinstance(pre.get("metadata"), dict):
            m = pre["metadata"]
            steps.append(
                {
                    "op": m.get("op"),
                    "urn": m.get("urn"),
                    "newState": {"type": m.get("type")},
                    "replaceReasons": m.get("keys"),
                    "diffReasons": m.get("diffs"),
                    "detailedDiff": m.get("detailedDiff"),
                }
            )
        elif (diag := event.get("diagnosticEvent")) and diag.get("severity") not in ("debug", None):
            if diag.get("ephemeral"):
                continue
            diagnostics.append(
                {
                    "urn": diag.get("urn"),
                    "message": f"{diag.get('prefix', '')}{diag.get('message', '')}".strip(),
                    "severity": diag.get("severity"),
                }
            )
        elif summary_event := event.get("summaryEvent"):
            summary = summary_event
    return {
        "steps": steps,
        "diagnostics": diagnostics,
        "changeSummary": summary.get("resourceChanges") or {},
        "result": summary.get("result"),
    }


def load(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(digest, engine events) of a `pulumi preview --json` output, streamed or not; ({}, [])
    when the preview printed no JSON (it failed early). Log lines around the JSON are skipped."""
    text = sys.stdin.read() if path == "-" else (Path(path).read_text(errors="replace") if Path(path).exists() else "")
    events = parse_events(text)
    if events:
        return digest_from_events(events), events
    for start in (i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")):
        try:
            doc, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc, []
    return {}, []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preview", help="output of `pulumi preview --json`, digest or stream ('-' for stdin)")
    parser.add_argument("--stack", default="", help="stack name for the heading (default: from the URNs)")
    parser.add_argument("--events", help="engine events of the same preview (stream or --event-log), for violations")
    parser.add_argument("--policy-log", help="text output of a preview run with --policy-pack, for violations")
    parser.add_argument("--errors", help="stderr of the preview, reported when it printed no JSON")
    parser.add_argument("--output", "-o", help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)

    def read(path: str | None) -> str:
        return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""

    preview, streamed = load(args.preview)
    extra = load_events(args.events) if args.events and Path(args.events).exists() else []
    summary = summarize(
        preview,
        stack=args.stack,
        policy_log=read(args.policy_log),
        events=streamed + extra,
        stderr=read(args.errors),
    )
    markdown = render(summary)
    if args.output:
        Path(args.output).write_text(markdown)
    else:
        sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
