"""The one storage interface against local disk and the real S3 server (SeaweedFS)."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from common.config import Settings
from common.storage import LocalStorage, ObjectNotFound, S3Storage, Storage, StorageError, build_storage


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
