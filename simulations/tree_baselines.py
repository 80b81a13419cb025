"""The references a gradient-boosted-trees federation is judged against (simulation only: they
pool rows).

- centralized: XGBoost (`tree_method="hist"`, the field's reference) on the pooled training
  rows, with the run's trees, depth, learning rate, lambda, gamma, min child weight, max bins
  and monotone constraints; its own quantile bins, numeric features raw and categorical ones
  as XGBoost's native categories: what a central modeller gets with the standard tool.
  `same_bins_auc`: this project's engine on the same pooled rows with the federation's bins,
  the ensemble the federated run must equal (lossless).
- local-only: each institution's own trees (this project's engine, the federation's bins).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jointcredit.data.frames import FederatedData
from jointcredit.data.schema import Schema
from jointcredit.federation.metrics import Centralized, LocalOnly, LocalOnlyInstitution
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners.gbdt import tree_params
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.trees import TreeParams, boost
from jointcredit.models.trees.interim_bins import TreeBins
from jointcredit.simulations.baselines import local_summary


def xgboost_frames(schema: Schema, *frames: pd.DataFrame) -> list[pd.DataFrame]:
    """Numeric features as floats (NaN missing), categorical ones as pandas categories with
    one shared vocabulary (XGBoost needs the same codes in every frame)."""
    out = [pd.DataFrame(index=f.index) for f in frames]
    for name, spec in schema.features.items():
        if spec.type == "numeric":
            for o, f in zip(out, frames, strict=True):
                o[name] = f[name].astype("float64")
        else:
            values = sorted({str(v) for f in frames for v in f[name].dropna().unique()})
            kind = pd.CategoricalDtype(values)
            for o, f in zip(out, frames, strict=True):
                o[name] = f[name].map(lambda v: v if pd.isna(v) else str(v)).astype(kind)
    return out


def xgboost_params(
    p: TreeParams, max_bin: int, base_score: float, threads: int = 1, seed: int = 0
) -> dict[str, object]:
    """XGBoost's `hist` parameters for the same boosting as `p`."""
    params: dict[str, object] = {
        "tree_method": "hist",
        "objective": "binary:logistic",
        "max_depth": p.max_depth,
        "eta": p.learning_rate,
        "reg_lambda": p.reg_lambda,
        "gamma": p.gamma,
        "min_child_weight": p.min_child_weight,
        "max_bin": max_bin,
        "base_score": base_score,
        "nthread": threads,
        "seed": seed,
    }
    if p.monotone:
        params["monotone_constraints"] = "(" + ",".join(map(str, p.monotone)) + ")"
    return params


def xgboost_centralized(
    fed: FederatedData, settings: RunSettings, names: list[str], threads: int = 1
) -> tuple[np.ndarray, float]:
    """XGBoost's PD on the pooled test split, and its training seconds."""
    import time

    import xgboost as xgb

    train, test = fed.pooled_train(), fed.pooled_test()
    x_train, x_test = xgboost_frames(fed.schema, train.x[names], test.x[names])
    p = tree_params(settings, fed.schema, names)
    base_score = float(np.clip(train.y.mean(), 1e-6, 1 - 1e-6))
    params = xgboost_params(p, settings.max_bins, base_score, threads, settings.seed)
    started = time.perf_counter()
    dtrain = xgb.DMatrix(x_train, label=train.y, enable_categorical=True, missing=np.nan)
    booster = xgb.train(params, dtrain, p.n_trees)
    seconds = time.perf_counter() - started
    dtest = xgb.DMatrix(x_test, enable_categorical=True, missing=np.nan)
    return booster.predict(dtest), seconds


def centralized(fed: FederatedData, bins: TreeBins, settings: RunSettings) -> Centralized:
    pd_xgb, _ = xgboost_centralized(fed, settings, bins.names)
    test = fed.pooled_test()
    out = Centralized(**risk_metrics(test.y, pd_xgb).model_dump())
    pooled = fed.pooled_train()
    layout = bins.layout()
    twin = boost.train(
        bins.codes(pooled.x), pooled.y, layout, tree_params(settings, fed.schema, bins.names)
    )
    out.same_bins_auc = risk_metrics(test.y, twin.predict_pd(bins.codes(test.x))).auc
    return out


def local_only(fed: FederatedData, bins: TreeBins, settings: RunSettings) -> LocalOnly:
    test = fed.pooled_test()
    test_codes = bins.codes(test.x)
    layout = bins.layout()
    params = tree_params(settings, fed.schema, bins.names)
    per: dict[str, LocalOnlyInstitution] = {}
    for inst, data in fed.institutions.items():
        own = boost.train(bins.codes(data.train.x), data.train.y, layout, params)
        mine = risk_metrics(data.test.y, own.predict_pd(bins.codes(data.test.x)))
        pooled = risk_metrics(test.y, own.predict_pd(test_codes))
        per[inst] = LocalOnlyInstitution(
            auc_own=mine.auc, auc_pooled=pooled.auc, ks_pooled=pooled.ks, brier_pooled=pooled.brier
        )

    return local_summary(per)


def both(
    fed: FederatedData, bins: TreeBins, settings: RunSettings
) -> tuple[Centralized, LocalOnly]:
    return centralized(fed, bins, settings), local_only(fed, bins, settings)
