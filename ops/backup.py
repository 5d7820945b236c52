"""Backups: `selextract backup create|list|verify|prune` and `selextract restore`.

A backup is a directory `<backups>/<stack>/<id>/` (id = UTC time, `20250101T020000Z`):

    manifest.json               what is inside, with sha256 and size of every file
    database/selextract.dump    pg_dump custom format, taken in an exported snapshot
    redis/dump.rdb              Redis RDB snapshot (not with --database-only)
    results/results.tar.gz      every result object (not with --database-only)

The manifest records the exact row count of every table *in the dump's snapshot* and the
key count of the RDB, so `verify` (restore into a scratch database, compare) and
`restore` (compare after restoring) can prove a backup whole. A backup is written under
`<id>.partial` and renamed when complete, so a crash never leaves a half backup that
looks whole. When the deployment has object storage (phase 2+), the files are also copied
to the `backups` bucket under `<stack>/<id>/`. Retention keeps the last few backups and the
newest backup of each of the last N days, weeks and months; pinned backups
(pre-migration, labelled) are never pruned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.access import OpsError, Target, scratch_redis

FORMAT = 1
BACKUPS_BUCKET = "backups"
DB_FILE = "database/selextract.dump"
REDIS_FILE = "redis/dump.rdb"
RESULTS_FILE = "results/results.tar.gz"
ID_FORMAT = "%Y%m%dT%H%M%SZ"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Component:
    file: str
    sha256: str
    bytes: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    id: str
    stack: str
    phase: int | None
    created_at: str
    kind: str  # full | database-only
    components: dict[str, Component]
    label: str | None = None
    pinned: bool = False
    remote: str | None = None  # s3 prefix in the backups bucket, when copied there
    format: int = FORMAT
    duration_s: float = 0.0

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    @property
    def size(self) -> int:
        return sum(c.bytes for c in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["components"] = {k: Component(**v) for k, v in data["components"].items()}
        return cls(**data)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class BackupStore:
    """The local backup directory of one stack."""

    def __init__(self, root: Path, stack: str) -> None:
        self.stack = stack
        self.root = root / stack

    def path(self, backup_id: str) -> Path:
        if "/" in backup_id or backup_id.startswith("."):
            raise OpsError(f"invalid backup id {backup_id!r}")
        return self.root / backup_id

    def new_id(self, now: datetime | None = None) -> str:
        base = (now or datetime.now(UTC)).strftime(ID_FORMAT)
        candidate, n = base, 1
        while self.path(candidate).exists() or self.path(candidate + ".partial").exists():
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def list(self) -> list[Manifest]:
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and not d.name.endswith(".partial") and (d / "manifest.json").is_file():
                try:
                    out.append(self.load(d.name))
                except (ValueError, KeyError, TypeError):
                    continue
        return sorted(out, key=lambda m: (m.created, m.id), reverse=True)

    def load(self, backup_id: str) -> Manifest:
        path = self.path(backup_id) / "manifest.json"
        if not path.is_file():
            known = ", ".join(m.id for m in self.list()[:5]) or "none"
            raise OpsError(f"no backup {backup_id} for stack {self.stack} in {self.root} (latest: {known})")
        return Manifest.from_dict(json.loads(path.read_text()))

    def save(self, manifest: Manifest, directory: Path) -> None:
        tmp = directory / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        tmp.replace(directory / "manifest.json")

    def resolve(self, backup_id: str) -> Manifest:
        """`latest` or an id."""
        if backup_id == "latest":
            items = self.list()
            if not items:
                raise OpsError(f"no backups for stack {self.stack} in {self.root}")
            return items[0]
        return self.load(backup_id)

    def delete(self, backup_id: str) -> None:
        shutil.rmtree(self.path(backup_id))


# --- retention -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    last: int = 3
    daily: int = 7
    weekly: int = 4
    monthly: int = 6


def to_keep(backups: Iterable[tuple[str, datetime, bool]], policy: Retention) -> set[str]:
    """Grandfather-father-son: the `last` newest backups, the newest backup of each of the
    last `daily` days with a backup, `weekly` ISO weeks and `monthly` months; plus pinned
    ones and always the newest."""
    items = sorted(backups, key=lambda b: b[1], reverse=True)
    keep = {bid for bid, _, pinned in items if pinned}
    keep |= {bid for bid, _, _ in items[: max(policy.last, 1)]}
    buckets: list[tuple[Callable[[datetime], Any], int]] = [
        (lambda t: t.date(), policy.daily),
        (lambda t: t.isocalendar()[:2], policy.weekly),
        (lambda t: (t.year, t.month), policy.monthly),
    ]
    for bucket_of, count in buckets:
        seen: list[Any] = []
        for bid, created, _ in items:
            bucket = bucket_of(created)
            if bucket in seen:
                continue
            seen.append(bucket)
            if len(seen) > count:
                break
            keep.add(bid)
    return keep


def prune(store: BackupStore, policy: Retention, target: Target | None = None, *, dry_run: bool = False) -> list[str]:
    manifests = store.list()
    keep = to_keep(((m.id, m.created, m.pinned) for m in manifests), policy)
    doomed = [m for m in manifests if m.id not in keep]
    if not dry_run:
        for m in doomed:
            store.delete(m.id)
            if m.remote and target is not None and target.object_storage:
                # the local copy is gone; a stale remote copy is harmless
                with contextlib.suppress(OpsError):
                    target.backups.delete_prefix(BACKUPS_BUCKET, m.remote)
    return [m.id for m in doomed]


# --- create --------------------------------------------------------------------------------


def create_backup(
    target: Target,
    store: BackupStore,
    *,
    phase: int | None,
    database_only: bool = False,
    label: str | None = None,
    pinned: bool = False,
    upload: bool = True,
    progress: Progress = _quiet,
) -> Manifest:
    started = time.monotonic()
    backup_id = store.new_id()
    work = store.path(backup_id + ".partial")
    work.mkdir(parents=True)
    components: dict[str, Component] = {}
    try:
        (work / "database").mkdir()
        progress(f"database: pg_dump of {target.postgres.describe()}")
        with target.postgres.snapshot() as (snapshot, counts):
            target.postgres.dump(work / DB_FILE, snapshot=snapshot)
        components["database"] = _component(
            work,
            DB_FILE,
            {"database": target.postgres.db, "row_counts": counts, "tables": len(counts), "rows": sum(counts.values())},
        )
        if not database_only:
            (work / "redis").mkdir()
            progress(f"redis: snapshot of {target.redis.describe()}")
            target.redis.save_rdb(work / REDIS_FILE)
            components["redis"] = _component(work, REDIS_FILE, rdb_keys(work / REDIS_FILE))
            (work / "results").mkdir()
            progress(f"results: archive of {target.results.describe()}")
            target.results.export_to(work / RESULTS_FILE)
            components["results"] = _component(work, RESULTS_FILE, archive_stats(work / RESULTS_FILE))
        manifest = Manifest(
            id=backup_id,
            stack=store.stack,
            phase=phase,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            kind="database-only" if database_only else "full",
            components=components,
            label=label,
            pinned=pinned,
        )
        manifest.duration_s = round(time.monotonic() - started, 2)
        store.save(manifest, work)
        work.rename(store.path(backup_id))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if upload and target.object_storage:
        progress(f"upload: copying to bucket {BACKUPS_BUCKET}/{store.stack}/{backup_id}/")
        try:
            upload_backup(target, store, manifest)
        except OpsError as exc:
            progress(f"upload failed, the local copy stands: {exc}")
    return manifest


def _component(work: Path, rel: str, details: dict[str, Any]) -> Component:
    path = work / rel
    return Component(rel, sha256_of(path), path.stat().st_size, details)


def rdb_keys(path: Path) -> dict[str, dict[str, int]]:
    """Keys per database in an RDB file, all and those without a TTL, read by loading it
    into a scratch redis-server. Only the persistent ones can be checked later: keys with a
    TTL (rate-limit windows, the reaper lock) may expire before a verify or a restore."""
    with scratch_redis(path) as client:
        every: dict[str, int] = {}
        persistent: dict[str, int] = {}
        for name, value in client.info("keyspace").items():
            if name.startswith("db"):
                every[name] = int(value["keys"])
                persistent[name] = int(value["keys"]) - int(value.get("expires", 0))
        return {"keys": every, "persistent": persistent}


def persistent_keys(details: dict[str, Any]) -> dict[str, int]:
    """What a snapshot must still hold; manifests written before TTLs were told apart
    only know the total."""
    return details.get("persistent", details["keys"])


def archive_stats(path: Path) -> dict[str, Any]:
    objects = size = 0
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile():
                objects += 1
                size += member.size
    return {"objects": objects, "bytes": size}


def upload_backup(target: Target, store: BackupStore, manifest: Manifest) -> None:
    prefix = f"{store.stack}/{manifest.id}/"
    manifest.remote = prefix
    directory = store.path(manifest.id)
    store.save(manifest, directory)
    # the manifest last: a remote backup without one is incomplete and never listed
    try:
        target.backups.put_tree(BACKUPS_BUCKET, prefix, directory, [c.file for c in manifest.components.values()])
    except BaseException:
        # the uploaded manifest names its remote copy; the local one must not claim it
        manifest.remote = None
        store.save(manifest, directory)
        raise
    target.backups.put_object(BACKUPS_BUCKET, prefix + "manifest.json", directory / "manifest.json")


def remote_backups(target: Target, stack: str) -> list[str]:
    if not target.object_storage:
        return []
    keys = [o["key"] for o in target.backups.list_objects(BACKUPS_BUCKET, f"{stack}/")]
    return sorted({k.split("/")[1] for k in keys if k.endswith("/manifest.json")}, reverse=True)


def fetch_backup(target: Target, store: BackupStore, backup_id: str, progress: Progress = _quiet) -> Manifest:
    """Download a backup that only exists in the bucket into the local store."""
    prefix = f"{store.stack}/{backup_id}/"
    work = store.path(backup_id + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"download: {BACKUPS_BUCKET}/{prefix}")
        names = target.backups.get_tree(BACKUPS_BUCKET, prefix, work)
        if "manifest.json" not in names:
            raise OpsError(f"{BACKUPS_BUCKET}/{prefix} has no manifest.json: not a complete backup")
        manifest = Manifest.from_dict(json.loads((work / "manifest.json").read_text()))
        work.rename(store.path(backup_id))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


# --- verify and restore --------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    backup_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def to_dict(self) -> dict[str, Any]:
        return {"backup": self.backup_id, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def check_files(store: BackupStore, manifest: Manifest, report: Report) -> bool:
    directory = store.path(manifest.id)
    whole = True
    for name, component in manifest.components.items():
        path = directory / component.file
        if not path.is_file():
            report.add(f"{name} checksum", False, f"{component.file} is missing")
            whole = False
            continue
        digest = sha256_of(path)
        ok = digest == component.sha256 and path.stat().st_size == component.bytes
        report.add(
            f"{name} checksum",
            ok,
            f"sha256 {digest[:16]}… {'matches' if ok else 'DIFFERS from ' + component.sha256[:16] + '…'}",
        )
        whole &= ok
    return whole


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    problems = []
    for table, count in sorted(expected.items()):
        got = actual.get(table)
        if got is None:
            problems.append(f"{table} missing")
        elif got != count:
            problems.append(f"{table} {got} rows, expected {count}")
    return problems


def verify_backup(target: Target, store: BackupStore, backup_id: str, progress: Progress = _quiet) -> Report:
    manifest = store.resolve(backup_id)
    report = Report(manifest.id)
    directory = store.path(manifest.id)
    if not check_files(store, manifest, report):
        return report
    db = manifest.components.get("database")
    if db is not None:
        scratch = f"selextract_verify_{secrets.token_hex(4)}"
        progress(f"database: restoring into scratch database {scratch}")
        try:
            target.postgres.create_database(scratch)
            target.postgres.restore(directory / db.file, db=scratch, clean=False)
            problems = compare_counts(db.details["row_counts"], target.postgres.row_counts(db=scratch))
            report.add(
                "database restore",
                not problems,
                "; ".join(problems) or f"{db.details['tables']} tables, {db.details['rows']} rows match the manifest",
            )
        except OpsError as exc:
            report.add("database restore", False, str(exc))
        finally:
            try:
                target.postgres.drop_database(scratch)
            except OpsError as exc:
                report.add("scratch cleanup", False, f"drop {scratch} by hand: {exc}")
    redis = manifest.components.get("redis")
    if redis is not None:
        progress("redis: loading the snapshot into a scratch redis-server")
        try:
            keys = rdb_keys(directory / redis.file)["persistent"]
            expected = persistent_keys(redis.details)
            ok = keys == expected
            report.add(
                "redis snapshot", ok, f"keys without TTL {keys} {'match' if ok else 'expected ' + str(expected)}"
            )
        except OpsError as exc:
            report.add("redis snapshot", False, str(exc))
    results = manifest.components.get("results")
    if results is not None:
        try:
            stats = archive_stats(directory / results.file)
            ok = stats == {"objects": results.details["objects"], "bytes": results.details["bytes"]}
            report.add("results archive", ok, f"{stats['objects']} objects, {stats['bytes']} bytes")
        except (tarfile.TarError, OSError) as exc:
            report.add("results archive", False, f"unreadable: {exc}")
    return report


COMPONENTS = ("database", "redis", "results")


def restore_backup(
    target: Target,
    store: BackupStore,
    backup_id: str,
    *,
    components: Iterable[str] = COMPONENTS,
    progress: Progress = _quiet,
) -> Report:
    manifest = store.resolve(backup_id)
    report = Report(manifest.id)
    directory = store.path(manifest.id)
    if not check_files(store, manifest, report):
        raise OpsError(f"backup {manifest.id} is damaged; nothing was restored")
    wanted = [c for c in COMPONENTS if c in set(components) and c in manifest.components]
    for name in wanted:
        component = manifest.components[name]
        path = directory / component.file
        if name == "database":
            progress(f"database: pg_restore into {target.postgres.describe()}")
            target.postgres.restore(path)
            problems = compare_counts(component.details["row_counts"], target.postgres.row_counts())
            report.add(
                "database",
                not problems,
                "; ".join(problems) or f"{component.details['rows']} rows in {component.details['tables']} tables",
            )
        elif name == "redis":
            progress(f"redis: replacing the data of {target.redis.describe()}")
            count = target.redis.restore_rdb(path)
            expected = sum(persistent_keys(component.details).values())
            report.add("redis", count == expected, f"{count} keys without TTL restored, {expected} in the snapshot")
        elif name == "results":
            progress(f"results: importing into {target.results.describe()}")
            stats = target.results.import_from(path, clear=True)
            ok = stats["objects"] == component.details["objects"]
            report.add("results", ok, f"{stats['objects']} objects, {stats['bytes']} bytes")
    return report
