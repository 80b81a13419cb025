"""A run directory for the validation report and promotion tests: a signed model, its trust
store, and the shipped sample run's metrics with score-band counts (and optionally a fairness
block) of the shape a run writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from service_helpers import signed_artifact

FIXTURE = Path(__file__).parent / "fixtures" / "metrics-logreg-sample.json"
EDGES = [float(e) for e in range(350, 951, 10)]

FAIRNESS: dict[str, Any] = {
    "attributes": ["sex"],
    "groups": {"sex": ["female", "male"]},
    "adverse_impact_ratio": {"sex": {"female": 0.72, "male": 1.0}},
    "equal_opportunity_difference": {"sex": {"female": -0.08, "male": 0.0}},
    "demographic_parity_difference": {"sex": {"female": -0.11, "male": 0.0}},
    "auc_by_group": {"sex": {"female": 0.79, "male": 0.83}},
    "calibration_by_group": {"sex": {"female": 0.012, "male": 0.008}},
}


def histogram(seed: int, n: int = 600) -> dict[str, Any]:
    """Score-band counts of `n` applicants: bads score lower than goods."""
    rng = np.random.default_rng(seed)
    bad = rng.random(n) < 0.2
    scores = np.where(bad, rng.normal(610, 45, n), rng.normal(680, 45, n))
    band = np.clip(((np.clip(scores, 350, 950) - 350) // 10).astype(int), 0, len(EDGES) - 2)
    count = lambda mask: np.bincount(band[mask], minlength=len(EDGES) - 1).tolist()  # noqa: E731
    return {"edges": EDGES, "good": count(~bad), "bad": count(bad)}


def run_dir(root: Path, *, fairness: dict[str, Any] | None = None, hist: bool = True) -> Path:
    """OUT with model/, trust.json and metrics.json (run 7, as the signed model)."""
    signed_artifact(root)
    out = root / "out"
    out.mkdir()
    shutil.copytree(root / "model", out / "model")
    shutil.copy(root / "trust.json", out / "trust.json")
    metrics = json.loads(FIXTURE.read_text())
    metrics["run_id"] = 7
    for k, inst in enumerate(sorted(metrics["per_institution"])):
        if hist:
            metrics["per_institution"][inst]["score_histogram"] = histogram(k)
    if fairness is not None:
        metrics["fairness"] = fairness
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out
