"""The membership-inference audit of a simulation's final model (`privacy.mia_*` in metrics).

Members are training rows of the participating institutions, non-members their test rows
(the same population, never trained on), equally many of each. Under `split = time` the test
rows are later applicants, not that population, so `simulate` runs no audit. Like the
baselines, it pools rows, so it exists only in simulations: it measures what an outsider
holding the released model could learn, which is what a privacy setting is meant to limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from jointcredit.data.frames import FederatedData
from jointcredit.federation.metrics import MembershipAudit
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.learners.gbdt import tree_params
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.training import TrainConfig, predict_pd, train
from jointcredit.models.trees import boost
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.privacy.membership import lira_offline, loss_threshold

MAX_ROWS_PER_SIDE = 10_000  # members and non-members each; bounds the audit's cost
REFERENCE_MODELS = 8


@dataclass(frozen=True)
class Audit:
    mia_auc: float | None
    mia_tpr_at_1pct_fpr: float | None
    mia: MembershipAudit  # both attacks in full, and how the headline was chosen
    seconds: float


def membership_audit(
    fed: FederatedData,
    spec: PreprocessingSpec,
    model: torch.nn.Module,
    settings: RunSettings,
    *,
    references: int = REFERENCE_MODELS,
    bins: BinningSpec | None = None,
) -> Audit:
    """`bins`: a tree ensemble's (its inputs are their codes, its references trees grown by
    the central engine with the run's parameters)."""
    started = time.monotonic()
    rng = np.random.default_rng(settings.seed + 17)
    members, nonmembers = fed.pooled_train(), fed.pooled_test()
    n = min(len(members.y), len(nonmembers.y), MAX_ROWS_PER_SIDE)
    mi = rng.choice(len(members.y), n, replace=False)
    ni = rng.choice(len(nonmembers.y), n, replace=False)
    encode = spec.transform if bins is None else bins.codes
    x = np.concatenate([encode(members.x.iloc[mi]), encode(nonmembers.x.iloc[ni])])
    y = np.concatenate([members.y[mi], nonmembers.y[ni]])
    is_member = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    pd_target = predict_pd(model, x)
    loss = loss_threshold(
        pd_target[is_member], y[is_member], pd_target[~is_member], y[~is_member], seed=settings.seed
    )
    arch = architecture(settings.model, spec.n_outputs)
    seeds = iter(range(settings.seed * 31 + 1, settings.seed * 31 + 1 + references))

    def reference(inside: np.ndarray) -> np.ndarray:
        if bins is not None:  # the same trees, grown centrally on its half
            params = tree_params(settings, fed.schema, bins.names)
            ens = boost.train(x[inside], y[inside].astype(np.float64), bin_layout(bins), params)
            return ens.predict_pd(x)
        # Same architecture and optimiser, trained centrally on its half: one pass per round.
        seed = next(seeds)
        ref = build_model(arch, seed=seed)
        for r in range(1, settings.rounds + 1):
            cfg = TrainConfig.from_settings(settings, seed=seed + r, server_round=r)
            train(ref, x[inside], y[inside], replace(cfg, steps=0))
        return predict_pd(ref, x)

    lira = lira_offline(
        pd_target, y, is_member, reference, references=references, seed=settings.seed
    )
    strongest = max((loss, lira), key=lambda a: a.auc)
    seconds = round(time.monotonic() - started, 3)
    return Audit(
        mia_auc=strongest.auc,
        mia_tpr_at_1pct_fpr=max(loss.tpr_at_1pct_fpr, lira.tpr_at_1pct_fpr),
        mia=MembershipAudit(
            attacks=[loss.as_dict(), lira.as_dict()],
            headline="the larger AUC and the larger TPR of the two attacks",
            members="training rows (sampled)",
            nonmembers="test rows of the same institutions (sampled), half for calibration",
            seconds=seconds,
        ),
        seconds=seconds,
    )
