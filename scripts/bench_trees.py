"""Federated gradient-boosted trees against XGBoost, side by side on the same machine.

    python scripts/bench_trees.py [--dataset sba|sba-full|synthetic] [--split random|time]
        [--trees 100] [--max-depth 6] [--tree-learning-rate 0.1] [--out runs/bench-trees] [--json]

Measures, on the pooled test split: XGBoost `hist` on the pooled rows (the federation's bins;
2 threads and 1), this project's engine on the pooled rows with the federation's bins (the
lossless twin), and the federated run (every institution a simulated Flower node, signed
histogram replies), with where the federated run's time went (`timing.trees` in
metrics.json). Prints a Markdown table, or with `--json` one JSON object (what `make bench`
reads).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from jointcredit.data.catalog import load_federation
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners.gbdt import tree_params
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import agree, summarize
from jointcredit.models.trees import train
from jointcredit.models.trees.bins import bins_from_rows
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.simulations.simulate import simulate
from jointcredit.simulations.tree_baselines import xgboost_centralized, xgboost_params


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="sba")
    parser.add_argument("--split", default="random", choices=["random", "time"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--max-depth", type=int, default=6)
    parser.add_argument("--tree-learning-rate", type=float, default=0.1)
    parser.add_argument("--institutions", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-trees"))
    parser.add_argument(
        "--bin-sweep",
        default="",
        help="comma-separated max-bins values: instead of the federated run, XGBoost on its own "
        "bins and the twin on the federation's bins at each (the federated ensemble equals "
        "the twin, tested), to show how much of a gap is the bin count's noise",
    )
    args = parser.parse_args()
    settings = RunSettings.from_run_config(
        {
            "model": "gbdt",
            "dataset": args.dataset,
            "split": args.split,
            "institutions": args.institutions,
            "trees": args.trees,
            "max-depth": args.max_depth,
            "tree-learning-rate": args.tree_learning_rate,
            "out-dir": str(args.out),
            "checkpoints": False,
        }
    )
    fed = load_federation(settings.data)
    test = fed.pooled_test()
    rows: list[tuple[str, float | None, float]] = []
    summaries = [
        summarize(
            d.train.x,
            d.train.y,
            fed.schema,
            max_categories=settings.max_categories,
            min_count=settings.min_category_count,
        )
        for d in fed.institutions.values()
    ]
    spec = agree(
        summaries,
        fed.schema,
        max_categories=settings.max_categories,
        min_count=settings.min_category_count,
    )
    # The bins the federation agrees: the institutions' grid histograms add up exactly.
    parts = [d.train.x for d in fed.institutions.values()]
    if args.bin_sweep:
        sweep = [int(b) for b in args.bin_sweep.split(",")]
        print(json.dumps({"bin_sweep": _bin_sweep(fed, settings, spec, parts, sweep)}))
        return
    bins = bins_from_rows(parts, fed.schema, spec, settings.max_bins)
    for threads in (2, 1):
        pd_xgb, seconds = xgboost_centralized(fed, settings, bins, threads=threads)
        rows.append((f"XGBoost hist, pooled, {threads} thread(s)", _auc(test.y, pd_xgb), seconds))
    pd_raw, seconds = _xgboost_raw(fed, settings, bins)
    rows.append(("XGBoost hist, pooled raw features, its own quantile bins, 1 thread",
                 _auc(test.y, pd_raw), seconds))  # fmt: skip
    pooled = fed.pooled_train()
    started = time.perf_counter()
    twin = train(
        bins.codes(pooled.x),
        pooled.y,
        bin_layout(bins),
        tree_params(settings, fed.schema, bins.names),
    )
    seconds = time.perf_counter() - started
    rows.append(
        (
            "this engine, pooled, federation's bins",
            _auc(test.y, twin.predict_pd(bins.codes(test.x))),
            seconds,
        )
    )

    started = time.perf_counter()
    metrics = simulate(settings, with_baselines=False, with_audit=False)
    wall = time.perf_counter() - started
    timing = metrics.timing
    rows.append(
        (
            f"federated, {len(metrics.institutions)} institutions (trees phase)",
            metrics.federated.auc,
            timing.training_seconds,
        )
    )
    if args.json:
        print(json.dumps(_result(rows, metrics, wall)))
        return
    print(f"| {args.dataset}: {args.trees} trees, depth {args.max_depth} | AUC | seconds |")
    print("|---|---|---|")
    for name, auc, secs in rows:
        print(f"| {name} | {'-' if auc is None else f'{auc:.4f}'} | {secs:.2f} |")
    trees = timing.trees
    if trees is not None:
        security = metrics.security
        print()
        print("| federated trees phase | seconds |")
        print("|---|---|")
        print(f"| histogram exchanges (tree levels) | {trees.levels} |")
        print(
            "| waiting for replies (messages + institutions' work) | "
            f"{trees.exchange_seconds:.2f} |"
        )
        print(
            f"| institutions' histogram work, slowest per level, summed | "
            f"{trees.institution_histogram_seconds_max:.2f} |"
        )
        print(
            f"| institutions' histogram work, all, summed | "
            f"{trees.institution_histogram_seconds_total:.2f} |"
        )
        print(f"| coordinator: summing, splitting | {trees.coordinator_seconds:.2f} |")
        print(f"| signing (institutions, summed) | {security.signing_seconds:.2f} |")
        print(f"| verification (coordinator) | {security.verification_seconds:.2f} |")
        print(f"| whole simulation (setup, trees, evaluation) | {wall:.2f} |")


def _result(
    rows: list[tuple[str, float | None, float]], metrics: RunMetrics, wall: float
) -> dict[str, Any]:
    trees, security = metrics.timing.trees, metrics.security
    return {
        "rows": [{"name": n, "auc": a, "seconds": s} for n, a, s in rows],
        "institutions": len(metrics.institutions),
        "simulation_wall_seconds": wall,
        "trees": None if trees is None else trees.model_dump(),
        "signing_seconds": security.signing_seconds,
        "verification_seconds": security.verification_seconds,
    }


def _bin_sweep(
    fed: Any, settings: RunSettings, spec: Any, parts: list[Any], sweep: list[int]
) -> list[dict[str, Any]]:
    """AUC of XGBoost on its own bins and of the twin on the federation's bins, per max-bins."""
    pooled, test = fed.pooled_train(), fed.pooled_test()
    out = []
    for max_bins in sweep:
        at = settings.model_copy(update={"max_bins": max_bins})
        bins = bins_from_rows(parts, fed.schema, spec, max_bins)
        raw, _ = _xgboost_raw(fed, at, bins)
        twin = train(
            bins.codes(pooled.x),
            pooled.y,
            bin_layout(bins),
            tree_params(at, fed.schema, bins.names),
        )
        out.append(
            {
                "max_bins": max_bins,
                "xgboost_own_bins": _auc(test.y, raw),
                "twin": _auc(test.y, twin.predict_pd(bins.codes(test.x))),
            }
        )
    return out


