"""The local machine test bed (scripts/machines.sh): machines that behave like fresh servers.

One bed of two machines for the module, in its own state dir (its own SSH key): `sxtest-1`
gets cloud-init user-data (a Hetzner-like server), `sxtest-2` none (a Robot box). Checked
the way the multi-host tests use the bed: root SSH with the bed's key on the public address,
each machine's own Docker engine running an image imported into it, the private network
between machines (also from an inner container), an image pushed by one machine's engine
to a registry on the private network and pulled by the other's, cloud-init's result, a
power cut and a boot, and `down` leaving no container, volume or network behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "machines.sh"
PREFIX = "sxtest"
LABEL = "selextract.machine"
REGISTRY_IMAGE = "selextract/registry:2"
REGISTRY = f"{PREFIX}-registry"
USER_DATA = """#cloud-config
write_files:
  - path: /etc/selextract-testbed
    content: "written by cloud-init\\n"
runcmd:
  - [sh, -c, "hostname > /var/tmp/runcmd-ran"]
"""


def run(*args: str, env: dict[str, str], timeout: float = 300, stdin: bytes | None = None) -> str:
    """machines.sh ARGS; fails the test with its output when it fails."""
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, env=env, timeout=timeout, input=stdin)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        pytest.fail(f"machines.sh {' '.join(args[:3])} exited {proc.returncode}:\n{out}\n{err}")
    return out


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def sshd_answers(ip: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def tiny_image_tar() -> bytes:
    """A root filesystem with just bash and its libraries (from this machine), ~2 MB."""
    paths = ["/usr/bin/bash"]
    ldd = subprocess.run(["ldd", "/usr/bin/bash"], capture_output=True, text=True, check=True).stdout
    paths += re.findall(r"(/\S+) \(0x", ldd)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        for p in paths:
            tar.add(p, arcname=p.lstrip("/"))
        bin_bash = tarfile.TarInfo("bin/bash")  # bin -> usr/bin as on Debian
        bin_bash.type, bin_bash.linkname = tarfile.SYMTYPE, "/usr/bin/bash"
        tar.addfile(bin_bash)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("the machine test bed needs a running Docker engine (scripts/setup-docker.sh)")
    if subprocess.run(["docker", "image", "inspect", REGISTRY_IMAGE], capture_output=True).returncode != 0:
        pytest.fail(f"{REGISTRY_IMAGE} missing (scripts/build-images.sh registry)")
    tmp = tmp_path_factory.mktemp("machines")
    env = {**os.environ, "SELEXTRACT_STATE": str(tmp / "state")}
    seeds = tmp / "user-data"
    seeds.mkdir()
    (seeds / f"{PREFIX}-1.yaml").write_text(USER_DATA)
    subprocess.run(["docker", "rm", "-f", "-v", REGISTRY], capture_output=True)  # leftovers of an
    run("down", "--prefix", PREFIX, env=env)  # interrupted run
    try:
        run("up", "2", "--prefix", PREFIX, "--user-data", str(seeds), "--insecure-registry", "10.0.1.0/24", env=env,
            timeout=900)  # fmt: skip
        info = json.loads(run("env", env=env))
        # an open registry on the private network only, at an address of the network's dynamic range
        docker("run", "-d", "--name", REGISTRY, "--network", info["networks"]["private"]["name"], REGISTRY_IMAGE)
        ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", REGISTRY).strip()
        info["registry"] = f"{ip}:5000"
        info["by_name"] = {m["name"]: m for m in info["machines"] if m["prefix"] == PREFIX}  # not other beds
        info["env"] = env
        yield info
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", REGISTRY], capture_output=True)
        run("down", "--prefix", PREFIX, env=env)


def ssh(bed: dict, name: str, command: str, stdin: bytes | None = None, timeout: float = 120) -> str:
    return run("ssh", name, command, env=bed["env"], stdin=stdin, timeout=timeout)


def test_env_lists_both_machines_with_public_and_private_addresses(bed: dict) -> None:
    assert sorted(bed["by_name"]) == [f"{PREFIX}-1", f"{PREFIX}-2"]
    m1, m2 = bed["by_name"][f"{PREFIX}-1"], bed["by_name"][f"{PREFIX}-2"]
    assert Path(bed["key"]).is_file() and bed["key"].startswith(bed["env"]["SELEXTRACT_STATE"])
    for m in (m1, m2):
        assert m["state"] == "running" and m["ssh_user"] == "root" and m["ssh_port"] == 22
        assert m["private"].startswith("10.0.1.") and int(m["private"].rsplit(".", 1)[1]) >= 10
        assert m["public"].rsplit(".", 1)[0] == bed["networks"]["public"]["subnet"].rsplit(".", 1)[0]
    addrs = ssh(bed, m1["name"], "ip -4 -o addr show scope global")
    assert m1["public"] in addrs and m1["private"] in addrs


def test_root_ssh_with_the_key_and_an_own_docker_engine(bed: dict) -> None:
    out = ssh(bed, f"{PREFIX}-1", "id -un; hostname; docker info -f '{{.Name}} {{.Driver}} {{.ID}}'").split("\n")
    assert out[0] == "root" and out[1] == f"{PREFIX}-1"
    name, driver, engine_id = out[2].split()
    assert name == f"{PREFIX}-1" and driver == "overlay2"
    assert engine_id != docker("info", "-f", "{{.ID}}").strip(), "that is this machine's engine, not the machine's"
    assert ssh(bed, f"{PREFIX}-1", "ps -p 1 -o comm=").strip() == "systemd"


def test_private_addresses_reach_each_other_also_from_inner_containers(bed: dict) -> None:
    other = bed["by_name"][f"{PREFIX}-2"]["private"]
    probe = f'exec 3<>/dev/tcp/{other}/22 && read -r -n 4 banner <&3 && printf %s "$banner"'  # bash only
    assert ssh(bed, f"{PREFIX}-1", f"bash -c '{probe}'") == "SSH-"
    ssh(bed, f"{PREFIX}-1", "docker import - sxtest/tiny:1", stdin=tiny_image_tar())
    out = ssh(bed, f"{PREFIX}-1", f"docker run --rm sxtest/tiny:1 /bin/bash -c '{probe}'")
    assert out == "SSH-"


def test_inner_engines_pull_from_a_registry_on_the_private_network(bed: dict) -> None:
    image = f"{bed['registry']}/sxtest/tiny:1"
    ready = (
        f"for i in $(seq 60); do curl -fsS -o /dev/null http://{bed['registry']}/v2/ && exit 0; sleep 0.5; done; exit 1"
    )
    ssh(bed, f"{PREFIX}-1", ready)
    ssh(bed, f"{PREFIX}-1", f"docker import - {image} && docker push -q {image}", stdin=tiny_image_tar())
    out = ssh(bed, f"{PREFIX}-2", f"docker pull -q {image} && docker run --rm {image} /bin/bash -c 'echo pulled'")
    assert out.splitlines()[-1] == "pulled"


def test_cloud_init_runs_the_seed_and_a_machine_without_one_has_it_disabled(bed: dict) -> None:
    status = ssh(bed, f"{PREFIX}-1", "cloud-init status --wait --long", timeout=300)
    assert "status: done" in status, status
    assert ssh(bed, f"{PREFIX}-1", "cat /etc/selextract-testbed /var/tmp/runcmd-ran") == (
        f"written by cloud-init\n{PREFIX}-1\n"
    )
    assert "status: disabled" in ssh(bed, f"{PREFIX}-2", "cloud-init status || true")


def test_kill_cuts_the_power_and_start_boots_from_the_same_disk(bed: dict) -> None:
    name, ip = f"{PREFIX}-2", bed["by_name"][f"{PREFIX}-2"]["public"]
    ssh(bed, name, "touch /run/in-memory /root/on-disk; docker import - sxtest/tiny:1", stdin=tiny_image_tar())
    run("kill", name, env=bed["env"])
    assert docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).split() == ["exited", "137"]
    assert not sshd_answers(ip)
    t0 = time.monotonic()
    run("start", name, env=bed["env"])
    assert sshd_answers(ip), f"start returned after {time.monotonic() - t0:.0f} s but sshd does not answer"
    assert ssh(bed, name, "ls /run/in-memory /root/on-disk 2>&1 || true").count("No such file") == 1
    assert "/root/on-disk" in ssh(bed, name, "ls /root/on-disk")
    out = ssh(bed, name, "docker run --rm sxtest/tiny:1 /bin/bash -c 'echo alive'")
    assert out == "alive\n"


def test_down_leaves_nothing_behind(bed: dict) -> None:
    names = list(bed["by_name"])
    docker("rm", "-f", "-v", REGISTRY)  # the test's own container on the private network
    run("down", "--prefix", PREFIX, env=bed["env"])
    assert docker("ps", "-aq", "--filter", f"label={LABEL}.prefix={PREFIX}") == ""
    for name in names:
        assert docker("volume", "ls", "-q", "--filter", f"label={LABEL}={name}") == ""
    if docker("ps", "-aq", "--filter", f"label={LABEL}") == "":  # no other bed on this engine
        nets = docker("network", "ls", "--format", "{{.Name}}").split()
        assert bed["networks"]["public"]["name"] not in nets and bed["networks"]["private"]["name"] not in nets
    assert not sshd_answers(bed["by_name"][names[0]]["public"])
