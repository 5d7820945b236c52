"""`selextract migrate --from N --to N±1`: move a stack one phase, with a way back.

    preflight   the stack is on phase N, the current deployment passes the health gate
    quiesce     maintenance on (API answers 503), workers stopped (running tasks go back
                to the queue: acks_late), so nothing writes while data moves
    backup      full backup (database, Redis, results), pinned, label pre-migration-N-to-M
    deploy      stack config (phase, and that phase's minimum sizes) + `pulumi up`
    data        restore what changed place: Postgres to a new DB host (0→1), Redis to a
                new host, results from local disk to object storage (1→2) or onto the
                MinIO cluster (3→4); row counts checked against the backup's manifest
    gate        health checks of the new deployment, retried until a deadline
    dns         the stack's DNS records follow the entry host (LB from phase 3 on)
    resume      workers started, maintenance off

Any failure from `deploy` on triggers the rollback: previous config, `pulumi up`, the
backup restored wherever the data had moved, the old deployment's gate, maintenance off.
Every step is written to a log file (JSON lines) and echoed.

The data move is planned from the two phases' plans (`infra.topology.plan`), never from
a table of phase pairs, so a downward move (N → N-1, a manual rollback) works the same.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from infra.config import PHASE_NAMES, PHASES, Settings
from infra.cost import plan_cost
from infra.topology import Plan, Role, plan
from ops.access import Container, OpsError, Target, stack_containers
from ops.backup import BackupStore, Manifest, compare_counts, create_backup, restore_backup
from ops.costs import priced_plan
from ops.deploy import Deployer
from ops.health import HealthReport, run_checks, standard_checks
from ops.maintenance import maintenance
from ops.stack import apply_changes, phase_changes, settings_for_phase

Progress = Callable[[str], None]
TargetFor = Callable[[Plan, Settings], Target]
CRITICAL_GATE = ("api", "database", "redis", "workers", "storage")
ROLLBACK_GATE_MIN = 180.0  # seconds the old deployment has to get healthy again after a rollback
ROLLBACK_UP_ATTEMPTS = 2


class MigrationError(OpsError):
    """The migration cannot start (wrong phase, unhealthy, bad arguments)."""


@dataclass(frozen=True)
class Move:
    component: Literal["database", "redis", "results"]
    source: str
    destination: str

    @property
    def moved(self) -> bool:
        return self.source != self.destination


@dataclass
class MigrationPlan:
    stack: str
    from_phase: int
    to_phase: int
    changes: dict[str, Any]
    notes: list[str]
    hosts_added: list[str]
    hosts_removed: list[str]
    moves: list[Move]
    entry_from: str
    entry_to: str
    dns_managed: bool
    cost_from: float
    cost_to: float
    currency: str

    @property
    def steps(self) -> list[str]:
        out = [
            f"preflight: stack {self.stack} is on phase {self.from_phase} and healthy",
            "quiesce: maintenance on, workers stopped",
            f"backup: full, pinned, label pre-migration-{self.from_phase}-to-{self.to_phase}",
            "deploy: " + ", ".join(f"{k}={v}" for k, v in self.changes.items()) + ", pulumi up",
        ]
        for m in self.moves:
            if m.moved:
                out.append(f"data: {m.component} {m.source} → {m.destination}")
            else:
                checked = " (row counts checked)" if m.component == "database" else ""
                out.append(f"data: {m.component} stays on {m.source}{checked}")
        out.append("gate: health checks of the new deployment")
        if self.dns_managed and self.entry_from != self.entry_to:
            out.append(f"dns: records follow the entry {self.entry_from} → {self.entry_to}")
        out.append("resume: workers started, maintenance off")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["moves"] = [{**asdict(m), "moved": m.moved} for m in self.moves]
        data["steps"] = self.steps
        data["from_phase_name"] = PHASE_NAMES[self.from_phase]
        data["to_phase_name"] = PHASE_NAMES[self.to_phase]
        data["cost_delta"] = round(self.cost_to - self.cost_from, 2)
        return data


def data_locations(p: Plan) -> dict[str, str]:
    """Where each kind of data lives in a plan (container or volume names)."""
    api_host = p.hosts_with(Role.API)[0].name
    if p.storage_backend == "local":
        results = f"volume {p.stack}-{api_host}-results"
    else:
        stores = ",".join(e.name for e in p.endpoints(Role.OBJECT_STORE))
        results = f"bucket {p.buckets[0]} on {stores}"
    return {
        "database": p.endpoint(Role.POSTGRES).name,
        "redis": p.endpoint(Role.REDIS).name,
        "results": results,
    }


def plan_migration(settings: Settings, from_phase: int, to_phase: int) -> MigrationPlan:
    for name, value in (("--from", from_phase), ("--to", to_phase)):
        if value not in PHASES:
            raise MigrationError(f"{name} {value}: unknown phase; allowed: {', '.join(str(p) for p in PHASES)}")
    if abs(to_phase - from_phase) != 1:
        raise MigrationError(
            f"--from {from_phase} --to {to_phase}: migrate one phase at a time "
            f"(to {from_phase + 1} or {from_phase - 1})"
        )
    source = settings if settings.phase == from_phase else settings_for_phase(settings, from_phase)[0]
    changes = phase_changes(source, to_phase)
    dest = apply_changes(source, changes)
    notes = [f"{k} {v}" for k, v in changes.items() if k != "phase"]
    p_from, p_to = plan(source), plan(dest)
    loc_from, loc_to = data_locations(p_from), data_locations(p_to)
    names_from = {h.name for h in p_from.hosts}
    names_to = {h.name for h in p_to.hosts}
    cost_from, cost_to = plan_cost(priced_plan(source)), plan_cost(priced_plan(dest))
    return MigrationPlan(
        stack=settings.stack,
        from_phase=from_phase,
        to_phase=to_phase,
        changes=changes,
        notes=notes,
        hosts_added=sorted(names_to - names_from),
        hosts_removed=sorted(names_from - names_to),
        moves=[Move(c, loc_from[c], loc_to[c]) for c in ("database", "redis", "results")],  # type: ignore[arg-type]
        entry_from=p_from.entry_host,
        entry_to=p_to.entry_host,
        dns_managed=dest.dns.enabled,
        cost_from=cost_from.total,
        cost_to=cost_to.total,
        currency=cost_to.currency,
    )


# --- the log ---------------------------------------------------------------------------------


@dataclass
class StepRecord:
    name: str
    status: Literal["ok", "failed", "skipped"]
    detail: str
    seconds: float


class MigrationLog:
    """Every step, as JSON lines in `path` and as text through `echo`."""

    def __init__(self, path: Path, echo: Progress) -> None:
        self.path = path
        self.echo = echo
        self.steps: list[StepRecord] = []
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        with self.path.open("a") as fh:
            fh.write(
                json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields})
                + "\n"
            )

    def info(self, message: str) -> None:
        self.write("info", message=message)
        self.echo(f"    {message}")

    def output(self, line: str) -> None:
        """Tool output (pulumi): to the log file only, it is long."""
        line = line.rstrip("\n")
        if line:
            self.write("output", line=line)

    def skip(self, name: str, why: str) -> None:
        self.steps.append(StepRecord(name, "skipped", why, 0.0))
        self.write("step", name=name, status="skipped", detail=why)
        self.echo(f"--  {name}: skipped ({why})")

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, str]]:
        """`with log.step("backup") as note: note["detail"] = …`"""
        note: dict[str, str] = {"detail": ""}
        started = time.monotonic()
        self.write("step", name=name, status="started")
        self.echo(f"==> {name}")
        try:
            yield note
        except BaseException as exc:
            seconds = round(time.monotonic() - started, 2)
            detail = str(exc) or type(exc).__name__
            self.steps.append(StepRecord(name, "failed", detail, seconds))
            self.write("step", name=name, status="failed", detail=detail, seconds=seconds)
            self.echo(f"!!  {name} failed ({seconds:.1f}s): {detail}")
            raise
        seconds = round(time.monotonic() - started, 2)
        self.steps.append(StepRecord(name, "ok", note["detail"], seconds))
        self.write("step", name=name, status="ok", detail=note["detail"], seconds=seconds)
        self.echo(f"    done: {name} ({seconds:.1f}s){': ' + note['detail'] if note['detail'] else ''}")


@dataclass
class MigrationResult:
    status: Literal["migrated", "dry-run", "aborted", "rolled-back", "rollback-failed"]
    plan: MigrationPlan
    log_path: Path
    backup_id: str | None = None
    error: str | None = None
    preview: str | None = None
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("migrated", "dry-run")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ok": self.ok,
            "backup": self.backup_id,
            "error": self.error,
            "log": str(self.log_path),
            "plan": self.plan.to_dict(),
            "steps": [asdict(s) for s in self.steps],
            "preview": self.preview,
        }


# --- the migration ---------------------------------------------------------------------------


class Migrator:
    def __init__(
        self,
        *,
        deployer: Deployer,
        load_settings: Callable[[], Settings],
        target_for: TargetFor,
        store: BackupStore,
        log: MigrationLog,
        gate_checks: tuple[str, ...] = CRITICAL_GATE,
        gate_timeout: float = 180.0,
        gate_interval: float = 5.0,
        use_maintenance: bool = True,
        rollback_gate_timeout: float | None = None,
    ) -> None:
        self.deployer = deployer
        self.load_settings = load_settings
        self.target_for = target_for
        self.store = store
        self.log = log
        self.gate_checks = gate_checks
        self.gate_timeout = gate_timeout
        self.gate_interval = gate_interval
        self.use_maintenance = use_maintenance
        # The old deployment gets at least ROLLBACK_GATE_MIN: a short gate for the new phase
        # must not turn a slow-starting rollback into "rollback failed".
        self.rollback_gate_timeout = (
            max(gate_timeout, ROLLBACK_GATE_MIN) if rollback_gate_timeout is None else rollback_gate_timeout
        )

    # -- helpers --

    def _target(self, settings: Settings) -> tuple[Plan, Target]:
        p = plan(settings)
        return p, self.target_for(p, settings)

    def gate(self, target: Target, timeout: float | None = None) -> HealthReport:
        """Health checks until they pass or the deadline; raises with the last report."""
        deadline = time.monotonic() + (self.gate_timeout if timeout is None else timeout)
        while True:
            checks = [c for c in standard_checks(target) if c.name in self.gate_checks]
            report = run_checks(checks)
            if report.ok:
                return report
            if time.monotonic() >= deadline:
                details = "; ".join(f"{r.name}: {r.detail}" for r in report.results if r.status == "fail")
                raise OpsError(f"health gate failed: {details}")
            time.sleep(self.gate_interval)

    def _workers(self, p: Plan, target: Target) -> list[Container]:
        """The stack's worker containers on every engine of the plan (found by labels)."""
        if target.mode != "docker" or target.api_container is None:
            return []
        engines = {target.api_container.docker_host}
        for role in ("postgres", "redis", "objectstore"):
            if role in target.data_containers:
                engines.add(target.data_containers[role].docker_host)
        out = []
        for engine in engines:
            try:
                out += [Container(n, engine) for n, _ in stack_containers(p.stack, Role.WORKER, engine)]
            except OpsError:
                continue
        return out

    @staticmethod
    def _docker_quiet(container: Container, *args: str) -> bool:
        proc = subprocess.run(container.docker(*args), capture_output=True, check=False)
        return proc.returncode == 0

    def quiesce(self, p: Plan, target: Target) -> list[str]:
        """Stop the running workers, all at once per engine (Celery's warm shutdown: running
        tasks finish within the grace period or return to the queue)."""
        by_engine: dict[str | None, list[Container]] = {}
        for c in self._workers(p, target):
            if c.running():
                by_engine.setdefault(c.docker_host, []).append(c)
        stopped = []
        for containers in by_engine.values():
            if self._docker_quiet(containers[0], "stop", "-t", "120", *(c.name for c in containers)):
                stopped += [c.name for c in containers]
        return stopped

    def resume(self, p: Plan, target: Target) -> list[str]:
        started = []
        for c in self._workers(p, target):
            if not c.running() and self._docker_quiet(c, "start", c.name):
                started.append(c.name)
        return started

    def move_data(self, mplan: MigrationPlan, manifest: Manifest, target: Target, *, rollback: bool = False) -> str:
        """Restore what changed place from the backup; verify what stayed."""
        done = []
        moved = {m.component for m in mplan.moves if m.moved}
        db = manifest.components["database"]
        if "database" in moved:
            report = restore_backup(target, self.store, manifest.id, components=["database"], progress=self.log.info)
            if not report.ok:
                raise OpsError(f"database restore: {report.checks[-1].detail}")
            done.append(f"database restored ({db.details['rows']} rows)")
        else:
            problems = compare_counts(db.details["row_counts"], target.postgres.row_counts())
            if problems:
                self.log.info(f"database differs from the backup ({'; '.join(problems[:3])}): restoring it")
                report = restore_backup(
                    target, self.store, manifest.id, components=["database"], progress=self.log.info
                )
                if not report.ok:
                    raise OpsError(f"database restore: {report.checks[-1].detail}")
                done.append(f"database restored ({db.details['rows']} rows)")
            else:
                done.append(f"database in place ({db.details['rows']} rows match)")
        for component in ("redis", "results"):
            if component in moved and component in manifest.components:
                report = restore_backup(target, self.store, manifest.id, components=[component], progress=self.log.info)
                if not report.ok:
                    raise OpsError(f"{component} restore: {report.checks[-1].detail}")
                done.append(f"{component}: {report.checks[-1].detail}")
        return "; ".join(done) + (" (rollback)" if rollback else "")

    def _dns(self, mplan: MigrationPlan, settings: Settings) -> str | None:
        if not settings.dns.enabled:
            return None
        if mplan.entry_from == mplan.entry_to:
            return f"entry stays {mplan.entry_to}: records unchanged"
        outputs = self.deployer.outputs()
        address = outputs.get("entryAddress")
        records = ", ".join(f"{r}.{settings.dns.zone or settings.domain}" for r in settings.dns.records)
        return f"{records} → {mplan.entry_to} ({address}), TTL {settings.dns.ttl}s"

    # -- the run --

    def run(
        self,
        from_phase: int,
        to_phase: int,
        *,
        dry_run: bool = False,
        force: bool = False,
        confirm: Callable[[MigrationPlan], bool] | None = None,
    ) -> MigrationResult:
        log = self.log
        settings = self.load_settings()
        mplan = plan_migration(settings, from_phase, to_phase)
        log.write("plan", **mplan.to_dict())
        if settings.phase != from_phase:
            message = f"stack {settings.stack} is on phase {settings.phase}, not {from_phase}"
            if not force:
                raise MigrationError(message + " (--force migrates anyway)")
            log.info(message + ": going on because of --force")
        if dry_run:
            try:
                preview = self.deployer.preview(mplan.changes, log.output)
            except OpsError as exc:
                preview = f"(no preview: {exc})"
            return MigrationResult("dry-run", mplan, log.path, preview=preview, steps=log.steps)
        if confirm is not None and not confirm(mplan):
            return MigrationResult("aborted", mplan, log.path, error="not confirmed", steps=log.steps)

        source = settings if settings.phase == from_phase else settings_for_phase(settings, from_phase)[0]
        old_plan, old_target = self._target(source)
        stopped: list[str] = []
        try:
            with log.step("preflight: health of the current deployment") as note:
                try:
                    note["detail"] = f"{len(self.gate(old_target, timeout=0).results)} checks pass"
                except OpsError:
                    if not force:
                        raise
                    note["detail"] = "unhealthy, going on because of --force"
            if self.use_maintenance:
                with log.step("quiesce: maintenance on") as note:
                    note["detail"] = maintenance(
                        old_target, "on", message="Selextract is being upgraded; please retry in a few minutes."
                    ).describe()
            with log.step("quiesce: stop workers") as note:
                stopped = self.quiesce(old_plan, old_target)
                note["detail"] = ", ".join(stopped) or "none running"
            with log.step("backup") as note:
                manifest = create_backup(
                    old_target,
                    self.store,
                    phase=from_phase,
                    label=f"pre-migration-{from_phase}-to-{to_phase}",
                    pinned=True,
                    upload=False,
                    progress=log.info,
                )
                note["detail"] = f"{manifest.id} ({manifest.size / 1e6:.1f} MB)"
        except BaseException as exc:
            self._reopen(old_plan, old_target, stopped)
            return MigrationResult("aborted", mplan, log.path, error=str(exc), steps=log.steps)

        previous = {key: self.deployer.get_config(key) for key in mplan.changes}
        try:
            with log.step(f"deploy: config {', '.join(f'{k}={v}' for k, v in mplan.changes.items())}"):
                for key, value in mplan.changes.items():
                    self.deployer.set_config(key, value)
            with log.step(f"deploy: pulumi up (phase {to_phase})") as note:
                summary = self.deployer.up(log.output)
                note["detail"] = json.dumps(summary.get("changes", {}))
            new_settings = self.load_settings()
            new_plan, new_target = self._target(new_settings)
            with log.step("data: move and verify") as note:
                note["detail"] = self.move_data(mplan, manifest, new_target)
            with log.step("gate: health of the new deployment") as note:
                report = self.gate(new_target)
                note["detail"] = ", ".join(f"{r.name} {r.status}" for r in report.results)
            dns = self._dns(mplan, new_settings)
            if dns is None:
                log.skip("dns", "the stack does not manage DNS (dns.enabled is off)")
            else:
                with log.step("dns") as note:
                    note["detail"] = dns
        except BaseException as exc:
            error = str(exc) or type(exc).__name__
            status = self.rollback(mplan, previous, manifest)
            return MigrationResult(status, mplan, log.path, backup_id=manifest.id, error=error, steps=log.steps)

        self._reopen(new_plan, new_target, None)
        log.write("result", status="migrated", backup=manifest.id)
        return MigrationResult("migrated", mplan, log.path, backup_id=manifest.id, steps=log.steps)

    def _reopen(self, p: Plan, target: Target, stopped: list[str] | None) -> None:
        """Workers back, maintenance off; best effort, each logged."""
        try:
            with self.log.step("resume: start workers") as note:
                note["detail"] = ", ".join(self.resume(p, target)) or "all running"
        except OpsError:
            pass
        if self.use_maintenance:
            try:
                with self.log.step("resume: maintenance off") as note:
                    note["detail"] = maintenance(target, "off").describe()
            except OpsError:
                pass

    def _rollback_up(self) -> dict[str, Any]:
        """`pulumi up` back to the old phase, tried ROLLBACK_UP_ATTEMPTS times: an up converges
        from wherever the last one stopped, and a transient provider error (a container that
        was still being removed, a Docker API timeout) must not leave the stack half-moved."""
        for _ in range(ROLLBACK_UP_ATTEMPTS - 1):
            try:
                return self.deployer.up(self.log.output)
            except Exception as exc:
                self.log.info(f"rollback pulumi up failed ({str(exc).strip()[-300:]}): trying again")
        return self.deployer.up(self.log.output)

    def rollback(self, mplan: MigrationPlan, previous: Mapping[str, Any], manifest: Manifest) -> str:
        log = self.log
        log.write("rollback", to_phase=mplan.from_phase, backup=manifest.id)
        try:
            with log.step(f"rollback: config back to phase {mplan.from_phase}"):
                for key, value in previous.items():
                    if value is None:
                        self.deployer.remove_config(key)
                    else:
                        self.deployer.set_config(key, value)
            with log.step(f"rollback: pulumi up (phase {mplan.from_phase})") as note:
                note["detail"] = json.dumps(self._rollback_up().get("changes", {}))
            settings = self.load_settings()
            old_plan, old_target = self._target(settings)
            with log.step("rollback: data") as note:
                note["detail"] = self.move_data(mplan, manifest, old_target, rollback=True)
            # workers the quiesce step stopped are still stopped if the failed up never
            # replaced them (Pulumi sees them unchanged): the gate needs them running
            with log.step("rollback: start workers") as note:
                note["detail"] = ", ".join(self.resume(old_plan, old_target)) or "all running"
            with log.step("rollback: health of the previous deployment") as note:
                report = self.gate(old_target, timeout=self.rollback_gate_timeout)
                note["detail"] = ", ".join(f"{r.name} {r.status}" for r in report.results)
        except BaseException as exc:
            log.write(
                "result",
                status="rollback-failed",
                error=str(exc),
                manual=f"pulumi config set selextract:phase {mplan.from_phase} && pulumi up; "
                f"selextract restore {manifest.id}",
            )
            log.echo(
                f"!!  ROLLBACK FAILED: {exc}\n    by hand: `pulumi config set selextract:phase {mplan.from_phase}`, "
                f"`pulumi up`, then `selextract restore {manifest.id}`"
            )
            return "rollback-failed"
        self._reopen(old_plan, old_target, None)
        log.write("result", status="rolled-back", backup=manifest.id)
        return "rolled-back"
