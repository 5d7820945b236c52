"""`selextract`: operate a Selextract stack (scaling, cost, capacity, backups, health,
maintenance, workers, logs, phase migration, dashboard).

This module only parses arguments and prints; the work is in the other `ops` modules.
Every command prints tables for people and `--format json` for machines.

Exit codes: 0 ok · 1 a check failed or an operation failed (health failing, backup not
verified, migration rolled back, over budget with --check-budget, scaling recommended
with --exit-code) · 2 usage error (bad arguments, unknown stack, invalid stack config).

Global options pick the deployment: `--stack` (default `local`, or $SELEXTRACT_STACK)
names `Pulumi.<stack>.yaml`; the stack's containers are reached with `docker exec`,
unless `--env-file` (or DATABASE_URL in the environment) gives connection strings.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from infra.config import PHASE_NAMES, ConfigError, Settings
from infra.topology import plan
from ops import capacity as capacity_mod
from ops.access import OpsError, Target, docker_target, read_env_file, url_target
from ops.metrics import Metrics, MetricsError, business_metrics, from_prometheus, load_metrics_file
from ops.stack import DEFAULT_STACK, load_stack, settings_for_phase, state_dir

app = typer.Typer(
    name="selextract",
    help=__doc__.split("\n\n")[0] if __doc__ else None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scaling_app = typer.Typer(help="Scaling decision: triggers, thresholds, recommendation.", no_args_is_help=True)
cost_app = typer.Typer(help="Monthly cost from the plan and the Hetzner price table.", no_args_is_help=True)
backup_app = typer.Typer(help="Backups of Postgres, Redis and result objects.", no_args_is_help=True)
workers_app = typer.Typer(help="The worker pool.", no_args_is_help=True)
app.add_typer(scaling_app, name="scaling")
app.add_typer(cost_app, name="cost")
app.add_typer(backup_app, name="backup")
app.add_typer(workers_app, name="workers")

# Not a terminal (pipes, cron, CI): wide enough that tables do not wrap into noise.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Format(StrEnum):
    text = "text"
    json = "json"


FormatOption = typer.Option(Format.text, "--format", "-f", help="text for people, json for machines")
MetricsOption = typer.Option(None, "--metrics", help="JSON/YAML file with the metric values", exists=False)
PrometheusOption = typer.Option(
    None,
    "--prometheus",
    help="Prometheus base URL, e.g. http://127.0.0.1:9090 (basic auth from PROMETHEUS_USER/PROMETHEUS_PASSWORD)",
)


class Ctx:
    """What the global options select: the stack and how to reach it."""

    def __init__(self, stack: str, env_file: Path | None, backup_dir: Path | None) -> None:
        self.stack = stack
        self.env_file = env_file
        self.backup_dir = backup_dir
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_stack(self.stack)
        return self._settings

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.env_file is not None:
            env.update(read_env_file(self.env_file))
        return env

    @property
    def url_mode(self) -> bool:
        return self.env_file is not None or bool(os.environ.get("DATABASE_URL"))

    def target(self, settings: Settings | None = None) -> Target:
        if self.url_mode:
            return url_target(self.env(), stack=self.stack)
        s = settings or self.settings
        if s.target == "local":
            return docker_target(plan(s), s, backup_secret=backup_secret(make_deployer(s.stack).outputs, s.stack))
        from ops.deploy import PulumiDeployer, docker_hosts_from_outputs

        outputs = PulumiDeployer(s.stack).outputs()
        return docker_target(
            plan(s),
            s,
            docker_hosts=docker_hosts_from_outputs(outputs, s),
            entry_address=outputs.get("entryAddress"),
            backup_secret=backup_secret(lambda: outputs, s.stack),
        )

    def store(self) -> Any:
        from ops.backup import BackupStore

        return BackupStore(self.backup_dir or state_dir() / "backups", self.stack)


F = TypeVar("F", bound=Callable[..., Any])


def backup_secret(outputs: Callable[[], Mapping[str, Any]], stack: str) -> Callable[[], str]:
    """The backup key's secret from the stack's outputs, read when a backup first needs it."""

    def get() -> str:
        from infra.specs.objectstore import BACKUP_KEY_SECRET

        value = outputs().get(BACKUP_KEY_SECRET)
        if not value:
            raise OpsError(f"stack {stack} has no {BACKUP_KEY_SECRET} output yet: run `selextract up` first")
        return str(value)

    return get


def make_deployer(stack: str) -> Any:
    """The Deployer for `stack` (Pulumi); one place, so tests can put a stand-in here."""
    from ops.deploy import PulumiDeployer

    return PulumiDeployer(stack)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}" if code == EXIT_FAILED else f"[bold red]usage:[/] {message}")
    raise typer.Exit(code)


def handled(func: F) -> F:
    """Operator errors become one clear line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, capacity_mod.CapacityInputError, ValueError) as exc:
            fail(str(exc), EXIT_USAGE)
        except (OpsError, MetricsError) as exc:
            fail(str(exc), EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def ctx_obj(ctx: typer.Context) -> Ctx:
    obj = ctx.find_root().obj
    if not isinstance(obj, Ctx):  # called without the callback (tests invoking subcommands)
        obj = Ctx(DEFAULT_STACK, None, None)
        ctx.find_root().obj = obj
    return obj


@app.callback()
def main(
    ctx: typer.Context,
    stack: str = typer.Option(DEFAULT_STACK, "--stack", "-s", envvar="SELEXTRACT_STACK", help="Pulumi stack name"),
    env_file: Path | None = typer.Option(
        None, "--env-file", envvar="SELEXTRACT_ENV_FILE", help="service env vars (DATABASE_URL, REDIS_URL, S3_*)"
    ),
    backup_dir: Path | None = typer.Option(
        None, "--backup-dir", envvar="SELEXTRACT_BACKUP_DIR", help="default ~/.local/state/selextract/backups"
    ),
) -> None:
    """Operate a Selextract stack: scaling, cost, capacity, backups, health, migration."""
    ctx.obj = Ctx(stack, env_file, backup_dir)


# --- metrics sources -------------------------------------------------------------------------


def collect_metrics(c: Ctx, metrics_file: Path | None, prometheus: str | None, *, use_database: bool) -> Metrics:
    if metrics_file is not None and prometheus is not None:
        raise ValueError("--metrics and --prometheus are alternatives; pass one")
    if metrics_file is not None:
        return load_metrics_file(metrics_file)
    url = prometheus
    if url is None:
        s = c.settings
        url = f"http://127.0.0.1:{s.local.monitoring_port}" if s.target == "local" else None
    if url is None:
        raise ValueError("no metrics source: pass --metrics FILE or --prometheus URL")
    env = c.env()
    auth = (env["PROMETHEUS_USER"], env.get("PROMETHEUS_PASSWORD", "")) if env.get("PROMETHEUS_USER") else None
    metrics = from_prometheus(url, auth=auth)
    if use_database:
        try:
            target = c.target()
            db = business_metrics(target.postgres.query, target.postgres.size_bytes(), target.postgres.connections())
            metrics = metrics.merged(db)
        except OpsError:
            pass  # business rows stay "no data"
    return metrics


# --- scaling ---------------------------------------------------------------------------------

VERDICT_STYLE = {"triggered": "bold red", "approaching": "yellow", "ok": "green", "no data": "dim"}
ACTION_STYLE = {"scale": "bold red", "prepare": "bold yellow", "stay": "bold green"}


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return text + (unit if unit == "%" else f" {unit}" if unit else "")


@scaling_app.command("analyze")
@handled
def scaling_analyze(
    ctx: typer.Context,
    current_phase: int | None = typer.Option(None, "--current-phase", "-p", help="default: the stack's phase"),
    fmt: Format = FormatOption,
    metrics_file: Path | None = MetricsOption,
    prometheus: str | None = PrometheusOption,
    no_database: bool = typer.Option(False, "--no-database", help="do not read business numbers from Postgres"),
    output: Path | None = typer.Option(None, "--output", "-o", help="also write the report to this file"),
    exit_code: bool = typer.Option(False, "--exit-code", help="exit 1 when scaling is recommended"),
) -> None:
    """Decision matrix of both guides: each trigger's value, threshold and verdict, and a recommendation."""
    from ops.costs import phase_cost_delta
    from ops.scaling import analyze

    c = ctx_obj(ctx)
    phase = c.settings.phase if current_phase is None else current_phase
    metrics = collect_metrics(c, metrics_file, prometheus, use_database=not no_database)
    analysis = analyze(metrics, phase)
    rec = analysis.recommendation
    if rec.target_phase != phase:
        rec.cost = phase_cost_delta(settings_for_phase(c.settings, phase)[0], rec.target_phase)
    data = analysis.to_dict()
    data["stack"] = c.stack
    if fmt == Format.json:
        emit_json(data)
    else:
        _print_analysis(data)
    if output is not None:
        if fmt == Format.json or output.suffix == ".json":
            output.write_text(json.dumps(data, indent=2, default=str) + "\n")
        else:
            file_console = Console(file=output.open("w"), width=120, no_color=True, highlight=False)
            _print_analysis(data, file_console)
    if exit_code and rec.action == "scale":
        raise typer.Exit(EXIT_FAILED)


def _print_analysis(data: dict[str, Any], console: Console = out) -> None:
    table = Table(
        title=f"Scaling triggers — stack {data['stack']}, phase {data['current_phase']} ({data['current_phase_name']})"
    )
    for col in ("Trigger", "Source", "Value", "Threshold", "Verdict", "Means"):
        table.add_column(col, justify="right" if col in ("Value", "Threshold") else "left")
    for t in data["triggers"]:
        source = "matrix" if t["source"] == "matrix" else f"guide → {t['target_phase']}"
        label = t["label"] + (f" (as {t['measured_as']})" if t.get("measured_as") else "")
        table.add_row(
            label,
            source,
            _num(t["value"], t["unit"]),
            "> " + _num(t["threshold"], t["unit"]),
            f"[{VERDICT_STYLE[t['verdict']]}]{t['verdict']}[/]",
            t["note"],
        )
    console.print(table)
    rec = data["recommendation"]
    lines = [f"[{ACTION_STYLE[rec['action']]}]{rec['action'].upper()}[/]: {rec['summary']}"]
    lines += [f"  • {r}" for r in rec["reasons"]]
    if rec["within_phase"]:
        lines.append("within the phase:")
        lines += [f"  • {r}" for r in rec["within_phase"]]
    cost = rec.get("cost")
    if cost:
        sign = "+" if cost["delta_monthly"] >= 0 else ""
        lines.append(
            f"monthly cost {cost['current_monthly']:.2f} → {cost['target_monthly']:.2f} {cost['currency']} "
            f"({sign}{cost['delta_monthly']:.2f})"
        )
        lines += [f"  assumes {a}" for a in cost.get("assumptions", [])]
    console.print(Panel("\n".join(lines), title="Recommendation"))


@scaling_app.command("thresholds")
@handled
def scaling_thresholds(fmt: Format = FormatOption) -> None:
    """The thresholds: the scaling guide's matrix and the Selextract guide's triggers."""
    from ops.scaling import thresholds_table

    data = thresholds_table()
    if fmt == Format.json:
        emit_json(data)
        return
    matrix = Table(title="Decision matrix (value > threshold triggers the move out of a phase)")
    matrix.add_column("Metric")
    matrix.add_column("Kind")
    for t in data["transitions"]:
        matrix.add_column(f"phase {t}", justify="right")
    for row in data["matrix"]:
        matrix.add_row(row["label"], row["kind"], *(_num(v, row["unit"]) for v in row["thresholds"].values()))
    out.print(matrix)
    guide = Table(title="Selextract guide triggers")
    for col in ("Metric", "Threshold", "Leads to", "Why"):
        guide.add_column(col)
    for g in data["triggers"]:
        guide.add_row(
            g["label"],
            "> " + _num(g["threshold"], g["unit"]),
            f"phase {g['target_phase']} ({g['target_phase_name']})",
            g["reason"],
        )
    out.print(guide)
    out.print(
        f"approaching from {data['warning_ratio']:.0%} of a threshold; "
        f"scale when {data['scale_when_matrix_hits']} matrix rows trigger or any guide trigger fires"
    )


@scaling_app.command("metrics")
@handled
def scaling_metrics(
    ctx: typer.Context,
    fmt: Format = FormatOption,
    metrics_file: Path | None = MetricsOption,
    prometheus: str | None = PrometheusOption,
    no_database: bool = typer.Option(False, "--no-database"),
) -> None:
    """The current metric values the decision reads."""
    from ops.scaling import load_thresholds

    metrics = collect_metrics(ctx_obj(ctx), metrics_file, prometheus, use_database=not no_database)
    data = metrics.as_dict()
    if fmt == Format.json:
        emit_json(data)
        return
    t = load_thresholds()
    table = Table(title=f"Metrics ({metrics.source})")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for name, (label, unit) in t.labels.items():
        table.add_row(label, _num(metrics.get(name), unit))
    for host, usage in sorted(metrics.hosts.items()):
        table.add_row(f"host {host}", f"CPU {_num(usage.cpu_percent, '%')}, memory {_num(usage.memory_percent, '%')}")
    out.print(table)


# --- cost ------------------------------------------------------------------------------------


@cost_app.command("current")
@handled
def cost_current(
    ctx: typer.Context,
    fmt: Format = FormatOption,
    traffic_tb: float | None = typer.Option(None, "--traffic-tb", help="outgoing traffic per month, TB"),
    check_budget: bool = typer.Option(False, "--check-budget", help="exit 1 when over monthlyBudget"),
) -> None:
    """Monthly cost of the stack (a local stack is priced as if on Hetzner)."""
    from ops.costs import current_cost

    report = current_cost(ctx_obj(ctx).settings, traffic_tb=traffic_tb)
    data = report.to_dict()
    if fmt == Format.json:
        emit_json(data)
    else:
        table = Table(
            title=f"Monthly cost — stack {report.stack}, phase {report.phase} ({PHASE_NAMES[report.phase]}), "
            f"prices {report.price_list}"
        )
        for col in ("Item", "Kind", "Detail", report.currency):
            table.add_column(col, justify="right" if col == report.currency else "left")
        for line in report.lines:
            table.add_row(line.item, line.kind, line.detail, f"{line.monthly:.2f}")
        table.add_section()
        for kind, value in report.by_kind().items():
            table.add_row("", kind, "subtotal", f"{value:.2f}")
        table.add_row("[bold]total[/]", "", "", f"[bold]{report.total:.2f}[/]")
        out.print(table)
        if report.budget is not None:
            verdict = "[bold red]OVER BUDGET[/]" if report.over_budget else "[green]within budget[/]"
            out.print(f"monthlyBudget {report.budget:.2f}: {verdict}")
    if check_budget and report.over_budget:
        raise typer.Exit(EXIT_FAILED)


@cost_app.command("projection")
@handled
def cost_projection(ctx: typer.Context, fmt: Format = FormatOption) -> None:
    """The stack's sizes priced in every phase."""
    from ops.costs import projection

    settings = ctx_obj(ctx).settings
    rows = projection(settings)
    if fmt == Format.json:
        emit_json({"stack": settings.stack, "current_phase": settings.phase, "phases": [asdict(r) for r in rows]})
        return
    table = Table(title=f"Cost projection — stack {settings.stack} (now phase {settings.phase})")
    for col in ("Phase", "Name", "Servers", "Worker slots", "EUR/month", "vs now", "Assumes"):
        table.add_column(col, justify="right" if col in ("Servers", "Worker slots", "EUR/month", "vs now") else "left")
    for r in rows:
        marker = " ◀" if r.phase == settings.phase else ""
        total = f"[red]{r.total:.2f}[/]" if r.over_budget else f"{r.total:.2f}"
        table.add_row(
            f"{r.phase}{marker}",
            r.name,
            str(r.servers),
            str(r.worker_slots),
            total,
            f"{r.delta_from_current:+.2f}",
            "; ".join(r.assumptions),
        )
    out.print(table)


@cost_app.command("optimize")
@handled
def cost_optimize(
    ctx: typer.Context,
    fmt: Format = FormatOption,
    metrics_file: Path | None = MetricsOption,
    prometheus: str | None = PrometheusOption,
) -> None:
    """Right-sizing hints from utilisation (7-day averages per host)."""
    from ops.costs import current_cost, optimize

    c = ctx_obj(ctx)
    metrics = collect_metrics(c, metrics_file, prometheus, use_database=False)
    hints = optimize(c.settings, metrics)
    report = current_cost(c.settings)
    savings = round(sum(h.monthly_saving for h in hints if h.monthly_saving > 0), 2)
    if fmt == Format.json:
        emit_json(
            {
                "stack": c.stack,
                "total": report.total,
                "currency": report.currency,
                "possible_savings": savings,
                "hints": [asdict(h) for h in hints],
            }
        )
        return
    table = Table(title=f"Cost optimization — stack {c.stack}, now {report.total:.2f} {report.currency}/month")
    for col in ("Kind", "Target", "Hint", "Saves/month", "Config"):
        table.add_column(col, justify="right" if col == "Saves/month" else "left")
    for h in hints:
        table.add_row(
            h.kind,
            h.target,
            h.message,
            f"{h.monthly_saving:+.2f}" if h.monthly_saving else "",
            ", ".join(f"{k}={v}" for k, v in h.config.items()),
        )
    out.print(table)
    out.print(f"possible savings: {savings:.2f} {report.currency}/month")


# --- capacity --------------------------------------------------------------------------------


@app.command("capacity", context_settings={"ignore_unknown_options": True})
@handled
def capacity(
    ctx: typer.Context,
    daily_tasks: str = typer.Argument(..., metavar="DAILY_TASKS", help="tasks per day, e.g. 10000"),
    avg_minutes: str = typer.Argument(..., metavar="AVG_MINUTES", help="average task duration in minutes"),
    peak_factor: str = typer.Argument(..., metavar="PEAK_FACTOR", help="peak load over average, e.g. 3.0"),
    tasks_per_worker: int = typer.Option(4, "--tasks-per-worker", help="concurrent tasks per worker"),
    workers_per_node: int = typer.Option(4, "--workers-per-node", help="worker containers per worker server"),
    fmt: Format = FormatOption,
) -> None:
    """Workers and servers needed for a workload (the guide's formula), and the phase it means."""
    r = capacity_mod.calculate(
        daily_tasks, avg_minutes, peak_factor, tasks_per_worker=tasks_per_worker, workers_per_node=workers_per_node
    )
    data = r.to_dict()
    try:
        moved = settings_for_phase(ctx_obj(ctx).settings, r.phase)[0]
        p = plan(moved)
        data["stack_plan"] = {
            "stack": moved.stack,
            "servers": len(p.hosts),
            "worker_containers": p.worker_containers,
            "worker_slots": p.worker_containers * p.worker_concurrency,
            "enough": p.worker_containers * p.worker_concurrency >= r.concurrent_tasks,
        }
    except (ConfigError, OSError):
        data["stack_plan"] = None
    if fmt == Format.json:
        emit_json(data)
        return
    out.print("[bold]=== Capacity Planning Results ===[/]")
    rows = [
        ("Daily Tasks", f"{r.daily_tasks:,}"),
        ("Tasks per Minute", f"{r.tasks_per_minute:g}"),
        ("Peak Tasks per Minute", f"{r.peak_tasks_per_minute:g}"),
        ("Concurrent Tasks (Peak)", f"{r.concurrent_tasks:g}"),
        ("Recommended Workers", f"{r.workers} ({r.tasks_per_worker} tasks each, one spare)"),
        ("Recommended Worker Nodes", f"{r.worker_nodes} ({r.workers_per_node} workers each, one spare)"),
        ("Recommended DB Connection Pool", str(r.db_connection_pool)),
        ("Estimated Monthly Storage Growth", f"{r.monthly_storage_gb:g} GB ({r.monthly_storage_mb:g} MB, 100 KB/task)"),
        ("Phase", f"{r.phase} ({r.phase_name}): {r.guide_users} users, {r.guide_servers} servers"),
    ]
    for label, value in rows:
        out.print(f"{label}: {value}")
    sp = data["stack_plan"]
    if sp:
        verdict = "enough" if sp["enough"] else "[red]NOT enough[/]"
        out.print(
            f"Stack {sp['stack']} in phase {r.phase}: {sp['servers']} servers, {sp['worker_containers']} worker "
            f"containers = {sp['worker_slots']} task slots ({verdict} for {r.concurrent_tasks:g} concurrent)"
        )


# --- backups ---------------------------------------------------------------------------------


def _progress(fmt: Format) -> Callable[[str], None]:
    def show(message: str) -> None:
        if fmt == Format.text:
            err.print(f"[dim]…[/] {message}")

    return show


def _retention(last: int, daily: int, weekly: int, monthly: int) -> Any:
    from ops.backup import Retention

    if min(last, daily, weekly, monthly) < 0:
        raise ValueError("retention counts must be 0 or more")
    return Retention(last, daily, weekly, monthly)


KeepLast = typer.Option(3, "--keep-last", help="the N newest backups")
KeepDaily = typer.Option(7, "--keep-daily", help="newest backup of each of the last N days")
KeepWeekly = typer.Option(4, "--keep-weekly", help="… of the last N weeks")
KeepMonthly = typer.Option(6, "--keep-monthly", help="… of the last N months")


@backup_app.command("create")
@handled
def backup_create(
    ctx: typer.Context,
    database_only: bool = typer.Option(False, "--database-only", help="only the Postgres dump"),
    label: str | None = typer.Option(None, "--label", help="a name; labelled backups are pinned (never pruned)"),
    no_upload: bool = typer.Option(False, "--no-upload", help="keep it local even if a backups bucket exists"),
    no_prune: bool = typer.Option(False, "--no-prune", help="do not apply retention afterwards"),
    keep_last: int = KeepLast,
    keep_daily: int = KeepDaily,
    keep_weekly: int = KeepWeekly,
    keep_monthly: int = KeepMonthly,
    fmt: Format = FormatOption,
) -> None:
    """pg_dump + Redis snapshot + result objects, with checksums and a manifest."""
    from ops.backup import create_backup, prune

    c = ctx_obj(ctx)
    policy = _retention(keep_last, keep_daily, keep_weekly, keep_monthly)
    target = c.target()
    store = c.store()
    phase = None if c.url_mode else c.settings.phase
    manifest = create_backup(
        target,
        store,
        phase=phase,
        database_only=database_only,
        label=label,
        pinned=label is not None,
        upload=not no_upload,
        progress=_progress(fmt),
    )
    pruned = [] if no_prune else prune(store, policy, target)
    data = {**manifest.to_dict(), "path": str(store.path(manifest.id)), "pruned": pruned}
    if fmt == Format.json:
        emit_json(data)
        return
    out.print(
        f"[green]backup {manifest.id}[/] ({manifest.kind}, {manifest.size / 1e6:.2f} MB, "
        f"{manifest.duration_s:.1f}s) in {store.path(manifest.id)}"
    )
    for name, comp in manifest.components.items():
        details = {k: v for k, v in comp.details.items() if k != "row_counts"}
        out.print(f"  {name}: {comp.file} sha256 {comp.sha256[:16]}… {comp.bytes} bytes {details}")
    if manifest.remote:
        out.print(f"  copied to bucket backups/{manifest.remote}")
    if pruned:
        out.print(f"  retention removed: {', '.join(pruned)}")


def _list_backups(c: Ctx, fmt: Format, remote: bool) -> None:
    from ops.backup import remote_backups

    store = c.store()
    manifests = store.list()
    remote_ids: list[str] = []
    if remote:
        remote_ids = remote_backups(c.target(), c.stack)
    local_ids = {m.id for m in manifests}
    if fmt == Format.json:
        emit_json(
            {
                "stack": c.stack,
                "directory": str(store.root),
                "backups": [
                    {**m.to_dict(), "size": m.size, "local": True, "in_bucket": m.id in remote_ids or bool(m.remote)}
                    for m in manifests
                ],
                "remote_only": [r for r in remote_ids if r not in local_ids],
            }
        )
        return
    table = Table(title=f"Backups of stack {c.stack} ({store.root})")
    for col in ("ID", "Created", "Kind", "Phase", "Size", "Contents", "Label", "Copies"):
        table.add_column(col, justify="right" if col == "Size" else "left")
    for m in manifests:
        rows = m.components["database"].details.get("rows") if "database" in m.components else None
        contents = ", ".join(m.components) + (f" ({rows} rows)" if rows is not None else "")
        copies = "local" + (" + bucket" if m.remote or m.id in remote_ids else "")
        table.add_row(
            m.id,
            m.created_at,
            m.kind,
            str(m.phase) if m.phase is not None else "-",
            f"{m.size / 1e6:.2f} MB",
            contents,
            (m.label or "") + (" 📌" if m.pinned else ""),
            copies,
        )
    for rid in remote_ids:
        if rid not in local_ids:
            table.add_row(rid, "", "", "", "", "", "", "bucket only")
    out.print(table)


@backup_app.command("list")
@handled
def backup_list(
    ctx: typer.Context,
    fmt: Format = FormatOption,
    remote: bool = typer.Option(False, "--remote", help="also list the backups bucket"),
) -> None:
    """Backups of the stack, newest first."""
    _list_backups(ctx_obj(ctx), fmt, remote)


@backup_app.command("verify")
@handled
def backup_verify(
    ctx: typer.Context,
    backup_id: str = typer.Argument(..., metavar="ID", help="a backup id or 'latest'"),
    fmt: Format = FormatOption,
) -> None:
    """Checksums, then restore into a scratch database and compare row counts."""
    from ops.backup import verify_backup

    c = ctx_obj(ctx)
    report = verify_backup(c.target(), c.store(), backup_id, progress=_progress(fmt))
    _print_report(report, fmt, "verified", "NOT verified")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _print_report(report: Any, fmt: Format, good: str, bad: str) -> None:
    if fmt == Format.json:
        emit_json(report.to_dict())
        return
    for check in report.checks:
        mark = "[green]ok[/]  " if check.ok else "[bold red]FAIL[/]"
        out.print(f"{mark} {check.name}: {check.detail}")
    out.print(f"backup {report.backup_id}: " + (f"[green]{good}[/]" if report.ok else f"[bold red]{bad}[/]"))


@backup_app.command("prune")
@handled
def backup_prune(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run"),
    keep_last: int = KeepLast,
    keep_daily: int = KeepDaily,
    keep_weekly: int = KeepWeekly,
    keep_monthly: int = KeepMonthly,
    fmt: Format = FormatOption,
) -> None:
    """Apply retention: keep the last N, the newest per day/week/month, and pinned ones."""
    from ops.backup import prune

    c = ctx_obj(ctx)
    target = None if dry_run else _optional_target(c)
    removed = prune(c.store(), _retention(keep_last, keep_daily, keep_weekly, keep_monthly), target, dry_run=dry_run)
    if fmt == Format.json:
        emit_json({"removed": removed, "dry_run": dry_run})
    else:
        out.print(("would remove: " if dry_run else "removed: ") + (", ".join(removed) or "nothing"))


def _optional_target(c: Ctx) -> Target | None:
    try:
        return c.target()
    except (OpsError, ConfigError):
        return None


@app.command("restore")
@handled
def restore(
    ctx: typer.Context,
    backup_id: str | None = typer.Argument(None, metavar="[ID]", help="a backup id or 'latest'"),
    list_: bool = typer.Option(False, "--list", help="list the backups instead"),
    only: str | None = typer.Option(None, "--only", help="comma list of database,redis,results"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    no_maintenance: bool = typer.Option(False, "--no-maintenance", help="do not switch maintenance mode on"),
    fmt: Format = FormatOption,
) -> None:
    """Restore a backup into the deployment (replaces its data)."""
    from ops.backup import COMPONENTS, fetch_backup, remote_backups, restore_backup
    from ops.maintenance import maintenance

    c = ctx_obj(ctx)
    if list_:
        _list_backups(c, fmt, remote=False)
        return
    if backup_id is None:
        raise ValueError("name the backup to restore (an ID or 'latest'), or --list")
    components = [x.strip() for x in only.split(",")] if only else list(COMPONENTS)
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"--only: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(COMPONENTS)}")
    target = c.target()
    store = c.store()
    if backup_id != "latest" and not store.path(backup_id).exists() and backup_id in remote_backups(target, c.stack):
        fetch_backup(target, store, backup_id, progress=_progress(fmt))
    manifest = store.resolve(backup_id)
    if not yes:
        typer.confirm(
            f"Replace the {', '.join(c for c in components if c in manifest.components)} of {target.describe()} "
            f"with backup {manifest.id} ({manifest.created_at})?",
            abort=True,
        )
    switched = False
    if not no_maintenance:
        try:
            maintenance(target, "on", message="Selextract is restoring data; please retry shortly.")
            switched = True
        except OpsError as exc:
            err.print(f"[yellow]maintenance mode not switched on: {exc}[/]")
    try:
        report = restore_backup(target, store, manifest.id, components=components, progress=_progress(fmt))
    finally:
        if switched:
            maintenance(target, "off")
    _print_report(report, fmt, "restored", "restored with differences")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


# --- health ----------------------------------------------------------------------------------


@app.command("health")
@handled
def health(
    ctx: typer.Context,
    critical_only: bool = typer.Option(False, "--critical-only", help="only API, database, Redis, workers, storage"),
    silent: bool = typer.Option(False, "--silent", help="no output (cron): exit code and alerts only"),
    no_alert: bool = typer.Option(False, "--no-alert", help="never send Slack/e-mail alerts"),
    fmt: Format = FormatOption,
) -> None:
    """Health of the deployment; exit 1 when a check fails. Alerts on Slack/e-mail when configured."""
    from ops.alerts import AlertConfig, AlertState, notify
    from ops.health import run_checks, standard_checks

    c = ctx_obj(ctx)
    target = c.target()
    report = run_checks(standard_checks(target), critical_only=critical_only)
    settings = None if c.url_mode else c.settings
    config = AlertConfig.from_env(c.env(), settings)
    alert_problems: list[str] = []
    if config.enabled and not no_alert:
        state = AlertState(state_dir() / f"health-{c.stack}.json")
        kind = state.decide(report)
        if kind is not None:
            alert_problems = notify(config, c.stack, report, kind)
        state.remember(report, kind if not alert_problems else None)
    if not silent:
        if fmt == Format.json:
            emit_json({"stack": c.stack, **report.to_dict(), "alert_errors": alert_problems})
        else:
            table = Table(title=f"Health — {target.describe()}")
            for col in ("Check", "Critical", "Status", "Detail", "Time"):
                table.add_column(col)
            style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
            for r in report.results:
                table.add_row(
                    r.name,
                    "yes" if r.critical else "",
                    f"[{style[r.status]}]{r.status}[/]",
                    r.detail,
                    f"{r.seconds:.2f}s",
                )
            out.print(table)
            out.print("[green]healthy[/]" if report.ok else f"[bold red]FAILING[/]: {', '.join(report.failing)}")
            for problem in alert_problems:
                err.print(f"[yellow]alert not sent: {problem}[/]")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


# --- maintenance, workers, logs --------------------------------------------------------------


class MaintenanceAction(StrEnum):
    on = "on"
    off = "off"
    status = "status"


@app.command("maintenance")
@handled
def maintenance_cmd(
    ctx: typer.Context,
    action: MaintenanceAction = typer.Argument(..., help="on, off or status"),
    message: str = typer.Option("Selextract is down for maintenance; please retry later.", "--message"),
    retry_after: int = typer.Option(600, "--retry-after", min=1, help="seconds clients should wait"),
    fmt: Format = FormatOption,
) -> None:
    """Maintenance mode: the API answers 503 + Retry-After (health and metrics excepted)."""
    from ops.maintenance import maintenance

    state = maintenance(ctx_obj(ctx).target(), action.value, message=message, retry_after=retry_after)
    if fmt == Format.json:
        emit_json(asdict(state))
    else:
        out.print(state.describe())


@workers_app.command("scale")
@handled
def workers_scale(
    ctx: typer.Context,
    count: int = typer.Argument(..., metavar="N", help="worker containers wanted in total"),
    per_server: int | None = typer.Option(None, "--per-server", help="phase 2+: containers per worker server"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the config change and cost, change nothing"),
    yes: bool = typer.Option(False, "--yes", "-y"),
    fmt: Format = FormatOption,
) -> None:
    """Scale the worker pool: stack config + `pulumi up` (never containers behind Pulumi's back)."""
    from ops.workers import plan_scale

    c = ctx_obj(ctx)
    sp = plan_scale(c.settings, count, per_server=per_server)
    data = {**asdict(sp), "cost_delta": sp.cost_delta, "dry_run": dry_run, "applied": False}
    if not sp.changes:
        data["note"] = f"the stack already runs {sp.containers} worker containers"
    elif not dry_run:
        if not yes and fmt == Format.text:
            typer.confirm(f"Set {sp.changes} on stack {c.stack} and run pulumi up?", abort=True)
        deployer = make_deployer(c.stack)
        for key, value in sp.changes.items():
            deployer.set_config(key, value)
        data["up"] = deployer.up(_progress(fmt))
        data["applied"] = True
    if fmt == Format.json:
        emit_json(data)
        return
    out.print(
        f"workers: {sp.containers} containers ({', '.join(f'{k}={v}' for k, v in sp.changes.items()) or 'no change'})"
    )
    for note in sp.notes:
        out.print(f"  {note}")
    out.print(f"monthly cost {sp.cost_now:.2f} → {sp.cost_after:.2f} ({sp.cost_delta:+.2f})")
    if dry_run:
        out.print("dry run: nothing changed")


@app.command("logs")
@handled
def logs(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="api, worker, postgres, redis, nginx, haproxy, objectstore, monitoring, …"),
    tail: int = typer.Option(100, "--tail", "-n", min=0),
    follow: bool = typer.Option(False, "--follow", "-F"),
    since: str | None = typer.Option(None, "--since", help="e.g. 10m, 2h, 2025-01-01T00:00:00"),
) -> None:
    """Logs of a service's containers (merged, prefixed by container)."""
    from ops.logs import find_containers, show_logs

    c = ctx_obj(ctx)
    engines: list[str | None] = [None]
    if not c.url_mode and c.settings.target != "local":
        from ops.deploy import PulumiDeployer, docker_hosts_from_outputs

        engines = list(dict.fromkeys(docker_hosts_from_outputs(PulumiDeployer(c.stack).outputs(), c.settings).values()))
    show_logs(find_containers(c.stack, service, engines), tail=tail, follow=follow, since=since)


# --- migrate ---------------------------------------------------------------------------------


@app.command("migrate")
@handled
def migrate(
    ctx: typer.Context,
    from_phase: int = typer.Option(..., "--from", help="the phase the stack is on"),
    to_phase: int = typer.Option(..., "--to", help="the next (or previous) phase"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the plan and the pulumi preview; change nothing"),
    force: bool = typer.Option(False, "--force", help="skip confirmations and the phase/health preconditions"),
    gate_timeout: float = typer.Option(180.0, "--gate-timeout", help="seconds the new deployment has to get healthy"),
    gate: str | None = typer.Option(
        None, "--gate", help="comma list of the checks that must pass (default: api,database,redis,workers,storage)"
    ),
    no_maintenance: bool = typer.Option(False, "--no-maintenance", help="keep the API open during the move"),
    fmt: Format = FormatOption,
) -> None:
    """Move the stack one phase: backup, pulumi up, data move, health gate, DNS; rollback on failure."""
    from ops.deploy import docker_hosts_from_outputs
    from ops.migrate import CRITICAL_GATE, MigrationLog, MigrationPlan, Migrator

    c = ctx_obj(ctx)
    if c.url_mode:
        raise ValueError("migrate drives the stack's containers; run it without --env-file/DATABASE_URL")
    gate_checks = tuple(x.strip() for x in gate.split(",")) if gate else CRITICAL_GATE
    unknown = set(gate_checks) - set(CRITICAL_GATE)
    if unknown:
        raise ValueError(f"--gate: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(CRITICAL_GATE)}")
    deployer = make_deployer(c.stack)

    def target_for(p: Any, s: Settings) -> Target:
        if s.target == "local":
            return docker_target(p, s, backup_secret=backup_secret(deployer.outputs, s.stack))
        outputs = deployer.outputs()
        return docker_target(
            p,
            s,
            docker_hosts=docker_hosts_from_outputs(outputs, s),
            entry_address=outputs.get("entryAddress"),
            backup_secret=backup_secret(lambda: outputs, s.stack),
        )

    def echo(line: str) -> None:
        if fmt == Format.text:
            out.print(line, markup=False)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = MigrationLog(state_dir() / "migrations" / f"{c.stack}-{stamp}-{from_phase}-to-{to_phase}.log", echo)

    def confirm(mp: MigrationPlan) -> bool:
        if force:
            return True
        _print_migration_plan(mp)
        return typer.confirm(f"Migrate stack {c.stack} from phase {from_phase} to {to_phase}?")

    migrator = Migrator(
        deployer=deployer,
        load_settings=lambda: load_stack(c.stack),
        target_for=target_for,
        store=c.store(),
        log=log,
        gate_timeout=gate_timeout,
        gate_checks=gate_checks,
        use_maintenance=not no_maintenance,
    )
    result = migrator.run(from_phase, to_phase, dry_run=dry_run, force=force, confirm=confirm)
    if fmt == Format.json:
        emit_json(result.to_dict())
    else:
        if dry_run:
            _print_migration_plan(result.plan)
            if result.preview:
                out.print(Panel(result.preview[-6000:], title="pulumi preview"), markup=False)
        style = "green" if result.ok else "bold red"
        out.print(
            f"[{style}]{result.status}[/]"
            + (f": {result.error}" if result.error else "")
            + (f" (backup {result.backup_id})" if result.backup_id else "")
        )
        out.print(f"log: {result.log_path}")
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


def _print_migration_plan(mp: Any) -> None:
    data = mp.to_dict()
    out.print(
        Panel(
            "\n".join(
                [
                    f"phase {mp.from_phase} ({data['from_phase_name']}) → {mp.to_phase} ({data['to_phase_name']})",
                    f"hosts added: {', '.join(mp.hosts_added) or 'none'}; "
                    f"removed: {', '.join(mp.hosts_removed) or 'none'}",
                    f"monthly cost {mp.cost_from:.2f} → {mp.cost_to:.2f} {mp.currency} ({data['cost_delta']:+.2f})",
                    *(f"note: {n}" for n in mp.notes),
                    "steps:",
                    *(f"  {i}. {s}" for i, s in enumerate(mp.steps, 1)),
                ]
            ),
            title=f"Migration plan — stack {mp.stack}",
        ),
        markup=False,
    )


# --- dashboard -------------------------------------------------------------------------------


@app.command("dashboard")
@handled
def dashboard(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8050, "--port", help="8080 is the local stack's HTTP entry, hence 8050"),
    interval: float = typer.Option(3.0, "--interval", min=0.5, help="seconds between updates"),
    current_phase: int | None = typer.Option(None, "--current-phase", "-p"),
    metrics_file: Path | None = MetricsOption,
    prometheus: str | None = PrometheusOption,
) -> None:
    """Live scaling dashboard (web page with WebSocket updates): metrics, triggers, cost projection."""
    from ops.dashboard import DashboardState, serve

    c = ctx_obj(ctx)
    settings = c.settings
    phase = settings.phase if current_phase is None else current_phase
    if metrics_file is None and prometheus is None and settings.target != "local":
        raise ValueError("no metrics source: pass --metrics FILE or --prometheus URL")
    state = DashboardState(
        lambda: collect_metrics(c, metrics_file, prometheus, use_database=metrics_file is None),
        settings_for_phase(settings, phase)[0],
        current_phase=phase,
        interval=interval,
    )
    err.print(f"dashboard on http://{host}:{port}/ (Ctrl-C stops it)")
    serve(state, host=host, port=port)


if __name__ == "__main__":
    app()


secrets_app = typer.Typer(help="Stack secrets.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


def _release_context(ctx: typer.Context) -> tuple[Any, Any]:
    from ops.release import AuditLog
    from ops.stack import state_dir

    c = ctx_obj(ctx)
    return make_deployer(c.stack), AuditLog.for_stack(state_dir(), c.stack)


def _report_release(action: str, outputs: dict[str, Any], fmt: Format, extra: dict[str, Any] | None = None) -> None:
    version = outputs.get("version") or {}
    if fmt == Format.json:
        emit_json({"action": action, "version": version, **(extra or {})})
        return
    out.print(f"{action}: running version {version.get('tag')} (commit {version.get('commit')})")
    if extra and extra.get("retired"):
        out.print(extra["retired"])


@app.command("deploy")
@handled
def deploy_cmd(ctx: typer.Context, fmt: Format = FormatOption) -> None:
    """Deploy the working tree with zero downtime; recorded in the stack's audit log."""
    from ops.release import deploy

    deployer, audit = _release_context(ctx)
    _report_release("deploy", deploy(deployer, audit, _progress(fmt)), fmt)


@app.command("rollback")
@handled
def rollback_cmd(
    ctx: typer.Context,
    to: str | None = typer.Option(None, "--to", help="version (image tag) to run; default: the previous one"),
    fmt: Format = FormatOption,
) -> None:
    """Return to the previous successful version (from the audit log) without rebuilding."""
    from ops.release import rollback

    deployer, audit = _release_context(ctx)
    _report_release("rollback", rollback(deployer, audit, _progress(fmt), to=to), fmt)


@app.command("repair")
@handled
def repair_cmd(ctx: typer.Context, fmt: Format = FormatOption) -> None:
    """Clear what a killed `pulumi up` left (stale lock, unrecorded containers) so the next up converges."""
    report = make_deployer(ctx_obj(ctx).stack).repair(_progress(fmt))
    if fmt == Format.json:
        emit_json(report.to_dict())
    elif not report.changed:
        out.print("nothing to repair: the last update ended normally")


@app.command("audit")
@handled
def audit_cmd(ctx: typer.Context, fmt: Format = FormatOption) -> None:
    """Who deployed what version when (the stack's audit log)."""
    _, audit = _release_context(ctx)
    entries = audit.entries()
    if fmt == Format.json:
        emit_json([asdict(e) for e in entries])
        return
    for e in entries:
        out.print(
            f"{e.time}  {e.user:<24} {e.action:<8} {e.version or '-':<24} {e.result:<9} {e.seconds:>6.1f}s {e.detail}"
        )


@secrets_app.command("rotate")
@handled
def secrets_rotate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="postgresPassword, redisPassword, objectStoreSecretKey, …"),
    fmt: Format = FormatOption,
) -> None:
    """New value for a generated secret (bumps its rotation keeper) and `pulumi up`."""
    from infra.specs.objectstore import ROTATION_KEY as OBJECT_STORE_KEY
    from infra.specs.objectstore import app_access_key
    from infra.specs.postgres import ROTATION_KEY
    from ops.release import (
        retire_old_object_store_keys,
        retire_old_redis_passwords,
        retire_standby_login,
        rotate_secret,
    )

    deployer, audit = _release_context(ctx)
    c = ctx_obj(ctx)
    generation = c.settings.rotation.get(name, 0) + 1
    outputs = rotate_secret(deployer, audit, name, _progress(fmt), current=generation - 1)
    # the new version runs everywhere: what only the old one used can go
    retired = ""
    if name == ROTATION_KEY:
        retired = f"retired the previous app database login {retire_standby_login(c.target().postgres, generation)}"
    elif name == "redisPassword":
        retired = f"dropped {retire_old_redis_passwords(c.target().redis)} earlier Redis password(s)"
    elif name == OBJECT_STORE_KEY and "objectstore" in c.target().data_containers:
        base = c.settings.object_store.access_key
        removed = retire_old_object_store_keys(
            c.target().data_containers["objectstore"],
            c.settings.object_store_impl,
            app_access_key(base, {OBJECT_STORE_KEY: generation}),
            base,
        )
        retired = f"removed {len(removed)} earlier object-store key(s): {', '.join(removed) or 'none'}"
    _report_release(f"rotate {name}", outputs, fmt, {"generation": generation, "retired": retired})
