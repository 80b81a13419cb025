"""The references a gradient-boosted-trees federation is judged against (simulation only: they
pool rows).

- centralized: XGBoost (`tree_method="hist"`, the field's reference) on the pooled training
  rows, with the run's trees, depth, learning rate, lambda, gamma, min child weight and
  monotone constraints, on exactly the federation's bins: it reads their codes (the missing
  code as NaN) with `max_bin` above every feature's count of codes, so each code is a bin of
  its own and its splits range over the same thresholds as the federation's (without special
  values it grows the same trees; it reads a special value's bin as a value above the regular
  ones, where the federation gives it a side of its own); categorical features are
  categorical to it too (`feature_types` "c": its partition splits, which the engine makes
  the same way).
  `same_bins_auc`: this project's engine on the same pooled rows and bins, the ensemble the
  federated run must equal (lossless).
- local-only: each institution's own trees (this project's engine, the federation's bins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from jointcredit.data.frames import FederatedData
from jointcredit.federation.metrics import Centralized, LocalOnly, LocalOnlyInstitution
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.learners.gbdt import tree_params
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.trees import BinLayout, TreeParams, boost
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.categorical import MAX_CAT_THRESHOLD, MAX_CAT_TO_ONEHOT
from jointcredit.simulations.baselines import local_summary

if TYPE_CHECKING:
    import xgboost as xgb


def xgboost_inputs(codes: np.ndarray, layout: BinLayout) -> np.ndarray:
    """Bin codes as XGBoost reads them: floats, each feature's missing code as NaN."""
    x = codes.astype(np.float64)
    for j, m in enumerate(layout.missing):
        x[codes[:, j] == m, j] = np.nan
    return x


def xgboost_matrix(
    x: np.ndarray, layout: BinLayout, label: np.ndarray | None = None
) -> xgb.DMatrix:
    """`xgboost_inputs` as a DMatrix, categorical features declared categorical."""
    import xgboost as xgb

    types = ["c" if layout.is_categorical(j) else "q" for j in range(layout.n_features)]
    return xgb.DMatrix(x, label=label, missing=np.nan, feature_types=types, enable_categorical=True)


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
        # XGBoost's defaults, stated: the engine's categorical splits follow them.
        "max_cat_to_onehot": MAX_CAT_TO_ONEHOT,
        "max_cat_threshold": MAX_CAT_THRESHOLD,
    }
    if p.monotone:
        params["monotone_constraints"] = "(" + ",".join(map(str, p.monotone)) + ")"
    return params


def xgboost_centralized(
    fed: FederatedData, settings: RunSettings, bins: BinningSpec, threads: int = 1
) -> tuple[np.ndarray, float]:
    """XGBoost's PD on the pooled test split, on the federation's bins, and its training
    seconds (binning the rows is not counted: the federation's codes are made once too)."""
    import time

    import xgboost as xgb

    train, test = fed.pooled_train(), fed.pooled_test()
    layout = bin_layout(bins)
    p = tree_params(settings, fed.schema, bins.names)
    base_score = float(np.clip(train.y.mean(), 1e-6, 1 - 1e-6))
    params = xgboost_params(p, max(layout.n_bins), base_score, threads, settings.seed)
    x_train = xgboost_inputs(bins.codes(train.x), layout)
    x_test = xgboost_inputs(bins.codes(test.x), layout)
    started = time.perf_counter()
    dtrain = xgboost_matrix(x_train, layout, np.asarray(train.y))
    booster = xgb.train(params, dtrain, p.n_trees)
    seconds = time.perf_counter() - started
    return booster.predict(xgboost_matrix(x_test, layout)), seconds


def centralized(fed: FederatedData, bins: BinningSpec, settings: RunSettings) -> Centralized:
    pd_xgb, _ = xgboost_centralized(fed, settings, bins)
    test = fed.pooled_test()
    out = Centralized(**risk_metrics(test.y, pd_xgb).model_dump())
    pooled = fed.pooled_train()
    layout = bin_layout(bins)
    twin = boost.train(
        bins.codes(pooled.x), pooled.y, layout, tree_params(settings, fed.schema, bins.names)
    )
    out.same_bins_auc = risk_metrics(test.y, twin.predict_pd(bins.codes(test.x))).auc
    return out


def local_only(fed: FederatedData, bins: BinningSpec, settings: RunSettings) -> LocalOnly:
    test = fed.pooled_test()
    test_codes = bins.codes(test.x)
    layout = bin_layout(bins)
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
    fed: FederatedData, bins: BinningSpec, settings: RunSettings
) -> tuple[Centralized, LocalOnly]:
    return centralized(fed, bins, settings), local_only(fed, bins, settings)
