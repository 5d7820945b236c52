"""scripts/preview_summary.py on recorded `pulumi preview --json` output.

The fixtures were recorded with the real CLI (3.274.1) by
tests/preview/fixtures/record/record.sh: a small local-only stack (random, command)
deployed at version 1, then previewed at version 2 with the policy pack:

- preview-update.json: `pulumi preview --json` (the digest): a create, an update, a
  replace and a delete;
- preview-refused.jsonl: the same with PULUMI_ENABLE_STREAMING_JSON_PREVIEW (engine event
  stream) plus a plain-text password, refused by the policy pack (exit code 1).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "preview_summary.py"
FIXTURES = Path(__file__).parent / "fixtures"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("preview_summary", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["preview_summary"] = module
    spec.loader.exec_module(module)
    return module


ps = load_script()


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


# ------------------------------------------------------------ recorded previews


def test_recorded_preview_has_the_documented_schema() -> None:
    doc = fixture("preview-update.json")
    assert {"steps", "changeSummary"} <= set(doc)
    assert {s["op"] for s in doc["steps"]} >= {"create", "update", "replace", "delete"}
    assert all(s["urn"].startswith("urn:pulumi:fixture::selextract-preview-fixture::") for s in doc["steps"])


def test_recorded_update_is_summarised_per_type_with_replacements_and_deletions_highlighted() -> None:
    summary = ps.summarize(fixture("preview-update.json"))
    kinds = {(c.type, c.name): c.kind for c in summary.changes}
    assert kinds == {
        ("random:index/randomId:RandomId", "new-id"): "add",
        ("command:local:Command", "deploy"): "change",
        ("random:index/randomPassword:RandomPassword", "db-password"): "replace",
        ("random:index/randomString:RandomString", "old-token"): "delete",
    }
    assert summary.unchanged >= 1  # the pet
    assert not summary.failed
    md = ps.render(summary)
    assert md.splitlines()[0] == "### ⚠️ `fixture`: 1 to add, 1 to change, 1 to replace, 1 to delete"
    assert "> [!CAUTION]" in md
    assert "- `random:index/randomPassword:RandomPassword` **db-password** (`length`)" in md
    assert "**Deleted**\n\n- `random:index/randomString:RandomString` **old-token**" in md
    assert "| `random:index/randomPassword:RandomPassword` |  |  | **1** |  |" in md
    assert "| `random:index/randomString:RandomString` |  |  |  | **1** |" in md
    assert "| `command:local:Command` |  | 1 |  |  |" in md
    assert "- `command:local:Command` **deploy** (`environment`)" in md
    # replacements and deletions first in the table
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert rows[0].startswith(("| `random:index/randomPassword", "| `random:index/randomString"))


def test_recorded_event_stream_gives_the_same_changes() -> None:
    digest, events = ps.load(str(FIXTURES / "preview-refused.jsonl"))
    assert len(events) > 20 and digest["result"] == "failed"
    streamed = ps.summarize(digest, events=events)
    plain = ps.summarize(fixture("preview-update.json"))
    assert sorted((c.kind, c.type, c.name, c.properties) for c in streamed.changes) == sorted(
        (c.kind, c.type, c.name, c.properties) for c in plain.changes
    )
    assert streamed.unchanged == plain.unchanged


def test_recorded_refused_preview_shows_the_policy_violations() -> None:
    digest, events = ps.load(str(FIXTURES / "preview-refused.jsonl"))
    summary = ps.summarize(digest, stack="fixture", events=events)
    assert summary.failed
    md = ps.render(summary)
    assert md.startswith("### ❌ preview failed `fixture`")
    assert "**Policy violations**" in md
    assert (
        "- **mandatory** `secrets-only-as-pulumi-secrets` (command:local:Command: deploy): "
        "environment.PGPASSWORD is plain text but property 'PGPASSWORD' holds a credential"
    ) in md
    assert "- error: preview failed" in md
    assert "plaintext-password-in-a-pr" not in md


def test_digest_plus_separate_events_and_output_file(tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    result = run_cli(
        str(FIXTURES / "preview-update.json"),
        "--stack",
        "phase9",
        "--events",
        str(FIXTURES / "preview-refused.jsonl"),
        "--errors",
        str(tmp_path / "no-stderr-file"),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    md = out.read_text()
    assert md.startswith("### ❌ preview failed `phase9`: 1 to add, 1 to change, 1 to replace, 1 to delete")
    assert "`secrets-only-as-pulumi-secrets`" in md


def test_stdin_and_missing_files() -> None:
    text = (FIXTURES / "preview-update.json").read_text()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "-", "--events", "/nonexistent"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0 and "1 to replace" in result.stdout


# ------------------------------------------------------- edge cases of the schema


def step(op: str, typ: str, name: str, **extra: object) -> dict:
    return {"op": op, "urn": f"urn:pulumi:phase3::selextract::selextract:hosts:HetznerFleet${typ}::{name}", **extra}


def test_replacement_steps_count_once_and_root_stack_and_reads_are_ignored() -> None:
    server = "hcloud:index/server:Server"
    preview = {
        "steps": [
            step("create", "pulumi:pulumi:Stack", "selextract-phase3"),
            step("replace", server, "hetzner-api-01", replaceReasons=["serverType"]),
            step("create-replacement", server, "hetzner-api-01"),
            step("delete-replaced", server, "hetzner-api-01"),
            # only with --show-replacement-steps:
            step("create-replacement", server, "hetzner-api-02", diffReasons=["image"]),
            step("read", "hcloud:index/getLocation:getLocation", "fsn1"),
            step("same", server, "hetzner-db-01"),
            step("import", "hcloud:index/volume:Volume", "pg", detailedDiff=None),
        ],
        "changeSummary": {"replace": 2, "same": 12, "create": 1},
    }
    summary = ps.summarize(preview)
    assert [(c.name, c.kind) for c in summary.changes] == [
        ("hetzner-api-01", "replace"),
        ("hetzner-api-02", "replace"),
        ("pg", "add"),
    ]
    assert summary.changes[0].properties == ["serverType"]
    assert summary.stack == "phase3" and summary.unchanged == 12
    md = ps.render(summary)
    assert "| `hcloud:index/server:Server` |  |  | **2** |  |" in md
    assert "12 resource(s) unchanged." in md


def test_no_changes() -> None:
    md = ps.render(ps.summarize({"steps": [], "changeSummary": {"same": 40}}, stack="phase1"))
    assert md == "### ✅ `phase1`: no changes\n\n40 resource(s) unchanged.\n"


def test_preview_that_died_before_printing_json_reports_why(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "err.txt").write_text("error: could not load plugin\nerror: preview failed: missing HCLOUD_TOKEN\n")
    result = run_cli(str(tmp_path / "empty.json"), "--stack", "phase2", "--errors", str(tmp_path / "err.txt"))
    assert result.returncode == 0
    assert result.stdout.startswith("### ❌ preview failed `phase2`: no changes")
    assert "- error: preview failed: missing HCLOUD_TOKEN" in result.stdout


def test_long_lists_are_cut() -> None:
    steps = [step("delete", "docker:index/container:Container", f"c{i}") for i in range(40)]
    md = ps.render(ps.summarize({"steps": steps}))
    assert "- … and 15 more" in md
    assert "40 to delete" in md


def test_text_policy_log_is_understood() -> None:
    log = (
        "Policies:\n"
        "    ❌ selextract@v1.0.0 (local: policies)\n"
        "        - [mandatory] [severity: critical]  only-entry-publishes-publicly"
        "  (docker:index/container:Container: pg)\n"
        "          No container publishes a port on a public address except the entry.\n"
        "          container pg publishes port 5432 (host port 5432) on 0.0.0.0; only the entry may\n"
    )
    [violation] = ps.policy_violations(log)
    assert violation.startswith("**mandatory** `only-entry-publishes-publicly` (docker:index/container:Container: pg)")
    assert "publishes port 5432" in violation


@pytest.mark.parametrize("urn", ["urn:pulumi:s::p::t::a::b", "not-a-urn"])
def test_parse_urn_edge_cases(urn: str) -> None:
    typ, name = ps.parse_urn(urn)
    assert (typ, name) == (("t", "a::b") if urn.startswith("urn:") else ("?", urn))
