"""The phase-4 object store as specced for real hosts, run on this machine's Docker engine:
SeaweedFS (the permissive stand-in for MinIO) on four "hosts" and a client host with its
S3 proxy, each host its own Docker network whose gateway address stands in for the host's
private IP (ports published there, extra_hosts pointing there, exactly as the specs say).
Node 1 (a master, a filer, a gateway) stops: reads and writes go on through the proxy; it
comes back: nothing written meanwhile is missing.

The machine test bed (scripts/machines.sh) runs the same specs on separate machines; this
test needs only Docker and the service images (scripts/build-images.sh).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.specs.base import SECRET_MARK, ContainerSpec
from infra.topology import Role, plan
from tests.infra.pulumi_harness import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

IMAGES = {"objectStore": "selextract/seaweedfs:3", "haproxy": "selextract/haproxy:2.6"}
CLIENT_IMAGE = "selextract/python:3.11"
SECRETS = {
    "objectStoreSecretKey": "TestOnlySecret0123456789",
    "objectStoreBackupKey": "TestOnlyBackup0123456789",
    "objectStoreRootPassword": "TestOnlyAdmin0123456789",
}

# Runs in a client container on the API host's network, with the API container's S3 env.
CLIENT = """
import json, os, sys, time
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1",
                  aws_access_key_id=os.environ["S3_ACCESS_KEY"], aws_secret_access_key=os.environ["S3_SECRET_KEY"],
                  config=Config(signature_version="s3v4", retries={"max_attempts": 1}, connect_timeout=3,
                                read_timeout=10))
bucket = os.environ["S3_BUCKET"]
cmd, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"failures": []}
if cmd == "bucket":
    try:
        s3.create_bucket(Bucket=bucket)
    except Exception as exc:
        if "BucketAlready" not in str(exc):
            print(json.dumps({"failures": [f"create {bucket}: {type(exc).__name__}: {str(exc)[:120]}"]}))
            sys.exit(0)
for i in range(count):
    key = f"{prefix}/{i:03d}.json"
    try:
        if cmd in ("put", "bucket"):
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"key": key}).encode())
        elif json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) != {"key": key}:
            out["failures"].append(f"{key}: wrong body")
    except Exception as exc:
        out["failures"].append(f"{key}: {type(exc).__name__}: {str(exc)[:120]}")
print(json.dumps(out))
"""


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _fill(text: str) -> str:
    return SECRET_MARK.sub(lambda m: SECRETS[m.group(1)], text)


class Hosts:
    """One Docker network per plan host; its gateway address plays the private IP."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.address: dict[str, str] = {}  # private IP of a plan host -> its network's gateway
        self.network: dict[str, str] = {}  # plan host -> network name

    def add(self, host: str, private_ip: str) -> None:
        name = f"{self.label}-{host}"
        _docker("network", "create", "--label", f"selextract.test={self.label}", name)
        config = json.loads(_docker("network", "inspect", name, "--format", "{{json .IPAM.Config}}"))
        self.network[host], self.address[private_ip] = name, config[0]["Gateway"]

    def run(self, spec: ContainerSpec) -> str:
        """`docker create` + uploads + start: what the Pulumi service layer declares."""
        name = f"{self.label}-{spec.name}"
        args = ["create", "--name", name, "--label", f"selextract.test={self.label}"]
        args += ["--network", self.network[spec.host]]
        args += ["--hostname", spec.hostname] if spec.hostname else []
        for alias in (spec.name, *spec.aliases):
            args += ["--network-alias", alias]
        for host, ip in spec.extra_hosts.items():
            args += ["--add-host", f"{host}:{self.address[ip]}"]
        for port in spec.ports:
            args += ["-p", f"{self.address[port.ip]}:{port.external}:{port.internal}"]
        for key, value in spec.env.items():
            args += ["-e", f"{key}={_fill(value)}"]
        for mount in spec.mounts:
            args += ["--mount", f"type=volume,target={mount.target}"]
        args += ["--entrypoint", spec.entrypoint[0]] if spec.entrypoint else []
        _docker(*args, spec.image, *spec.entrypoint[1:], *(_fill(c) for c in spec.command))
        for upload in spec.uploads:
            with tempfile.NamedTemporaryFile("w", suffix=".upload") as f:
                f.write(self._readdress(_fill(upload.content)))
                f.flush()
                Path(f.name).chmod(0o644)
                _docker("cp", f.name, f"{name}:{upload.path}")
        _docker("start", name)
        return name

    def _readdress(self, text: str) -> str:
        """Private IPs named in a config file (the proxy's backends) → their stand-ins."""
        for private, standin in self.address.items():
            text = re.sub(rf"(?<![\d.]){re.escape(private)}(?![\d.])", standin, text)
        return text

    def remove(self) -> None:
        ids = _docker("ps", "-aq", "--filter", f"label=selextract.test={self.label}", check=False).split()
        if ids:
            _docker("rm", "-f", "-v", *ids, check=False)
        nets = _docker("network", "ls", "-q", "--filter", f"label=selextract.test={self.label}", check=False).split()
        if nets:
            _docker("network", "rm", *nets, check=False)


