"""Each object-store login reaches only its own buckets, on a real SeaweedFS node started
from the specs (first-start seed, key sync and key retirement as a deploy and
`selextract secrets rotate` run them): the app's key (API and workers) uses task-results
and logs but gets AccessDenied on `backups` and cannot create buckets; the backup key
(only ops holds it) uses `backups` and nothing else; the admin login creates buckets.
A compromised API or worker can then neither read nor delete the backups.

MinIO cannot be built here: its per-key policies are checked as data."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra.config import load_stack_file
from infra.specs import build_specs
from infra.specs.base import SECRET_MARK
from infra.specs.objectstore import (
    ADD_KEY,
    KEEP_ONLY,
    app_access_key,
    backup_access_key,
    key_sync_input,
    minio_policy,
    minio_root_user,
)
from infra.topology import Role, plan
from tests.infra.pulumi_harness import ROOT
from tests.infra.test_objectstore_hosts import SECRETS, Hosts

BASE = "selextract"


def _fill(text: str, **values: str) -> str:
    return SECRET_MARK.sub(lambda m: {**SECRETS, **values}[m.group(1)], text)


def _docker(*args: str, input: str) -> str:
    done = subprocess.run(["docker", *args], input=input, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _identities(node: str) -> set[str]:
    """The identity names the node's S3 gateway has (its config file, as rendered)."""
    config = json.loads(_docker("exec", "-i", node, "cat", "/data/.s3.json", input=""))
    return {identity["name"] for identity in config["identities"]}


def _denied(call: Callable[[], Any]) -> bool:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


@pytest.fixture(scope="module")
def node() -> Iterator[dict[str, Any]]:
    """One SeaweedFS node as phase 2 specs it (published on its host's private IP)."""
    if subprocess.run(["docker", "image", "inspect", "selextract/seaweedfs:3"], capture_output=True).returncode:
        pytest.fail("selextract/seaweedfs:3 missing: scripts/build-images.sh builds it")
    settings = load_stack_file(
        ROOT / "Pulumi.phase2.yaml",
        overrides={
            "selextract:objectStore": {"nodes": 1, "implementation": "seaweedfs"},
            "selextract:images": {"objectStore": "selextract/seaweedfs:3"},
        },
    )
    the_plan = plan(settings)
    specs = build_specs(the_plan, settings)
    spec = next(s for s in specs if s.role == Role.OBJECT_STORE and s.name.endswith("-1") and s.password_sync)
    buckets_step = next(s for s in specs if s.one_shot and "ensure-buckets" in s.command)
    api = next(s for s in specs if s.role == Role.API and "S3_ACCESS_KEY" in s.env)
    hosts = Hosts(f"sx-osl-{uuid.uuid4().hex[:6]}")
    try:
        hosts.add(spec.host, str(the_plan.host(spec.host).private_ip))
        name = hosts.run(spec)
        address = hosts.address[spec.ports[0].ip]
        yield {
            "name": name,
            "url": f"http://{address}:{spec.ports[0].external}",
            "admin": (buckets_step.env["S3_ACCESS_KEY"], _fill(buckets_step.env["S3_SECRET_KEY"])),
            "app": (api.env["S3_ACCESS_KEY"], _fill(api.env["S3_SECRET_KEY"])),
            "backup": (backup_access_key(BASE), SECRETS["objectStoreBackupKey"]),
            "settings": settings,
        }
    finally:
        hosts.remove()


def _client(url: str, login: tuple[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=login[0],
        aws_secret_access_key=login[1],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _until_up(url: str, login: tuple[str, str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _client(url, login).list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _uses(s3: Any, bucket: str) -> None:
    """Write, list, read and delete one object: what the app or a backup does."""
    s3.put_object(Bucket=bucket, Key="probe/x.json", Body=b"{}")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="probe/").get("Contents", [])] == [
        "probe/x.json"
    ]
    assert s3.get_object(Bucket=bucket, Key="probe/x.json")["Body"].read() == b"{}"
    s3.head_bucket(Bucket=bucket)
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "probe/x.json"}]})


def _shut_out(s3: Any, bucket: str, seeded: str) -> None:
    """No read, list, write or delete in `bucket` (which holds `seeded`)."""
    assert _denied(lambda: s3.get_object(Bucket=bucket, Key=seeded)), bucket
    assert _denied(lambda: s3.list_objects_v2(Bucket=bucket)), bucket
    assert _denied(lambda: s3.put_object(Bucket=bucket, Key="intruder", Body=b"x")), bucket
    assert _denied(lambda: s3.delete_object(Bucket=bucket, Key=seeded)), bucket


