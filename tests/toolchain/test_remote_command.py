"""`command:remote:Command` of our offline command provider (tools/pulumi/command),
driven by the real Pulumi CLI against a real OpenSSH server on 127.0.0.1.

The test starts its own `sshd` (temporary host key, an authorized_keys for a generated
ed25519 key, a free port on 127.0.0.1) and a throwaway Python project with its own file
backend, then checks what the provider must do for the Hetzner stacks:

- `pulumi up` while sshd is still down: the dial is retried until sshd is up (a freshly
  booted server refuses SSH for a while), the command runs, `stdout` is an output;
- environment variables reach the command (quoted: values with quotes and `$`);
- a change of `environment` and of the credentials (private key -> SSH agent) is an
  update that runs `update` with PULUMI_COMMAND_STDOUT of the previous run;
- a change of `triggers` replaces the resource (create the new, delete the old);
- `pulumi destroy` runs `delete`;
- the private key never appears in the CLI output or the state in plain text; a failing
  command reports its exit status; an unreachable host fails after dialErrorLimit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SELEXTRACT_CACHE", Path.home() / ".cache" / "selextract"))
SSHD = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin") or "/usr/sbin/sshd"
PASSPHRASE = "selextract-remote-probe"

PROGRAM = """
import pulumi
import pulumi_command as command
from pathlib import Path

cfg = pulumi.Config()
key_file = cfg.get("keyFile")
conn = command.remote.ConnectionArgs(
    host="127.0.0.1",
    port=cfg.require_int("port"),
    user=cfg.require("user"),
    private_key=pulumi.Output.secret(Path(key_file).read_text()) if key_file else None,
    agent_socket_path=cfg.get("agentSocket"),
    dial_error_limit=cfg.get_int("dialErrorLimit"),
    per_dial_timeout=5,
)
work = cfg.require("work")
log = f"{work}/log"
cmd = command.remote.Command(
    "probe",
    connection=conn,
    create=(
        f'printf "%s\\\\n" "$GREETING" > {work}/created; '
        f'echo "create $GREETING" >> {log}; echo "hello $GREETING"; echo "to stderr" >&2'
    ),
    update=f'echo "update prev=$PULUMI_COMMAND_STDOUT greeting=$GREETING" >> {log}; echo "updated $GREETING"',
    delete=f'echo "delete prev=$PULUMI_COMMAND_STDOUT" >> {log}',
    environment={"GREETING": cfg.require("greeting")},
    triggers=[cfg.require("trigger")],
)
if cfg.get_bool("failing"):
    command.remote.Command("failing", connection=conn, create="echo oops >&2; exit 3")
