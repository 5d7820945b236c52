"""node-exporter on real hosts sees the host, not its container: the host's root mounted
at /host (read-only, rslave so volumes mounted later appear), the host's PID namespace (it
reads the mount table of PID 1), `--path.rootfs=/host` (node_exporter's README, Docker
section). Without them there are no disk metrics and StorageUsageHigh can never fire."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.specs.base import ContainerSpec, HostMount
from infra.topology import plan
from tests.infra.pulumi_harness import ROOT, run_program

STACKS = sorted(p.name for p in ROOT.glob("Pulumi.*.yaml"))
REMOTE_STACKS = [s for s in STACKS if load_stack_file(ROOT / s).target != "local"]
HOST_ROOT = HostMount(source="/", target="/host", read_only=True, propagation="rslave")


def _exporters(stack_file: str) -> list[ContainerSpec]:
    settings = load_stack_file(ROOT / stack_file)
    the_plan = plan(settings)
    found = [s for s in build_specs(the_plan, settings) if s.name.endswith("-node-exporter-1")]
    assert sorted(s.host for s in found) == sorted(h.name for h in the_plan.hosts), "one exporter per host"
    return found


@pytest.mark.parametrize("stack_file", REMOTE_STACKS)
def test_each_host_exporter_reads_the_host_root(stack_file: str) -> None:
    settings = load_stack_file(ROOT / stack_file)
    the_plan = plan(settings)
    for spec in _exporters(stack_file):
        assert "--path.rootfs=/host" in spec.command
        assert HOST_ROOT in spec.host_mounts
        assert spec.pid_host, "the filesystem collector reads /proc/1/mounts: the host's PID 1"
        # still only on the private network (the policy pack forbids host networking)
        assert [p.ip for p in spec.ports] == [the_plan.host(spec.host).private_ip]


def test_the_program_declares_the_bind_mount_and_host_pid() -> None:
    run = run_program(ROOT / "Pulumi.phase4.yaml")
    exporters = [r for r in run.of_type("docker:index/container:Container") if r.name.endswith("-node-exporter-1")]
    assert len(exporters) == len(plan(load_stack_file(ROOT / "Pulumi.phase4.yaml")).hosts)
    for r in exporters:
        assert r.inputs["pidMode"] == "host"
        binds = [m for m in r.inputs["mounts"] if m["type"] == "bind"]
        assert binds == [{"type": "bind", "source": "/", "target": "/host", "readOnly": True,
                          "bindOptions": {"propagation": "rslave"}}]  # fmt: skip


def test_local_exporter_is_unchanged() -> None:
    """Locally every plan host is this machine: one exporter, no host mount."""
    (spec,) = _exporters("Pulumi.local.yaml")
    assert not spec.host_mounts and not spec.pid_host and not spec.command


def _filesystem(host: str, mountpoint: str, fstype: str, device: str, used: float) -> list[dict[str, str]]:
    """node_filesystem_* series as node-exporter emits them with --path.rootfs=/host and the
    host's PID 1: mount points are host paths (the /host prefix is stripped), job/host/
    roles come from prometheus.yml.j2."""
    labels = (
        f'{{job="node",host="{host}",instance="10.0.1.10:9100",container="s-{host}-node-exporter-1",'
        f'roles="objectstore",device="{device}",fstype="{fstype}",mountpoint="{mountpoint}"}}'
    )
    size = 100 * 2**30
    return [
        {"series": f"node_filesystem_size_bytes{labels}", "values": f"{size}x15"},
        {"series": f"node_filesystem_avail_bytes{labels}", "values": f"{int(size * (1 - used))}x15"},
    ]


def test_storage_alert_fires_on_the_series_node_exporter_emits(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed: run `make setup` (or scripts/setup-system.sh)")
    series = [
        *_filesystem("minio-01", "/", "ext4", "/dev/sda1", 0.40),
        *_filesystem("minio-01", "/mnt/HC_Volume_1001", "ext4", "/dev/sdb", 0.85),  # the data volume
        *_filesystem("db-01", "/", "ext4", "/dev/sda1", 0.50),
        *_filesystem("db-01", "/run", "tmpfs", "tmpfs", 0.95),  # tmpfs: not storage
        *_filesystem("db-01", "/", "overlay", "overlay", 0.99),  # a container's root, were one listed
    ]
    tests = {
        "rule_files": [str(ROOT / "configs" / "alert-rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "7m",
                        "alertname": "StorageUsageHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "host": "minio-01"},
                                "exp_annotations": {"summary": "Consider shared storage adoption"},
                            }
                        ],
                    }
                ],
                "promql_expr_test": [
                    {
                        "expr": "disk_usage_percent",
                        "eval_time": "7m",
                        "exp_samples": [
                            {"labels": 'disk_usage_percent{host="minio-01"}', "value": 85},
                            {"labels": 'disk_usage_percent{host="db-01"}', "value": 50},
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.e2e
@pytest.mark.docker
def test_the_specced_exporter_reports_the_host_filesystems() -> None:
    """The exporter container as specced (its host mount, host PID namespace, flags), on
    this machine's Docker engine: the host's root appears as mountpoint="/", nothing of the
    container's own (its /etc/hosts bind, its /tmp). Without the mount there are no
    filesystem series at all. Where this machine's own root is a private mount (a container
    running the tests), Docker refuses rslave; a server's root is shared (systemd makes it
    so at boot), so that one option is then dropped here, and said."""
    image = "selextract/node-exporter:1"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.fail(f"{image} missing: scripts/build-images.sh builds it")
    (spec,) = [s for s in _exporters("Pulumi.phase4.yaml") if s.host == "minio-01"]

    def run(propagation: bool) -> subprocess.CompletedProcess[str]:
        name = f"sx-node-exporter-test-{uuid.uuid4().hex[:8]}"
        args = ["docker", "run", "-d", "--name", name, "--read-only", "-p", "127.0.0.1::9100"]
        args += [a for path in spec.tmpfs for a in ("--tmpfs", path)]
        args += ["--pid", "host"] if spec.pid_host else []
        for m in spec.host_mounts:
            options = [f"type=bind,source={m.source},target={m.target}"]
            options += ["readonly"] if m.read_only else []
            options += [f"bind-propagation={m.propagation}"] if m.propagation and propagation else []
            args += ["--mount", ",".join(options)]
        done = subprocess.run([*args, image, *spec.command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:  # a refused start leaves the container created: not ours to keep
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        return done

    started = run(propagation=True)
    if "not a shared or slave mount" in started.stderr:
        print("this machine's / is a private mount: rslave dropped for this run")
        started = run(propagation=False)
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        port = (
            subprocess.run(["docker", "port", container, "9100"], capture_output=True, text=True, check=True)
            .stdout.split(":")[-1]
            .strip()
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "node-exporter did not answer"
                time.sleep(0.5)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    points = set(re.findall(r'^node_filesystem_avail_bytes\{[^}]*mountpoint="([^"]+)"', metrics, re.M))
    assert "/" in points, f"the host's root is reported: {points}"
    assert not {p for p in points if p.startswith(("/host", "/etc/host", "/etc/resolv"))}, points
    assert "/tmp" not in points, "the container's own tmpfs is not the host's"
