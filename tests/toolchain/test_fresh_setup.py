"""The Python set-up from nothing: a copy of the working tree, an empty HOME and cache, and
a bare ``PATH=/usr/bin:/bin``, so nothing a developer installed by hand (a ``uv`` in
``~/.local/bin``, pyenv shims, the project's own cache) can make it pass.

This is how CI and a newcomer meet ``scripts/setup-python.sh``: the test failed while the
script ran Debian's ``python3 -m pip install uv`` (PEP 668 refuses it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BARE_PATH = "/usr/bin:/bin"
# a few fast unit suites that import the whole infra package and its pinned libraries
UNIT_SUBSET = ["tests/infra/test_config.py", "tests/infra/test_topology.py"]


def _copy_tracked_tree(dest: Path) -> None:
    """The files git tracks, as they are in the working tree (a clean clone of them)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.exists():  # deleted in the working tree, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def _bare_env(home: Path, cache: Path) -> dict[str, str]:
    """Nothing from the calling shell: no SSL_CERT_FILE/PIP_CERT a developer's profile
    sets (a set-up that needs them fails for a newcomer), only the machine's proxy if any."""
    env = {"HOME": str(home), "PATH": BARE_PATH, "SELEXTRACT_CACHE": str(cache), "LANG": "C.UTF-8"}
    for key in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    if shutil.which("python3", path=BARE_PATH) is None:
        pytest.fail("no python3 in /usr/bin: scripts/setup-system.sh installs it (python3, python3-venv)")
    root = tmp_path_factory.mktemp("fresh")
    clone, home, cache = root / "selextract", root / "home", root / "cache"
    home.mkdir()
    _copy_tracked_tree(clone)
    env = _bare_env(home, cache)
    done = subprocess.run(
        ["bash", "scripts/setup-python.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"setup-python.sh failed from a bare PATH:\n{done.stdout}\n{done.stderr}"
    return clone, env


def test_setup_python_needs_nothing_from_the_machine(fresh_clone: tuple[Path, dict[str, str]]) -> None:
    clone, env = fresh_clone
    cache = Path(env["SELEXTRACT_CACHE"])
    uv_bins = list(cache.glob("uv/*/bin/uv"))
    assert uv_bins, "uv was not installed into the project's cache"
    venv_python = clone / ".venv" / "bin" / "python"
    version = subprocess.run([venv_python, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("Python 3.11"), version
    # nothing landed in the (empty) HOME outside the project's cache
    assert not (Path(env["HOME"]) / ".local" / "bin" / "uv").exists()


def test_setup_python_is_idempotent(fresh_clone: tuple[Path, dict[str, str]]) -> None:
    clone, env = fresh_clone
    again = subprocess.run(
        ["bash", "scripts/setup-python.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "installing uv" not in again.stdout, "a second run reinstalled uv"


def test_unit_tests_run_in_the_fresh_venv(fresh_clone: tuple[Path, dict[str, str]]) -> None:
    clone, env = fresh_clone
    done = subprocess.run(
        [str(clone / ".venv/bin/pytest"), "-q", "-p", "no:cacheprovider", *UNIT_SUBSET],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"unit tests failed in the fresh venv:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