@pytest.fixture(scope="module")
def store() -> Iterator[dict[str, Any]]:
    for image in (*IMAGES.values(), CLIENT_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            pytest.fail(f"{image} missing: scripts/build-images.sh builds it")
    settings = load_stack_file(
        ROOT / "Pulumi.phase4.yaml",
        overrides={
            "selextract:objectStore": {"nodes": 4, "implementation": "seaweedfs"},
            "selextract:images": IMAGES,
        },
    )
    the_plan = plan(settings)
    specs = {s.name: s for s in build_specs(the_plan, settings)}
    nodes = [
        specs[the_plan.container_name(p.host, Role.OBJECT_STORE, 1)] for p in the_plan.placements_of(Role.OBJECT_STORE)
    ]
    api = next(s for s in specs.values() if s.role == Role.API and "S3_ENDPOINT_URL" in s.env)
    # the bucket step's login (the admin's): the app's key may not create buckets
    buckets_step = next(s for s in specs.values() if s.one_shot and "ensure-buckets" in s.command)
    proxy = next(s for s in specs.values() if s.host == api.host and s.name.endswith("-s3-proxy-1"))
    hosts = Hosts(f"sx-osh-{uuid.uuid4().hex[:6]}")
    try:
        for host in {n.host for n in nodes} | {api.host}:
            hosts.add(host, str(the_plan.host(host).private_ip))
        names = [hosts.run(n) for n in nodes]
        hosts.run(proxy)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "client.py"
            script.write_text(CLIENT)
            script.chmod(0o644)

            def client(cmd: str, prefix: str, count: int) -> list[str]:
                out = _docker(
                    "run", "--rm", "--network", hosts.network[api.host], "-v", f"{script}:/client.py:ro",
                    *(a for k in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET")
                      for a in ("-e", f"{k}={_fill((buckets_step if cmd == 'bucket' else api).env[k])}")),
                    CLIENT_IMAGE, "python", "/client.py", cmd, prefix, str(count), timeout=180,
                )  # fmt: skip
                return json.loads(out.splitlines()[-1])["failures"]

            yield {"client": client, "nodes": names, "hosts": hosts}
    finally:
        hosts.remove()


def _until(probe: Any, timeout: float) -> float:
    start = time.monotonic()
    while True:
        failures = probe()
        if not failures:
            return round(time.monotonic() - start, 1)
        assert time.monotonic() - start < timeout, f"still failing after {timeout} s: {failures[:3]}"
        time.sleep(2)


def test_losing_any_node_keeps_storage_through_the_proxy(store: dict[str, Any]) -> None:
    client = store["client"]
    _until(lambda: client("bucket", "ready", 1), timeout=180)
    assert client("put", "before", 20) == []
    assert client("get", "before", 20) == []

    _docker("stop", "-t", "5", store["nodes"][0])  # a master, a filer and a gateway
    recovered = _until(lambda: client("get", "before", 20) + client("put", "during-probe", 1), timeout=90)
    assert client("put", "during", 20) == [], "writes go on"
    assert client("get", "during", 20) == []

    _docker("start", store["nodes"][0])
    time.sleep(10)  # node 1 back and healthy again
    assert client("get", "before", 20) + client("get", "during", 20) == [], "nothing written meanwhile is missing"
    assert client("put", "after", 5) == [] and client("get", "after", 5) == []

    _docker("stop", "-t", "5", store["nodes"][1])  # the node now serving
    _until(lambda: client("get", "during", 20) + client("put", "second-probe", 1), timeout=90)
    print(f"node 1 stopped: storage answered again after {recovered} s")
