"""How far can personalisation beat local-only at each lender? (logistic scorecard runs)

    python scripts/personalisation_study.py runs/bench-1      # a `jointcredit simulate` out dir

Re-creates the run's splits from its config, takes its global model, and compares on each
lender's own test split, against local-only (the benchmark's baseline,
`simulations.baselines.fit_alone` with the run's settings and seed):
- the run's personalised model (`auc_personalized` in metrics.json);
- `hierarchical` and `ditto` (models/personalize.py) recomputed here, each as an institution
  runs it (Ditto with the institution's own seed and validation split);
- the converged proximal path `mean log-loss + (mu / 2) ||w - w_global||^2` over a grid of mu
  (mu 1e-7: the local optimum), and its best mu *chosen on the test split itself*: an upper
  bound for any way of choosing mu;
- paired bootstrap 95 % intervals (test rows resampled within each class) of the AUC
  difference to local-only, for hierarchical and Ditto.
Writes OUT/personalisation_study.json. It reads every lender's rows, so it is a simulation-only
study, not part of the package. Full data: ~8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from jointcredit.client.data import validation_split
from jointcredit.client.update import seed as _seed
from jointcredit.data.catalog import load_federation
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import WEIGHTS
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.personalize import (
    map_fit,
    personalize,
    personalize_hierarchical,
    prior_deviation,
)
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.training import TrainConfig, predict_pd
from jointcredit.simulations.baselines import fit_alone

MUS = (1e-7, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
BOOTSTRAP = 1000


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC (ties averaged): cheap enough for the bootstrap."""
    r = rankdata(s)
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def paired_ci(y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float]:
    """95 % interval of AUC(a) - AUC(b) over test rows resampled within each class."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        diffs.append(auc(y[idx], a[idx]) - auc(y[idx], b[idx]))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a `jointcredit simulate --model logreg` out dir")
    args = parser.parse_args()
    metrics = RunMetrics.read(args.run / "metrics.json")
    settings = RunSettings.from_run_config(metrics.config)
    if settings.model != "logreg":
        raise SystemExit("the converged fits here are for the logistic scorecard only")
    spec_json = (args.run / "model" / "preprocessing.json").read_text()
    spec = PreprocessingSpec.model_validate_json(spec_json)
    torch.set_num_threads(1)
    glob: nn.Module = build_model(architecture("logreg", spec.n_outputs))
    weights = np.load(args.run / "model" / WEIGHTS)
    glob.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    anchor = [p.detach() for p in glob.parameters()]
    fed = load_federation(settings.data)

    data = {
        inst: (spec.transform(d.train.x), d.train.y, spec.transform(d.test.x), d.test.y)
        for inst, d in fed.institutions.items()
    }
    deviations = {inst: prior_deviation(glob, x, y) for inst, (x, y, _, _) in data.items()}
    total = [sum(d[i] for d in deviations.values()) for i in range(len(anchor))]
    rows: list[dict[str, Any]] = []
    for k, (inst, (x, y, x_test, y_test)) in enumerate(data.items()):
        local = fit_alone(
            build_model(architecture("logreg", spec.n_outputs), seed=settings.seed),
            x,
            y,
            settings,
            (settings.seed + zlib.crc32(inst.encode())) % (2**31),  # as baselines.local_only
        )
        node_seed = _seed(settings, inst, settings.rounds + 1, salt=1)  # as the ClientApp
        fit, val = validation_split(y, node_seed)
        ditto = personalize(
            glob,
            (x[fit], y[fit]),
            (x[val], y[val]),
            TrainConfig.from_settings(settings, seed=node_seed, epochs=settings.finetune_epochs),
        ).model
        others = [t - d for t, d in zip(total, deviations[inst], strict=True)]
        hier = personalize_hierarchical(glob, x, y, others, len(data) - 1).model
        path = [
            predict_pd(
                map_fit(glob, x, y, anchor, [torch.full_like(a, mu) for a in anchor]), x_test
            )
            for mu in MUS
        ]
        p_local, p_ditto, p_hier = (predict_pd(m, x_test) for m in (local, ditto, hier))
        row: dict[str, Any] = {
            "institution": inst,
            "n_test": len(y_test),
            "local_only": auc(y_test, p_local),
            "run": metrics.per_institution[inst].auc_personalized,
            "hierarchical": auc(y_test, p_hier),
            "ditto": auc(y_test, p_ditto),
            "converged_local": auc(y_test, path[0]),
            "best_mu_on_test": max(auc(y_test, p) for p in path),
            "ci_hierarchical": paired_ci(y_test, p_hier, p_local, k),
            "ci_ditto": paired_ci(y_test, p_ditto, p_local, k),
        }
        rows.append(row)
        print(
            f"{inst[:30]:30s} n={len(y_test):5d} local {row['local_only']:.4f} "
            f"run {row['run']:.4f} hier {row['hierarchical']:.4f} "
            f"[{row['ci_hierarchical'][0]:+.4f}, {row['ci_hierarchical'][1]:+.4f}] "
            f"ditto {row['ditto']:.4f} "
            f"[{row['ci_ditto'][0]:+.4f}, {row['ci_ditto'][1]:+.4f}] "
            f"converged {row['converged_local']:.4f} best-on-test {row['best_mu_on_test']:.4f}",
            flush=True,
        )
    for key in ("run", "hierarchical", "ditto", "converged_local", "best_mu_on_test"):
        wins = sum(r[key] > r["local_only"] for r in rows)
        mean = np.mean([r[key] - r["local_only"] for r in rows])
        print(f"{key:16s} beats local-only at {wins}/{len(rows)}, mean gain {mean:+.4f}")
    for key in ("hierarchical", "ditto"):
        worse = [r["institution"] for r in rows if r[f"ci_{key}"][1] < 0]
        better = [r["institution"] for r in rows if r[f"ci_{key}"][0] > 0]
        print(f"{key}: significantly worse at {len(worse)} {worse}, better at {len(better)}")
    (args.run / "personalisation_study.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