@pytest.mark.docker
def test_each_login_reaches_only_its_buckets_through_a_rotation(node: dict[str, Any]) -> None:
    url = node["url"]
    _until_up(url, node["admin"])
    admin = _client(url, node["admin"])
    for bucket in ("task-results", "backups", "logs"):
        admin.create_bucket(Bucket=bucket)
        admin.put_object(Bucket=bucket, Key="seeded", Body=b"keep me")

    def check(app_login: tuple[str, str]) -> None:
        app, backup = _client(url, app_login), _client(url, node["backup"])
        _uses(app, "task-results")
        _uses(app, "logs")
        _shut_out(app, "backups", "seeded")
        assert _denied(lambda: app.create_bucket(Bucket="app-made"))
        _uses(backup, "backups")
        _shut_out(backup, "task-results", "seeded")
        _shut_out(backup, "logs", "seeded")
        assert admin.get_object(Bucket="backups", Key="seeded")["Body"].read() == b"keep me"

    check(node["app"])
    assert _identities(node["name"]) == {BASE, backup_access_key(BASE), minio_root_user(BASE)}

    # a rotation: the key sync adds generation 1 beside generation 0, then the old one goes
    settings = node["settings"]
    rotated = {"objectStoreSecretKey": 1}
    new_app = (app_access_key(BASE, rotated), "AppOnlySecretGeneration1")
    sync = _fill(
        key_sync_input("seaweedfs", BASE, rotated, settings.object_store.buckets), objectStoreSecretKey=new_app[1]
    )
    _docker("exec", "-i", node["name"], "sh", "-c", ADD_KEY["seaweedfs"], input=sync)
    check(new_app)
    check(node["app"])  # the running version keeps working until it is gone
    removed = _docker("exec", "-i", node["name"], "sh", "-c", KEEP_ONLY["seaweedfs"], input=f"{new_app[0]} {BASE}\n")
    assert removed.split() == [BASE]
    time.sleep(1)
    check(new_app)
    assert _identities(node["name"]) == {new_app[0], backup_access_key(BASE), minio_root_user(BASE)}
    assert _client(url, node["admin"]).list_buckets()  # admin and backup logins survive retirement


def test_minio_policies_name_only_their_buckets() -> None:
    settings = load_stack_file(ROOT / "Pulumi.phase4.yaml")
    assert settings.object_store_impl == "minio"
    lines = key_sync_input("minio", BASE, {}, settings.object_store.buckets).splitlines()
    logins = {line.split(" ", 2)[0]: json.loads(line.split(" ", 2)[2]) for line in lines}
    assert set(logins) == {BASE, backup_access_key(BASE)}  # root (the bucket step's) is MinIO's own
    for login, buckets in ((BASE, {"task-results", "logs"}), (backup_access_key(BASE), {"backups"})):
        resources = {r for st in logins[login]["Statement"] for r in st["Resource"]}
        assert resources == {f"arn:aws:s3:::{b}" for b in buckets} | {f"arn:aws:s3:::{b}/*" for b in buckets}
        actions = {a for st in logins[login]["Statement"] for a in st["Action"]}
        assert "s3:*" not in actions and not {a for a in actions if "Bucket" in a and "List" not in a} - {
            "s3:GetBucketLocation"
        }
    assert json.loads(minio_policy(["logs"]))["Statement"][1]["Resource"] == ["arn:aws:s3:::logs/*"]


def test_only_the_bucket_step_gets_the_admin_login_and_no_app_container_the_backup_key() -> None:
    for stack in ("Pulumi.phase2.yaml", "Pulumi.phase4.yaml", "Pulumi.local.yaml"):
        settings = load_stack_file(ROOT / stack)
        for spec in build_specs(plan(settings), settings):
            if spec.role in (Role.API, Role.WORKER):
                assert not {"objectStoreBackupKey", "objectStoreRootPassword"} & set(spec.secrets), spec.name
            if spec.one_shot and "ensure-buckets" in spec.command:
                assert spec.env["S3_ACCESS_KEY"] == minio_root_user(settings.object_store.access_key)
                assert "objectStoreRootPassword" in spec.secrets
