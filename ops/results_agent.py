"""Result-storage agent: run with the app's own environment, inside the API container
(`docker exec -i … python3 -c <this file> OP …`) or on this machine with the service's
env vars. Standard library + boto3 only, so it runs wherever the app runs.

Storage settings are the app's: STORAGE_BACKEND (local | s3 | minio), STORAGE_PATH,
S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET, S3_REGION (each may also come
from FOO_FILE or $SECRETS_DIR/foo, as common/config.py reads them).

Operations (JSON on stdout unless streaming):
  check                  the result store is usable
  stats                  {"objects": n, "bytes": n}
  export                 tar of every result object → stdout
  import [--clear]       tar from stdin → result objects ({"objects": n, "bytes": n})
  ensure-buckets B...    create buckets (S3)
  put B KEY | get B KEY  one object from stdin / to stdout
  put-tar B PREFIX       every file of a tar on stdin → objects PREFIX<name>
  get-tar B PREFIX       objects under PREFIX → tar on stdout (names without PREFIX)
  list B [PREFIX]        [{"key", "size"}]
  delete-prefix B PREFIX {"deleted": n}
"""

import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path


def setting(name, default=None):
    value = os.environ.get(name)
    if value:
        return value
    file = os.environ.get(name + "_FILE")
    if file:
        return Path(file).read_text().strip()
    secrets_dir = os.environ.get("SECRETS_DIR") or ("/run/secrets" if os.path.isdir("/run/secrets") else None)
    if secrets_dir:
        candidate = Path(secrets_dir) / name.lower()
        if candidate.is_file():
            return candidate.read_text().strip()
    return default


def backend():
    return (setting("STORAGE_BACKEND") or "local").lower()


def s3_client():
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=setting("S3_ENDPOINT_URL"),
        aws_access_key_id=setting("S3_ACCESS_KEY"),
        aws_secret_access_key=setting("S3_SECRET_KEY"),
        region_name=setting("S3_REGION", "us-east-1"),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def results_bucket():
    return setting("S3_BUCKET", "task-results")


def root():
    return Path(setting("STORAGE_PATH", "/var/lib/selextract/results"))


def iter_s3(client, bucket, prefix=""):
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            yield obj["Key"], obj["Size"]
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def iter_local(base):
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.name.startswith(".tmp-"):
            yield path.relative_to(base).as_posix(), path.stat().st_size


def objects():
    if backend() == "local":
        return list(iter_local(root()))
    return list(iter_s3(s3_client(), results_bucket()))


def safe_key(name):
    while name.startswith("./"):
        name = name[2:]
    parts = Path(name).parts
    if not name or name.startswith("/") or ".." in parts:
        raise SystemExit(f"refusing unsafe object key {name!r}")
    return name


def op_check(_args):
    if backend() == "local":
        base = root()
        base.mkdir(parents=True, exist_ok=True)
        probe = base / ".ops-check"
        probe.write_bytes(b"ok")
        probe.unlink()
        return {"backend": "local", "path": str(base), "ok": True}
    client = s3_client()
    client.head_bucket(Bucket=results_bucket())
    return {"backend": "s3", "bucket": results_bucket(), "endpoint": setting("S3_ENDPOINT_URL"), "ok": True}


def op_stats(_args):
    items = objects()
    return {"objects": len(items), "bytes": sum(size for _, size in items)}


def op_export(_args):
    out = sys.stdout.buffer
    with tarfile.open(fileobj=out, mode="w|gz") as tar:
        if backend() == "local":
            base = root()
            for key, _size in iter_local(base):
                tar.add(str(base / key), arcname=key, recursive=False)
        else:
            client, bucket = s3_client(), results_bucket()
            for key, size in iter_s3(client, bucket):
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                info = tarfile.TarInfo(key)
                info.size = size
                tar.addfile(info, body)
    out.flush()
    return None


def op_import(args):
    clear = "--clear" in args
    count = total = 0
    if backend() == "local":
        base = root()
        base.mkdir(parents=True, exist_ok=True)
        if clear:
            for key, _ in list(iter_local(base)):
                (base / key).unlink()
    else:
        client, bucket = s3_client(), results_bucket()
        if clear:
            for key, _ in list(iter_s3(client, bucket)):
                client.delete_object(Bucket=bucket, Key=key)
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key = safe_key(member.name)
            data = tar.extractfile(member).read()
            if backend() == "local":
                path = base / key
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            else:
                client.put_object(Bucket=bucket, Key=key, Body=data)
            count += 1
            total += len(data)
    return {"objects": count, "bytes": total}


def op_ensure_buckets(args):
    client = s3_client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in args:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
    return {"buckets": args}


def op_put(args):
    bucket, key = args[0], safe_key(args[1])
    data = sys.stdin.buffer.read()
    s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    return {"bucket": bucket, "key": key, "bytes": len(data)}


def op_get(args):
    body = s3_client().get_object(Bucket=args[0], Key=args[1])["Body"]
    out = sys.stdout.buffer
    for chunk in iter(lambda: body.read(1 << 20), b""):
        out.write(chunk)
    out.flush()
    return None


def op_put_tar(args):
    bucket, prefix = args[0], args[1]
    client = s3_client()
    count = 0
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member).read()
                client.put_object(Bucket=bucket, Key=prefix + safe_key(member.name), Body=data)
                count += 1
    return {"objects": count}


def op_get_tar(args):
    bucket, prefix = args[0], args[1]
    client = s3_client()
    out = sys.stdout.buffer
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for key, size in iter_s3(client, bucket, prefix):
            info = tarfile.TarInfo(key[len(prefix) :])
            info.size = size
            tar.addfile(info, client.get_object(Bucket=bucket, Key=key)["Body"])
    out.flush()
    return None


def op_list(args):
    prefix = args[1] if len(args) > 1 else ""
    return [{"key": key, "size": size} for key, size in iter_s3(s3_client(), args[0], prefix)]


def op_delete_prefix(args):
    client = s3_client()
    keys = [key for key, _ in iter_s3(client, args[0], args[1])]
    for key in keys:
        client.delete_object(Bucket=args[0], Key=key)
    return {"deleted": len(keys)}


OPS = {
    "check": op_check,
    "stats": op_stats,
    "export": op_export,
    "import": op_import,
    "ensure-buckets": op_ensure_buckets,
    "put": op_put,
    "get": op_get,
    "put-tar": op_put_tar,
    "get-tar": op_get_tar,
    "list": op_list,
    "delete-prefix": op_delete_prefix,
}


def main(argv):
    if not argv or argv[0] not in OPS:
        sys.stderr.write("usage: results_agent.py " + "|".join(OPS) + " ...\n")
        return 2
    try:
        result = OPS[argv[0]](argv[1:])
    except Exception as exc:  # one line for the operator, not a traceback
        sys.stderr.write(f"{argv[0]}: {type(exc).__name__}: {exc}\n")
        return 1
    if result is not None:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
