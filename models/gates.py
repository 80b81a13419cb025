"""Promotion gates: the thresholds a run's measured figures must meet before its model may be
promoted (`jointcredit promote`, docs/GOVERNANCE.md).

A gates file is flat TOML, one threshold per gate; a gate left out is not checked, a key that
is not a gate is refused. A gate whose figure the run did not measure fails (a centralized gap
without a centralized baseline, an adverse impact ratio without protected attributes, an
epsilon cap on a run without differential privacy, whose epsilon is unbounded): promotion
needs evidence, not its absence.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jointcredit.federation.metrics import RunMetrics

FAIRNESS = "fairness"  # the metrics.json block of per-group figures (docs/GOVERNANCE.md)


class GatesError(ValueError):
    """A gates file that is not valid TOML, names an unknown gate or gives a non-number."""


@dataclass(frozen=True)
class Run:
    """What the gates and the validation report read of a run: metrics.json, with its
    fairness block (per attribute, per group) kept as plain JSON."""

    metrics: RunMetrics
    fairness: dict[str, Any] | None


# The parts of metrics.json the coordinator also signed into the model's manifest.
SIGNED_SECTIONS = ("metrics", "privacy")


def unsigned_differences(manifest: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """Where metrics.json says otherwise than the model's signed manifest (the federated
    figures, the privacy spent): a gate must never pass on figures edited after signing."""
    found: list[str] = []

    def walk(signed: Any, given: Any, where: str) -> None:
        if isinstance(signed, dict):
            for key, value in signed.items():
                inner = given.get(key) if isinstance(given, dict) else None
                walk(value, inner, f"{where}.{key}" if where else key)
        elif signed != given and not (_nan(signed) and _nan(given)):
            found.append(f"{where}: signed {signed!r}, metrics.json {given!r}")

    walk(manifest.get("metrics", {}), metrics, "")
    walk(manifest.get("privacy", {}), metrics.get("privacy"), "privacy")
    return found


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def read_run(path: Path) -> Run:
    raw = json.loads(path.read_bytes())
    fairness = raw.pop(FAIRNESS, None)
    return Run(RunMetrics.model_validate(raw), fairness if isinstance(fairness, dict) else None)


@dataclass(frozen=True)
class Measured:
    value: float | None  # None: not measured
    detail: str


@dataclass(frozen=True)
class GateResult:
    name: str
    threshold: float
    value: float | None
    passed: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        value: float | str | None = self.value
        if self.value is not None and not math.isfinite(self.value):
            value = "unbounded"  # canonical JSON has no infinity
        return {
            "name": self.name,
            "threshold": self.threshold,
            "value": value,
            "passed": self.passed,
            "detail": self.detail,
        }


def _federated_auc(run: Run) -> Measured:
    return Measured(
        run.metrics.federated.auc, f"federated AUC ({run.metrics.federated.evaluated_on})"
    )


def _federated_ks(run: Run) -> Measured:
    return Measured(run.metrics.federated.ks, "federated KS")


def _brier(run: Run) -> Measured:
    return Measured(run.metrics.federated.brier, "federated Brier score")


def _gap(run: Run) -> Measured:
    c, f = run.metrics.centralized, run.metrics.federated.auc
    if c is None or c.auc is None or f is None:
        return Measured(None, "no centralized baseline in this run (simulation only)")
    return Measured(c.auc - f, f"centralized AUC {c.auc:.4f} - federated AUC {f:.4f}")


def _institution_auc(run: Run) -> Measured:
    aucs = {i: r.auc for i, r in run.metrics.per_institution.items()}
    undefined = sorted(i for i, a in aucs.items() if a is None)
    if not aucs or undefined:
        return Measured(None, f"undefined for {', '.join(undefined) or 'every institution'}")
    worst = min(aucs, key=lambda i: aucs[i] or 0.0)
    return Measured(aucs[worst], f"lowest institution AUC ({worst})")


def _group_values(run: Run, key: str) -> dict[str, float] | None:
    block = (run.fairness or {}).get(key)
    if not isinstance(block, dict) or not block:
        return None
    out: dict[str, float] = {}
    for attribute, groups in block.items():
        # Per group, or one figure for the attribute (a difference between its groups).
        values = groups if isinstance(groups, dict) else {"": groups}
        for group, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{attribute}={group}" if group else attribute] = float(value)
    return out or None


def _fairness(key: str, lowest: bool, what: str) -> Callable[[Run], Measured]:
    """The worst group: the lowest value (a ratio), or the largest size (a difference)."""

    def measure(run: Run) -> Measured:
        values = _group_values(run, key)
        if values is None:
            return Measured(None, f"{what}: not measured (the schema names no protected attribute)")
        if lowest:
            name = min(values, key=lambda k: values[k])
            return Measured(values[name], f"{what} ({name})")
        name = max(values, key=lambda k: abs(values[k]))
        return Measured(abs(values[name]), f"{what} ({name})")

    return measure


def _mia(run: Run) -> Measured:
    auc = run.metrics.privacy.mia_auc
    if auc is None:
        return Measured(None, "no membership-inference audit in this run")
    return Measured(auc, "membership-inference attack AUC (the stronger attack)")


def _epsilon(run: Run) -> Measured:
    p = run.metrics.privacy
    if p.epsilon_spent is None:
        return Measured(math.inf, f"privacy {p.setting}: no differential privacy, unbounded")
    return Measured(p.epsilon_spent, f"epsilon spent ({p.setting}, delta {p.delta})")


def _rejected(run: Run) -> Measured:
    return Measured(float(run.metrics.security.rejected_replies), "rejected (unverified) replies")


# name -> (minimum or maximum, what it measures)
GATES: dict[str, tuple[str, Callable[[Run], Measured]]] = {
    "min_auc": ("min", _federated_auc),
    "min_ks": ("min", _federated_ks),
    "max_brier": ("max", _brier),
    "max_gap_to_centralized": ("max", _gap),
    "min_institution_auc": ("min", _institution_auc),
    "min_adverse_impact_ratio": (
        "min",
        _fairness("adverse_impact_ratio", True, "lowest adverse impact ratio"),
    ),
    "max_demographic_parity_difference": (
        "max",
        _fairness("demographic_parity_difference", False, "largest demographic parity difference"),
    ),
    "max_equal_opportunity_difference": (
        "max",
        _fairness("equal_opportunity_difference", False, "largest equal-opportunity difference"),
    ),
    "max_mia_auc": ("max", _mia),
    "max_epsilon": ("max", _epsilon),
    "max_rejected_replies": ("max", _rejected),
}


def parse_gates(text: str, source: str = "gates file") -> dict[str, float]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GatesError(f"{source}: not valid TOML ({exc})") from exc
    gates: dict[str, float] = {}
    for key, value in doc.items():
        if key not in GATES:
            raise GatesError(f"{source}: unknown gate {key!r} (gates: {', '.join(GATES)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise GatesError(f"{source}: gate {key!r} must be a number, not {value!r}")
        gates[key] = float(value)
    if not gates:
        raise GatesError(f"{source}: names no gate (gates: {', '.join(GATES)})")
    return gates


def check_gates(run: Run, gates: dict[str, float]) -> list[GateResult]:
    results = []
    for name, threshold in gates.items():
        kind, measure = GATES[name]
        m = measure(run)
        if m.value is None:
            passed = False
        else:
            passed = m.value >= threshold if kind == "min" else m.value <= threshold
        results.append(GateResult(name, threshold, m.value, passed, m.detail))
    return results
