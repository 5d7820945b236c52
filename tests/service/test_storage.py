"""The one storage interface against local disk and the real S3 server (SeaweedFS)."""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from common.config import Settings
from common.storage import (
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    Storage,
    StorageError,
    build_storage,
    ensure_buckets,
)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, service_env: dict[str, str]) -> Storage:
    if request.param == "local":
        return build_storage(Settings(storage_backend="local", storage_path=tmp_path / "results"))
    return build_storage(Settings(storage_backend="minio"))


def test_roundtrip_overwrite_and_delete(storage: Storage) -> None:
    storage.ensure_ready()
    storage.check()
    prefix = f"tasks/{uuid.uuid4()}"
    key = f"{prefix}/pages/00001.json"
    assert not storage.exists(key)
    storage.put(key, b'{"v": 1}', "application/json")
    storage.put(key, b'{"v": 2}', "application/json")  # a retry overwrites
    assert storage.get(key) == b'{"v": 2}'
    big = bytes(range(256)) * 1024
    storage.put(f"{prefix}/big.bin", big)
    assert b"".join(storage.iter_chunks(f"{prefix}/big.bin")) == big
    with pytest.raises(ObjectNotFound):
        storage.iter_chunks(f"{prefix}/missing.json")
    assert storage.delete_prefix(prefix) == 2
    assert not storage.exists(key)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "dir/"])
def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put(key, b"x")


def test_s3_check_names_the_missing_bucket(service_env: dict[str, str]) -> None:
    storage = S3Storage(Settings(storage_backend="s3", s3_bucket=f"absent-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(StorageError, match="absent-"):
        storage.check()


def test_local_check_wants_a_writable_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a writable directory"):
        LocalStorage(tmp_path / "nope").check()


def test_local_put_on_a_full_disk_is_a_storage_error_and_keeps_the_old_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC is retryable like any backend outage; the write-then-rename leaves the previous
    version whole and no temp file behind (the fault suite fills a real tmpfs)."""
    storage = LocalStorage(tmp_path)
    storage.put("tasks/t/result.json", b"v1")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int, mode: str) -> None:
            self.fh = real_fdopen(fd, mode)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("common.storage.os.fdopen", FullDisk)
    with pytest.raises(StorageError, match="No space left on device"):
        storage.put("tasks/t/result.json", b"v2")
    monkeypatch.undo()
    assert b"".join(storage.iter_chunks("tasks/t/result.json")) == b"v1"
    assert sorted(p.name for p in (tmp_path / "tasks" / "t").iterdir()) == ["result.json"]


class _StartingStore(LocalStorage):
    """Answers with `errors` (one per call) before it is ready."""

    def __init__(self, root: Path, errors: list[Exception]) -> None:
        super().__init__(root)
        self.errors, self.calls = errors, 0

    def ensure_ready(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        super().ensure_ready()


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadBucket")


def test_ensure_buckets_waits_for_a_store_that_is_still_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deploy's bucket step runs right after the object-store containers are created;
    refused connections and 503s are waited out, then the buckets are made."""
    errors: list[Exception] = [
        EndpointConnectionError(endpoint_url="http://objectstore:9000"),
        _client_error(503, "ServiceUnavailable"),
    ]
    store = _StartingStore(tmp_path / "results", errors)
    ensure_buckets(store, [], wait_s=30, poll_s=0.01)
    assert store.calls == 3 and (tmp_path / "results").is_dir()
    out = capsys.readouterr().out
    assert out.count("waiting for the object store") == 2 and "ready: local" in out


def test_ensure_buckets_does_not_wait_out_a_refusal(tmp_path: Path) -> None:
    store = _StartingStore(tmp_path / "results", [_client_error(403, "InvalidAccessKeyId")])
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        ensure_buckets(store, [], wait_s=30, poll_s=0.01)
    assert store.calls == 1


def test_ensure_buckets_gives_up_on_a_store_that_never_answers(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        storage_backend="s3", s3_endpoint_url=f"http://127.0.0.1:{port}", s3_access_key="k", s3_secret_key="s"
    )
    started = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        ensure_buckets(S3Storage(settings), [], wait_s=1, poll_s=0.2)
    assert time.monotonic() - started >= 1
    assert "waiting for the object store" in capsys.readouterr().out