pulumi.export("stdout", cmd.stdout)
pulumi.export("stderr", cmd.stderr)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pulumi_bin() -> str:
    found = shutil.which("pulumi", path=f"{CACHE / 'pulumi' / 'bin'}:{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("Pulumi CLI not found (scripts/setup-pulumi.sh builds it)")
    return found


class Sshd:
    """An OpenSSH server on 127.0.0.1:port that only accepts the generated key."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "sshd"
        self.dir.mkdir(mode=0o700)
        self.port = free_port()
        self.user = os.environ.get("USER") or "root"
        if os.geteuid() == 0:
            self.user = "root"
        self.client_key = self.dir / "id_ed25519"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        for path, comment in ((self.client_key, "probe-client"), (self.host_key, "probe-host")):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                check=True,
                capture_output=True,
            )
        (self.dir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.host_key}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowUsers {self.user}
LogLevel VERBOSE
"""
        )
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, f"sshd -t: {check.stderr}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"sshd exited: {self.log.read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"sshd did not come up on 127.0.0.1:{self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: sshd and its children only
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not Path(SSHD).exists():
        pytest.skip("no OpenSSH server: apt-get install -y openssh-server (Debian)")
    server = Sshd(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def agent(tmp_path: Path, sshd: Sshd) -> Iterator[Path]:
    """An ssh-agent holding the client key (the Hetzner stacks use the agent when the
    deploy key file is absent)."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        add = subprocess.run(
            ["ssh-add", str(sshd.client_key)],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            capture_output=True,
            text=True,
        )
        assert add.returncode == 0, add.stderr
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Project:
    def __init__(self, base: Path, sshd: Sshd) -> None:
        self.dir = base / "project"
        self.dir.mkdir()
        self.work = base / "remote-work"  # what the remote commands write (same machine)
        self.work.mkdir()
        (self.dir / "Pulumi.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "remote-probe",
                    "runtime": {
                        "name": "python",
                        "options": {"toolchain": "pip", "virtualenv": str(ROOT / ".venv")},
                    },
                }
            )
        )
        (self.dir / "__main__.py").write_text(PROGRAM)
        self.state = base / "state"
        self.state.mkdir()
        self.env = {
            **os.environ,
            "PATH": f"{CACHE / 'pulumi' / 'bin'}:{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
            "PULUMI_BACKEND_URL": f"file://{self.state}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        }
        self.env.pop("SSH_AUTH_SOCK", None)  # only what the test configures
        self.log: list[str] = []
        self.pulumi("stack", "init", "probe", "--secrets-provider", "passphrase")
        self.config(
            port=str(sshd.port),
            user=sshd.user,
            keyFile=str(sshd.client_key),
            work=str(self.work),
            greeting="it's $HOME",  # must arrive literally
            trigger="one",
        )

    def pulumi(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = subprocess.run(
            [pulumi_bin(), "--non-interactive", *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.log.append(f"pulumi {args[0]}: {time.monotonic() - start:.1f} s")
        if check:
            assert proc.returncode == 0, f"pulumi {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [pulumi_bin(), "--non-interactive", *args],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def config(self, **values: str) -> None:
        for key, value in values.items():
            self.pulumi("config", "set", "--stack", "probe", key, "--", value)

    def config_rm(self, key: str) -> None:
        self.pulumi("config", "rm", "--stack", "probe", key)

    def outputs(self) -> dict[str, str]:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets", "--stack", "probe").stdout)

    def up(self) -> subprocess.CompletedProcess[str]:
        return self.pulumi("up", "--yes", "--stack", "probe", "--diff", "--color=never")

    def remote_log(self) -> list[str]:
        path = self.work / "log"
        return path.read_text().splitlines() if path.exists() else []


def require_plugin() -> None:
    out = subprocess.run(
        [pulumi_bin(), "plugin", "ls", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
        check=False,
    )
    names = {p.get("name") for p in json.loads(out.stdout or "[]")}
    if "command" not in names:
        pytest.skip("the command plugin is not installed: run scripts/setup-pulumi.sh")


def test_remote_command_lifecycle_over_real_ssh(tmp_path: Path, sshd: Sshd, agent: Path) -> None:
    require_plugin()
    project = Project(tmp_path, sshd)
    key_text = sshd.client_key.read_text()
    key_body = key_text.splitlines()[1]  # a line of the base64 body

    # 1. create while sshd is still down: sshd starts once the first dial has failed,
    #    and the provider's next attempt gets through.
    started = time.monotonic()
    up = project.start("up", "--yes", "--stack", "probe", "--color=never")
    assert up.stdout is not None
    seen: list[str] = []
    retry = f"SSH to {sshd.user}@127.0.0.1:{sshd.port}: attempt 1 of 11 failed"
    for line in up.stdout:
        seen.append(line)
        if retry in line:
            assert "connection refused" in line, line
            sshd.start()
            break
    else:
        up.wait(timeout=60)
        raise AssertionError("no failed first dial reported:\n" + "".join(seen))
    output = "".join(seen) + up.communicate(timeout=300)[0]
    project.log.append(f"pulumi up (sshd started after a refused dial): {time.monotonic() - started:.1f} s")
    assert up.returncode == 0, output
    assert key_body not in output
    assert (project.work / "created").read_text() == "it's $HOME\n"
    assert project.remote_log() == ["create it's $HOME"]
    outputs = project.outputs()
    assert outputs["stdout"] == "hello it's $HOME"
    assert outputs["stderr"] == "to stderr"
    assert "Accepted publickey for" in sshd.log.read_text()

    state = project.pulumi("stack", "export", "--stack", "probe").stdout
    assert key_body not in state, "the private key must be stored encrypted"
    probe = next(r for r in json.loads(state)["deployment"]["resources"] if r["type"] == "command:remote:Command")
    assert probe["outputs"]["connection"].get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270"
    assert probe["outputs"]["stdout"] == "hello it's $HOME"  # not secret: only the connection is

    # 2. nothing changed: no diff, nothing runs.
    same = project.pulumi("preview", "--stack", "probe", "--expect-no-changes", "--diff", "--color=never")
    assert key_body not in same.stdout + same.stderr

    # 3. environment and credentials (key file -> SSH agent) change: an update.
    project.config(greeting="second", agentSocket=str(agent))
    project.config_rm("keyFile")
    preview = project.pulumi("preview", "--stack", "probe", "--diff", "--color=never")
    assert "~ command:remote:Command: (update)" in preview.stdout, preview.stdout
    assert "replace" not in preview.stdout, preview.stdout
    project.up()
    assert project.remote_log()[-1] == "update prev=hello it's $HOME greeting=second"
    assert project.outputs()["stdout"] == "updated second"

    # 4. triggers change: replaced (the new one created, then the old one deleted).
    project.config(trigger="two")
    preview = project.pulumi("preview", "--stack", "probe", "--diff", "--color=never")
    assert "+-command:remote:Command: (replace)" in preview.stdout, preview.stdout
    assert "[diff: ~triggers]" in preview.stdout or "triggers" in preview.stdout
    project.up()
    assert project.remote_log()[-2:] == ["create second", "delete prev=updated second"]
    assert (project.work / "created").read_text() == "second\n"
    assert project.outputs()["stdout"] == "hello second"

    # 5. a failing command reports its exit status and stderr, not the key.
    project.config(failing="true")
    failed = project.pulumi("up", "--yes", "--stack", "probe", "--color=never", check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0, text
    assert "Process exited with status 3" in text and "oops" in text, text
    assert key_body not in text
    project.config(failing="false")

    # 6. destroy runs delete.
    project.pulumi("destroy", "--yes", "--stack", "probe", "--color=never")
    assert project.remote_log()[-1] == "delete prev=hello second"
    assert len(project.remote_log()) == 5
    print("\n".join(project.log))


def test_unreachable_host_fails_after_dial_error_limit(tmp_path: Path, sshd: Sshd) -> None:
    require_plugin()
    project = Project(tmp_path, sshd)  # sshd configured but never started: refused
    project.config(dialErrorLimit="1")
    started = time.monotonic()
    result = project.pulumi("up", "--yes", "--stack", "probe", "--color=never", check=False)
    elapsed = time.monotonic() - started
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert f"cannot connect to {sshd.user}@127.0.0.1:{sshd.port} over SSH (2 failed attempts)" in text, text
    assert "connection refused" in text, text
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert project.remote_log() == []
