"""The synthetic institutions' known disparity against what a run measured: the fairness
figures of the true PD (the oracle: `data/synthetic.py`'s ground truth) on the run's own pooled
test rows, beside the federated model's from its metrics.json (docs/GOVERNANCE.md, "Fairness").

    jointcredit simulate --dataset synthetic --model logreg --out runs/fair-synth
    python scripts/fairness_synthetic.py runs/fair-synth
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jointcredit.data import synthetic
from jointcredit.data.catalog import load_federation
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.fairness import centralized


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a synthetic run's output directory")
    run = ap.parse_args().run
    metrics = RunMetrics.read(run / "metrics.json")
    measured = metrics.fairness
    if measured is None:
        raise SystemExit(f"{run}: no fairness section")
    settings = RunSettings.from_run_config(metrics.config)
    if settings.dataset != "synthetic":
        raise SystemExit("the oracle exists for the synthetic dataset only")
    fed = load_federation(settings.data)
    test = fed.pooled_test()
    assert test.groups is not None
    truth = synthetic.true_default_probability(test.x)
    oracle = centralized(truth, test.y, test.groups, fed.schema.protected, measured.cutoffs)
    print("| attribute | group | applicants | default rate | approval (true PD / model) | "
          "AIR (true PD / model) | AUC (true PD / model) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for a in measured.attributes:
        for g, c in measured.groups[a].items():
            o = oracle.groups[a][g]
            print(
                f"| {a} | {g} | {c.applicants} | {c.defaulted / c.applicants:.3f} | "
                f"{_f(o.approval_rate)} / {_f(c.approval_rate)} | "
                f"{_f(oracle.adverse_impact_ratio[a][g])} / "
                f"{_f(measured.adverse_impact_ratio[a][g])} | "
                f"{_f(oracle.auc_by_group[a][g])} / {_f(measured.auc_by_group[a][g])} |"
            )
    for a in measured.attributes:
        print(
            f"\n- {a}: demographic parity difference {_f(oracle.demographic_parity_difference[a])}"
            f" (true PD) / {_f(measured.demographic_parity_difference[a])} (model); equal "
            f"opportunity difference {_f(oracle.equal_opportunity_difference[a])} / "
            f"{_f(measured.equal_opportunity_difference[a])}"
        )


if __name__ == "__main__":
    main()
