"""Result storage behind one interface: local disk or any S3 endpoint (MinIO, SeaweedFS, AWS).

Keys are relative, slash-separated paths such as ``tasks/<id>/results.json``. Writes
replace whole objects, so a retried write overwrites instead of duplicating.
"""

from __future__ import annotations

import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath

from common.config import Settings, get_settings

CHUNK = 64 * 1024


class StorageError(RuntimeError):
    """The backend cannot be reached or refused the operation."""


class ObjectNotFound(StorageError):
    """No object under that key."""


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or key.endswith("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(ABC):
    """What the API and the worker need from a result store."""

    name: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """Stream an object; raises ObjectNotFound before yielding when it is missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError when the backend is not usable (readiness probe)."""

    @abstractmethod
    def ensure_ready(self) -> None:
        """Create the directory/bucket if needed (run on deploy)."""

    def get(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))


class LocalStorage(Storage):
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # write-then-rename: readers never see a half-written result
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: cannot write {key}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                # a full or read-only disk is a storage condition the task retries, as with S3
                raise StorageError(f"local storage {self.root}: cannot write {key}: {exc.strerror or exc}") from exc
            raise

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

        def chunks() -> Iterator[bytes]:
            with fh:
                while block := fh.read(CHUNK):
                    yield block

        return chunks()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        base = self.root / _check_key(prefix.rstrip("/"))
        files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
        for p in files:
            p.unlink()
        return len(files)

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not a writable directory")

    def ensure_ready(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


class S3Storage(Storage):
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
            aws_secret_access_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
            region_name=settings.s3_region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _error(self, exc: Exception) -> StorageError:
        return StorageError(f"s3 bucket {self.bucket}: {exc}")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=_check_key(key), Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from exc

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=_check_key(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from exc
            raise self._error(exc) from exc
        except BotoCoreError as exc:
            raise self._error(exc) from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return chunks()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=_check_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(exc) from exc
        return True

    def delete_prefix(self, prefix: str) -> int:
        paginator = self.client.get_paginator("list_objects_v2")
        count = 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=_check_key(prefix.rstrip("/")) + "/"):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
                count += len(objects)
        return count

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from exc

    def ensure_ready(self) -> None:
        self.ensure_bucket(self.bucket)

    def ensure_bucket(self, name: str) -> bool:
        """Create a bucket unless it exists; True when it was created."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=name)
            return False
        except ClientError:
            self.client.create_bucket(Bucket=name)
            return True


def build_storage(settings: Settings) -> Storage:
    """STORAGE_BACKEND picks the implementation; ``minio`` is S3 with another name."""
    if settings.storage_backend == "local":
        return LocalStorage(settings.storage_path)
    return S3Storage(settings)


@lru_cache
def get_storage() -> Storage:
    return build_storage(get_settings())


def still_starting(exc: BaseException) -> bool:
    """An object store that does not answer yet, or answers 5xx: what a deploy waits out
    (a new SeaweedFS/MinIO node takes seconds to minutes to serve S3 on a busy host); a
    refusal such as a wrong key is final."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    while isinstance(exc, StorageError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    return isinstance(exc, ConnectionError | HTTPClientError)


def ensure_buckets(storage: Storage, names: list[str], wait_s: float, poll_s: float = 2.0) -> None:
    """The results bucket and `names`, once the store answers (up to `wait_s` seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            storage.ensure_ready()
            break
        except Exception as exc:
            if not still_starting(exc) or time.monotonic() >= deadline:
                raise
            print(f"waiting for the object store: {exc}", flush=True)
            time.sleep(poll_s)
    print(f"ready: {storage.name} {getattr(storage, 'bucket', getattr(storage, 'root', ''))}")
    if isinstance(storage, S3Storage):
        for name in names:
            print(f"{'created' if storage.ensure_bucket(name) else 'exists'}: bucket {name}")


def main(argv: list[str] | None = None) -> int:
    """``python -m common.storage ensure-buckets [NAME...] | check``: run on deploy."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m common.storage", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure-buckets", help="create the results bucket (and any NAME given) if missing")
    ensure.add_argument("names", nargs="*")
    ensure.add_argument(
        "--wait", type=float, default=180, metavar="SECONDS", help="how long a starting object store may take to answer"
    )
    sub.add_parser("check", help="exit 1 unless the configured storage is usable")
    args = parser.parse_args(argv)
    storage = get_storage()
    try:
        if args.command == "check":
            storage.check()
            print(f"storage ok ({storage.name})")
            return 0
        ensure_buckets(storage, args.names, args.wait)
    except Exception as exc:
        print(f"storage error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
