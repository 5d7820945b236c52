"""Scaling decision: the matrix of the scaling guide plus the Selextract guide's triggers.

Pure functions over a `Metrics` object and the thresholds in `ops/thresholds.yaml`; no
I/O besides reading that file. `selextract scaling analyze` and the dashboard print what
`analyze` returns.

Rules (all thresholds are data):
- a metric *triggers* when its value is strictly greater than its threshold (the guides
  write "> 70%"), is *approaching* from `warning_ratio` x threshold on, else *ok*;
  a metric nobody measured is *no data* and never triggers;
- matrix rows use the column of the transition out of the current phase (phase 4 uses
  the last column and asks to grow within phase 4);
- a guide trigger aimed at a later phase recommends the *next* phase (one phase at a
  time), one aimed at the current or an earlier phase asks to grow within the phase;
- recommendation: **scale** when a guide trigger for a later phase fires or at least
  `scale_when_matrix_hits` matrix rows trigger; **prepare** when one row triggers or any
  metric approaches its threshold; **stay** otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from infra.config import PHASE_NAMES, PHASES
from ops.metrics import Metrics

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.yaml")
TOP_PHASE = max(PHASES)

Verdict = Literal["triggered", "approaching", "ok", "no data"]
Action = Literal["scale", "prepare", "stay"]


@dataclass(frozen=True)
class MatrixRow:
    metric: str
    kind: str
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class GuideTrigger:
    metric: str
    threshold: float
    target_phase: int
    reason: str
    within_phase: str
    fallback: str | None = None


@dataclass(frozen=True)
class Thresholds:
    warning_ratio: float
    scale_when_matrix_hits: int
    labels: dict[str, tuple[str, str]]  # metric -> (label, unit)
    matrix: tuple[MatrixRow, ...]
    triggers: tuple[GuideTrigger, ...]

    def label(self, metric: str) -> str:
        return self.labels[metric][0]

    def unit(self, metric: str) -> str:
        return self.labels[metric][1]


@cache
def load_thresholds(path: Path = THRESHOLDS_FILE) -> Thresholds:
    raw = yaml.safe_load(path.read_text())
    labels = {name: (m["label"], m["unit"]) for name, m in raw["metrics"].items()}
    matrix = tuple(MatrixRow(r["metric"], r["kind"], tuple(float(t) for t in r["thresholds"])) for r in raw["matrix"])
    triggers = tuple(
        GuideTrigger(
            metric=t["metric"],
            threshold=float(t["threshold"]),
            target_phase=int(t["target_phase"]),
            reason=t["reason"],
            within_phase=t["within_phase"],
            fallback=t.get("fallback"),
        )
        for t in raw["triggers"]
    )
    transitions = len(PHASES) - 1
    for row in matrix:
        if len(row.thresholds) != transitions:
            raise ValueError(f"{path.name}: matrix row {row.metric} needs {transitions} thresholds (0→1 … 3→4)")
    for name in [r.metric for r in matrix] + [t.metric for t in triggers]:
        if name not in labels:
            raise ValueError(f"{path.name}: metric {name} has no label under 'metrics'")
    if not 0 < float(raw["warning_ratio"]) <= 1:
        raise ValueError(f"{path.name}: warning_ratio must be in (0, 1]")
    return Thresholds(
        warning_ratio=float(raw["warning_ratio"]),
        scale_when_matrix_hits=int(raw["scale_when_matrix_hits"]),
        labels=labels,
        matrix=matrix,
        triggers=triggers,
    )


def verdict(value: float | None, threshold: float, warning_ratio: float) -> Verdict:
    if value is None:
        return "no data"
    if value > threshold:
        return "triggered"
    if value >= threshold * warning_ratio:
        return "approaching"
    return "ok"


@dataclass(frozen=True)
class TriggerResult:
    source: Literal["matrix", "guide"]
    metric: str
    label: str
    unit: str
    value: float | None
    threshold: float
    verdict: Verdict
    target_phase: int  # the phase this trigger argues for
    note: str = ""
    measured_as: str | None = None  # the metric actually read, when a fallback stood in


@dataclass
class Recommendation:
    action: Action
    current_phase: int
    target_phase: int
    reasons: list[str] = field(default_factory=list)
    within_phase: list[str] = field(default_factory=list)
    cost: dict[str, Any] | None = None

    @property
    def summary(self) -> str:
        if self.action == "stay":
            return f"stay on phase {self.current_phase} ({PHASE_NAMES[self.current_phase]})"
        if self.target_phase == self.current_phase:
            verb = "grow within" if self.action == "scale" else "prepare to grow within"
            return f"{verb} phase {self.current_phase} ({PHASE_NAMES[self.current_phase]})"
        verb = "scale to" if self.action == "scale" else "prepare for"
        return f"{verb} phase {self.target_phase} ({PHASE_NAMES[self.target_phase]})"


@dataclass
class Analysis:
    current_phase: int
    triggers: list[TriggerResult]
    recommendation: Recommendation
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        rec = self.recommendation
        return {
            "current_phase": self.current_phase,
            "current_phase_name": PHASE_NAMES[self.current_phase],
            "recommendation": {
                "action": rec.action,
                "summary": rec.summary,
                "target_phase": rec.target_phase,
                "target_phase_name": PHASE_NAMES[rec.target_phase],
                "reasons": rec.reasons,
                "within_phase": rec.within_phase,
                "cost": rec.cost,
            },
            "triggers": [asdict(t) for t in self.triggers],
            "metrics": self.metrics,
        }


def _check_phase(phase: int) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase}; allowed: {', '.join(str(p) for p in PHASES)}")


def matrix_column(current_phase: int) -> int:
    """Index of the threshold column for leaving `current_phase` (phase 4: the last one)."""
    _check_phase(current_phase)
    return min(current_phase, TOP_PHASE - 1)


def analyze(metrics: Metrics, current_phase: int, thresholds: Thresholds | None = None) -> Analysis:
    t = thresholds or load_thresholds()
    _check_phase(current_phase)
    column = matrix_column(current_phase)
    next_phase = min(current_phase + 1, TOP_PHASE)
    results: list[TriggerResult] = []

    for row in t.matrix:
        value = metrics.get(row.metric)
        threshold = row.thresholds[column]
        results.append(
            TriggerResult(
                source="matrix",
                metric=row.metric,
                label=t.label(row.metric),
                unit=t.unit(row.metric),
                value=value,
                threshold=threshold,
                verdict=verdict(value, threshold, t.warning_ratio),
                target_phase=next_phase,
                note=f"{row.kind}; column {column}→{column + 1}",
            )
        )

    for trig in t.triggers:
        value, measured_as = metrics.get(trig.metric), None
        if value is None and trig.fallback:
            value, measured_as = metrics.get(trig.fallback), trig.fallback
        results.append(
            TriggerResult(
                source="guide",
                metric=trig.metric,
                label=t.label(trig.metric),
                unit=t.unit(trig.metric),
                value=value,
                threshold=trig.threshold,
                verdict=verdict(value, trig.threshold, t.warning_ratio),
                target_phase=trig.target_phase,
                note=trig.reason if trig.target_phase > current_phase else trig.within_phase,
                measured_as=measured_as,
            )
        )

    rec = Recommendation(action="stay", current_phase=current_phase, target_phase=current_phase)
    matrix_hits = [r for r in results if r.source == "matrix" and r.verdict == "triggered"]
    guide_ahead = [
        r for r in results if r.source == "guide" and r.verdict == "triggered" and r.target_phase > current_phase
    ]
    guide_within = [
        r for r in results if r.source == "guide" and r.verdict == "triggered" and r.target_phase <= current_phase
    ]
    approaching = [r for r in results if r.verdict == "approaching"]

    for r in guide_ahead:
        line = f"{r.label} {_fmt(r.value)}{_unit(r.unit)} > {_fmt(r.threshold)}{_unit(r.unit)}: {r.note}"
        if r.target_phase > next_phase:
            line += f" (points at phase {r.target_phase}; migrate one phase at a time, next is {next_phase})"
        rec.reasons.append(line)
    for r in matrix_hits:
        rec.reasons.append(f"{r.label} {_fmt(r.value)}{_unit(r.unit)} > {_fmt(r.threshold)}{_unit(r.unit)} (matrix)")
    for r in guide_within:
        rec.within_phase.append(
            f"{r.label} {_fmt(r.value)}{_unit(r.unit)} > {_fmt(r.threshold)}{_unit(r.unit)}: {r.note}"
        )

    if current_phase == TOP_PHASE:
        # Nothing above phase 4 here: the matrix asks for more capacity inside it.
        for r in matrix_hits:
            rec.within_phase.append(f"{r.label} over the phase-4 limit: add worker/API servers or object-store nodes")
        if matrix_hits or guide_within:
            rec.action = "scale" if len(matrix_hits) >= t.scale_when_matrix_hits or guide_within else "prepare"
        elif approaching:
            rec.action = "prepare"
        rec.target_phase = current_phase
        if rec.action != "stay" and not rec.reasons:
            rec.reasons.append("phase 4 is the last phase: grow within it")
    else:
        if guide_ahead or len(matrix_hits) >= t.scale_when_matrix_hits:
            rec.action, rec.target_phase = "scale", next_phase
        elif matrix_hits or approaching:
            rec.action, rec.target_phase = "prepare", next_phase
            for r in approaching:
                rec.reasons.append(
                    f"{r.label} {_fmt(r.value)}{_unit(r.unit)} approaching {_fmt(r.threshold)}{_unit(r.unit)}"
                )
        elif guide_within:
            rec.action, rec.target_phase = "scale", current_phase
    return Analysis(current_phase, results, rec, metrics.as_dict())


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _unit(unit: str) -> str:
    return unit if unit == "%" else f" {unit}"


def thresholds_table(thresholds: Thresholds | None = None) -> dict[str, Any]:
    """What `scaling thresholds` prints: the matrix by transition and the guide triggers."""
    t = thresholds or load_thresholds()
    transitions = [f"{p}→{p + 1}" for p in PHASES[:-1]]
    return {
        "transitions": transitions,
        "warning_ratio": t.warning_ratio,
        "scale_when_matrix_hits": t.scale_when_matrix_hits,
        "matrix": [
            {
                "metric": r.metric,
                "label": t.label(r.metric),
                "unit": t.unit(r.metric),
                "kind": r.kind,
                "thresholds": dict(zip(transitions, r.thresholds, strict=True)),
            }
            for r in t.matrix
        ],
        "triggers": [
            {
                "metric": g.metric,
                "label": t.label(g.metric),
                "unit": t.unit(g.metric),
                "threshold": g.threshold,
                "target_phase": g.target_phase,
                "target_phase_name": PHASE_NAMES[g.target_phase],
                "reason": g.reason,
                "within_phase": g.within_phase,
                "fallback": g.fallback,
            }
            for g in t.triggers
        ],
    }
