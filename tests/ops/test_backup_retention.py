"""Backup store and retention (no services needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.access import OpsError
from ops.backup import BackupStore, Component, Manifest, Retention, prune, to_keep

NOW = datetime(2025, 6, 30, 2, 0, tzinfo=UTC)


def _daily(days: int, per_day: int = 1) -> list[tuple[str, datetime, bool]]:
    out = []
    for d in range(days):
        for k in range(per_day):
            t = NOW - timedelta(days=d, hours=k)
            out.append((t.strftime("%Y%m%dT%H%M%SZ"), t, False))
    return out


def test_keeps_the_newest_of_each_recent_day_week_and_month() -> None:
    backups = _daily(200, per_day=2)  # two a day for 200 days
    keep = to_keep(backups, Retention(last=0, daily=7, weekly=4, monthly=6))
    kept = sorted((b for b in backups if b[0] in keep), key=lambda b: b[1], reverse=True)
    # the 7 newest days: their 02:00 backup, not the 01:00 one
    assert [b[1] for b in kept[:7]] == [NOW - timedelta(days=d) for d in range(7)]
    assert all(b[1].hour == 2 for b in kept)
    months = {(b[1].year, b[1].month) for b in kept}
    assert len(months) == 6  # June back to January
    assert min(b[1] for b in kept) >= datetime(2025, 1, 1, tzinfo=UTC)
    assert len(keep) < 7 + 4 + 6 + 1


def test_pinned_backups_survive_and_the_newest_is_always_kept() -> None:
    backups = _daily(60)
    pinned = ("20240101T000000Z", datetime(2024, 1, 1, tzinfo=UTC), True)
    keep = to_keep([*backups, pinned], Retention(last=0, daily=0, weekly=0, monthly=0))
    assert keep == {pinned[0], backups[0][0]}


def test_keep_last_keeps_same_day_backups() -> None:
    backups = _daily(3, per_day=2)  # 02:00 and 01:00 of three days
    keep = to_keep(backups, Retention(last=3, daily=7, weekly=0, monthly=0))
    assert keep == {b[0] for b in backups[:3]} | {backups[4][0]}


def test_nothing_to_keep_from_nothing() -> None:
    assert to_keep([], Retention()) == set()


def _fake(store: BackupStore, when: datetime, pinned: bool = False) -> str:
    bid = when.strftime("%Y%m%dT%H%M%SZ")
    directory = store.path(bid)
    (directory / "database").mkdir(parents=True)
    (directory / "database" / "selextract.dump").write_bytes(b"x")
    manifest = Manifest(
        id=bid,
        stack=store.stack,
        phase=0,
        created_at=when.isoformat(timespec="seconds"),
        kind="database-only",
        components={"database": Component("database/selextract.dump", "0" * 64, 1, {"row_counts": {}})},
        pinned=pinned,
    )
    store.save(manifest, directory)
    return bid


def test_store_list_prune_and_partials(tmp_path: Path) -> None:
    store = BackupStore(tmp_path, "s1")
    ids = [_fake(store, NOW - timedelta(days=d)) for d in range(10)]
    pinned = _fake(store, NOW - timedelta(days=400), pinned=True)
    (store.root / "20990101T000000Z.partial").mkdir()  # an interrupted backup is never listed
    assert [m.id for m in store.list()] == [*ids, pinned]
    assert store.resolve("latest").id == ids[0]
    removed = prune(store, Retention(last=0, daily=3, weekly=0, monthly=0), dry_run=True)
    assert removed == ids[3:]
    assert len(store.list()) == 11  # dry run
    assert prune(store, Retention(last=0, daily=3, weekly=0, monthly=0)) == ids[3:]
    assert [m.id for m in store.list()] == [*ids[:3], pinned]
    with pytest.raises(OpsError, match="no backup nope"):
        store.load("nope")
    with pytest.raises(OpsError, match="invalid backup id"):
        store.path("../etc")


def test_new_ids_never_collide(tmp_path: Path) -> None:
    store = BackupStore(tmp_path, "s1")
    first = store.new_id(NOW)
    store.path(first).mkdir(parents=True)
    assert store.new_id(NOW) == first + "-2"


def test_manifest_round_trip(tmp_path: Path) -> None:
    store = BackupStore(tmp_path, "s1")
    bid = _fake(store, NOW)
    data = json.loads((store.path(bid) / "manifest.json").read_text())
    assert data["format"] == 1 and data["components"]["database"]["bytes"] == 1
    assert Manifest.from_dict(data) == store.load(bid)


def test_a_failed_upload_leaves_the_local_manifest_without_a_remote_copy(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ops.backup import upload_backup

    store = BackupStore(tmp_path, "phase4")
    manifest = Manifest("20250630T020000Z", "phase4", 4, NOW.isoformat(), "full", {})
    directory = store.path(manifest.id)
    directory.mkdir(parents=True)

    def unreachable(*_: object) -> None:
        raise OpsError("object storage put-tar: connection refused")

    target = SimpleNamespace(backups=SimpleNamespace(put_tree=unreachable))
    with pytest.raises(OpsError, match="connection refused"):
        upload_backup(target, store, manifest)  # type: ignore[arg-type]
    assert manifest.remote is None
    assert store.load(manifest.id).remote is None
