"""The GitHub Actions workflows: valid YAML (and `actionlint`-clean where it is installed),
the guard rails they promise, and their changed-stack detection run for real with bash
and git on a scratch repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the `on:` key as True
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) + str(s.get("with", "")) for s in job["steps"])


def test_workflows_parse() -> None:
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= {"pr-preview.yml", "deploy.yml"}
    for path in WORKFLOWS.glob("*.yml"):
        doc = workflow(path.name)
        assert doc["jobs"], path


@pytest.mark.skipif(not shutil.which("actionlint"), reason="actionlint not installed (go install …/actionlint)")
def test_actionlint() -> None:
    result = subprocess.run(["actionlint", *sorted(map(str, WORKFLOWS.glob("*.yml")))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pull_request_runs_tests_then_previews_changed_stacks_with_the_policy_pack() -> None:
    doc = workflow("pr-preview.yml")
    assert "pull_request" in doc["on"]
    jobs = doc["jobs"]
    test = steps_text(jobs["test"])
    assert "make test-unit" in test and "tests/policies" in test
    assert "-m e2e tests/policies/test_cli.py" in test  # the bad stack, refused by the real CLI
    preview = jobs["preview"]
    assert set(preview["needs"]) == {"test", "changes"}
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.changes.outputs.stacks) }}"
    text = steps_text(preview)
    assert "pulumi preview" in text and "--policy-pack policies" in text and "--json" in text
    assert "scripts/preview_summary.py" in text
    assert "sticky-pull-request-comment" in text
    assert preview["permissions"]["pull-requests"] == "write"
    assert doc["permissions"] == {"contents": "read"}


def test_merge_to_main_deploys_changed_stacks_behind_approval() -> None:
    doc = workflow("deploy.yml")
    assert doc["on"]["push"]["branches"] == ["main"]
    up = doc["jobs"]["up"]
    assert up["environment"]["name"] == "production-${{ matrix.stack }}"
    assert up["concurrency"] == {"group": "pulumi-up-${{ matrix.stack }}", "cancel-in-progress": False}
    text = steps_text(up)
    assert "pulumi up --yes" in text and "--policy-pack policies" in text
    assert "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}" in up["env"]["PULUMI_CONFIG_PASSPHRASE"]
    assert "${{ secrets.HCLOUD_TOKEN }}" in up["env"]["HCLOUD_TOKEN"]


# ------------------------------------------------------- changed-stack detection


def detection_script(name: str) -> tuple[str, dict[str, str]]:
    job = workflow(name)["jobs"]["changes"]
    step = next(s for s in job["steps"] if s.get("id") == "stacks")
    return step["run"], step.get("env", {})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if not shutil.which("jq") or not shutil.which("git"):
        pytest.skip("needs git and jq (both on GitHub's runners)")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "ci@example.com")
    git("config", "user.name", "ci")
    for stack in ("local", "phase1", "phase2", "phase3", "phase4"):
        (tmp_path / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "config.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("readme\n")
    git("add", ".")
    git("commit", "-q", "-m", "base")
    return tmp_path


def commit(repo: Path, *files: str) -> tuple[str, str]:
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    for f in files:
        (repo / f).write_text((repo / f).read_text() + "# changed\n")
    subprocess.run(["git", "commit", "-qam", "change"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return base, head


def detect(repo: Path, name: str, env: dict[str, str]) -> str:
    script, _ = detection_script(name)
    out = repo / "github_output"
    out.write_text("")
    subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=repo,
        env={**os.environ, **env, "GITHUB_OUTPUT": str(out)},
        check=True,
        capture_output=True,
    )
    return out.read_text().strip()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (("Pulumi.phase2.yaml",), '["phase2"]'),
        (("Pulumi.phase2.yaml", "Pulumi.phase4.yaml"), '["phase2","phase4"]'),
        (("infra/config.py",), '["phase1","phase2","phase3","phase4"]'),
        (("Pulumi.local.yaml",), "[]"),
        (("README.md",), "[]"),
    ],
)
def test_pull_request_previews_the_stacks_a_change_can_affect(
    repo: Path, files: tuple[str, ...], expected: str
) -> None:
    base, head = commit(repo, *files)
    assert detect(repo, "pr-preview.yml", {"BASE": base, "HEAD": head}) == f"stacks={expected}"
    assert detect(repo, "deploy.yml", {"BEFORE": base, "AFTER": head, "REQUESTED": ""}) == f"stacks={expected}"


def test_deploy_by_hand_and_first_push(repo: Path) -> None:
    _, head = commit(repo, "README.md")
    manual = {"BEFORE": "", "AFTER": head, "REQUESTED": "phase3"}
    assert detect(repo, "deploy.yml", manual) == 'stacks=["phase3"]'
    first = {"BEFORE": "0" * 40, "AFTER": head, "REQUESTED": ""}
    assert detect(repo, "deploy.yml", first) == 'stacks=["phase1","phase2","phase3","phase4"]'
    with pytest.raises(subprocess.CalledProcessError):
        detect(repo, "deploy.yml", {**manual, "REQUESTED": "local"})


# ------------------------------------------------------- secrets and pull-request code


def secrets_used(node: Any) -> set[str]:
    """Names of `secrets.X` a workflow part refers to (GITHUB_TOKEN is per run and scoped)."""
    return set(re.findall(r"secrets\.([A-Za-z0-9_]+)", yaml.safe_dump(node))) - {"GITHUB_TOKEN"}


@pytest.mark.parametrize("name", ["pr-preview.yml", "deploy.yml"])
def test_secrets_reach_only_jobs_in_a_protected_environment(name: str) -> None:
    """Environment secrets are released only to a job that names the environment, after its
    required reviewers approve the run; a job or a workflow-level `env` outside one could
    hand them to whatever code the run checked out."""
    doc = workflow(name)
    assert not secrets_used({k: v for k, v in doc.items() if k != "jobs"})
    for job_name, job in doc["jobs"].items():
        if secrets_used(job):
            assert job.get("environment"), f"{name}: job {job_name} uses {secrets_used(job)} outside an environment"


def test_pull_request_code_gets_the_passphrase_only_after_approval() -> None:
    doc = workflow("pr-preview.yml")
    assert set(doc["on"]) == {"pull_request"}  # never pull_request_target (secrets beside PR code)
    preview = doc["jobs"]["preview"]
    assert preview["environment"] == "preview"
    assert "PULUMI_CONFIG_PASSPHRASE" in secrets_used(preview)
    for job_name, job in doc["jobs"].items():
        if job_name != "preview":
            assert not secrets_used(job), job_name
    # the secrets must live on the environment: a pull request can edit this very file, and a
    # repository secret is open to any job it writes
    header = (WORKFLOWS / "pr-preview.yml").read_text().split("\nname:", 1)[0]
    assert "environment `preview`" in header and "not as repository secrets" in header