def _xgboost_raw(fed: Any, settings: RunSettings, bins: Any) -> tuple[Any, float]:
    """The field's reference as a lender would run it: XGBoost `hist` on the pooled raw
    features (categories as pandas categoricals), its own quantile sketch with `max-bins`
    bins, the same boosting; seconds of training on one thread."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    train, test = fed.pooled_train(), fed.pooled_test()
    categorical = [n for n, f in fed.schema.features.items() if f.type == "categorical"]

    def frame(x: pd.DataFrame) -> pd.DataFrame:
        out = x[list(fed.schema.features)].copy()
        for c in categorical:
            out[c] = pd.Categorical(out[c].astype("string"), categories=levels[c])
        return out

    levels = {c: sorted(train.x[c].dropna().astype("string").unique()) for c in categorical}
    p = tree_params(settings, fed.schema, bins.names)
    base = float(np.clip(train.y.mean(), 1e-6, 1 - 1e-6))
    params = xgboost_params(p, settings.max_bins, base, 1, settings.seed)
    started = time.perf_counter()
    dtrain = xgb.DMatrix(frame(train.x), label=train.y, enable_categorical=True)
    booster = xgb.train(params, dtrain, p.n_trees)
    seconds = time.perf_counter() - started
    return booster.predict(xgb.DMatrix(frame(test.x), enable_categorical=True)), seconds


def _auc(y: object, p: object) -> float | None:
    return risk_metrics(y, p).auc  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
