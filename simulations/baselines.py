"""The two references a federation is judged against, on the same features and splits.

- centralized: every institution's training rows pooled (what federation tries to reach);
- local-only: each institution trains alone (what federation must beat).
Both use the federation's agreed preprocessing, model kind and optimiser, so the only
difference is which rows a model sees, and both train to convergence whatever the federated
round count: full passes over their rows at the settings' learning rate, halved whenever the
loss on a 10 % validation split of their own training rows has not improved for `PATIENCE`
passes, stopping after `HALVINGS` halvings (or `MAX_EPOCHS` passes), keeping the pass with the
lowest validation loss (early stopping: an MLP trained on pooled rows for long overfits, and
an upper bound should not be handicapped; a reference trained for only as many passes as the
federation has rounds would be). A model on agreed bins (the binned scorecard) bins the rows
it sees instead, with the same steps (`binning_from_rows`) and the agreed vocabularies: the
centralized twin bins the pooled rows (which gives the federation's bins and WOE exactly),
each local-only model its own rows. For the logistic models the converged optimum (L-BFGS on
the pooled rows) is reported too. They pool rows, which is exactly why they exist only in
simulations.
"""

from __future__ import annotations

import copy
import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from torch import nn

from jointcredit.data.catalog import load_federation
from jointcredit.data.frames import FederatedData, Split
from jointcredit.federation.metrics import Centralized, LocalOnly, LocalOnlyInstitution
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import OTHER, CategoricalBins, Classing, binning_from_rows
from jointcredit.models.binning.encoding import WoeFeature
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.scorecard import woe_preprocessing
from jointcredit.models.training import TrainConfig, predict_pd, train

VALIDATION_FRACTION = 0.1
MAX_EPOCHS = 100
PATIENCE = 2  # passes without a lower validation loss before the learning rate halves
HALVINGS = 2  # then training stops
CONVEX = ("logreg", "scorecard")  # logistic models: the converged optimum is reported too


def rebinned(
    spec: PreprocessingSpec, fed: FederatedData, split: Split, settings: RunSettings
) -> PreprocessingSpec:
    """The preprocessing a baseline trains on: the agreed one, or for a model on agreed bins
    the same binning of `split`'s rows (agreed vocabularies kept)."""
    woe = [f for f in spec.features if isinstance(f, WoeFeature)]
    if not woe:
        return spec
    vocabularies = {
        f.name: sorted(level for group in f.bins.groups for level in group if level != OTHER)
        for f in woe
        if isinstance(f.bins, CategoricalBins)
    }
    classing = Classing(fine_bins=settings.fine_bins, min_bin_share=settings.min_bin_share)
    table = binning_from_rows([(split.x, split.y)], fed.schema, vocabularies, classing)
    return woe_preprocessing(table)


def fit_alone(
    model: nn.Module, x: np.ndarray, y: np.ndarray, settings: RunSettings, seed: int
) -> nn.Module:
    """Train `model` on its own rows to convergence (module docstring); returns the pass
    with the lowest validation loss."""
    stratify = y if np.bincount(y, minlength=2).min() >= 2 else None
    fit, val = train_test_split(
        np.arange(len(y)), test_size=VALIDATION_FRACTION, random_state=seed, stratify=stratify
    )
    base = TrainConfig.from_settings(settings, seed=seed, epochs=1)

    def loss() -> float:
        return float(log_loss(y[val], predict_pd(model, x[val]), labels=[0, 1]))

    best, best_loss = copy.deepcopy(model.state_dict()), loss()
    learning_rate, stale, halvings = base.learning_rate, 0, 0
    for epoch in range(1, MAX_EPOCHS + 1):
        cfg = replace(base, learning_rate=learning_rate, seed=seed + epoch)
        train(model, x[fit], y[fit], cfg)
        current = loss()
        if current < best_loss:
            best, best_loss, stale = copy.deepcopy(model.state_dict()), current, 0
            continue
        stale += 1
        if stale < PATIENCE:
            continue
        if halvings == HALVINGS:
            break
        halvings, stale, learning_rate = halvings + 1, 0, learning_rate / 2
        model.load_state_dict(best)  # go on from the best pass, with smaller steps
    model.load_state_dict(best)
    return model


def centralized(
    fed: FederatedData,
    spec: PreprocessingSpec,
    settings: RunSettings,
    x_test: np.ndarray,
    *,
    with_optimum: bool = True,
) -> Centralized:
    pooled = fed.pooled_train()
    y_test = fed.pooled_test().y
    twin = rebinned(spec, fed, pooled, settings)
    if twin is not spec:
        spec, x_test = twin, twin.transform(fed.pooled_test().x)
    x = spec.transform(pooled.x)
    model = build_model(architecture(settings.model, spec.n_outputs), seed=settings.seed)
    best = fit_alone(model, x, pooled.y, settings, settings.seed)
    out = Centralized(**risk_metrics(y_test, predict_pd(best, x_test)).model_dump())
    if with_optimum and settings.model in CONVEX:
        out.optimum_auc = optimum_auc(fed, spec, x_test)
    return out


def optimum_auc(fed: FederatedData, spec: PreprocessingSpec, x_test: np.ndarray) -> float | None:
    """The exact optimum of the same logistic model on the same pooled features (C=1e4:
    barely regularised, only to keep L-BFGS finite on separable rare levels)."""
    pooled = fed.pooled_train()
    opt = LogisticRegression(C=1e4, max_iter=2000).fit(spec.transform(pooled.x), pooled.y)
    return risk_metrics(fed.pooled_test().y, opt.predict_proba(x_test)[:, 1]).auc


def local_only(
    fed: FederatedData, spec: PreprocessingSpec, settings: RunSettings, x_test: np.ndarray
) -> LocalOnly:
    y_test = fed.pooled_test().y
    per: dict[str, LocalOnlyInstitution] = {}
    for inst, data in fed.institutions.items():
        alone = rebinned(spec, fed, data.train, settings)
        x_pooled = x_test if alone is spec else alone.transform(fed.pooled_test().x)
        model = build_model(architecture(settings.model, alone.n_outputs), seed=settings.seed)
        seed = (settings.seed + zlib.crc32(inst.encode())) % (2**31)
        best = fit_alone(model, alone.transform(data.train.x), data.train.y, settings, seed)
        own = risk_metrics(data.test.y, predict_pd(best, alone.transform(data.test.x)))
        pooled = risk_metrics(y_test, predict_pd(best, x_pooled))
        per[inst] = LocalOnlyInstitution(
            auc_own=own.auc, auc_pooled=pooled.auc, ks_pooled=pooled.ks, brier_pooled=pooled.brier
        )
    return local_summary(per)


def local_summary(per: dict[str, LocalOnlyInstitution]) -> LocalOnly:
    """The means over institutions of their local-only models' metrics."""

    def mean(values: list[float | None]) -> float | None:
        present = [float(v) for v in values if v is not None]
        return float(np.mean(present)) if present else None

    rows = list(per.values())
    return LocalOnly(
        mean_auc=mean([r.auc_pooled for r in rows]),
        mean_ks=mean([r.ks_pooled for r in rows]),
        mean_brier=mean([r.brier_pooled for r in rows]),
        mean_own_auc=mean([r.auc_own for r in rows]),
        per_institution=per,
    )


def _centralized_job(settings: RunSettings, spec_json: str) -> Centralized:
    """Runs in a fresh process: reloads (and re-validates) the same seeded splits itself, so
    no pooled matrix is pickled across the process boundary."""
    torch.set_num_threads(1)
    fed = load_federation(settings.data)
    spec = PreprocessingSpec.model_validate_json(spec_json)
    return centralized(fed, spec, settings, spec.transform(fed.pooled_test().x), with_optimum=False)


def both(
    fed: FederatedData, spec: PreprocessingSpec, settings: RunSettings
) -> tuple[Centralized, LocalOnly]:
    """(centralized, local_only), computed side by side, one core each (the federation's
    workers have exited by now): the early-stopped centralized model in a spawned process;
    local-only and then the converged logistic optimum here, which balances the two halves."""
    spawn = multiprocessing.get_context("spawn")  # never fork a process that has run torch
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        pooled = pool.submit(_centralized_job, settings, spec.model_dump_json())
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            x_test = spec.transform(fed.pooled_test().x)
            local = local_only(fed, spec, settings, x_test)
            optimum = optimum_auc(fed, spec, x_test) if settings.model in CONVEX else None
        finally:
            torch.set_num_threads(threads)
        central = pooled.result()
        if optimum is not None:
            central.optimum_auc = optimum
        return central, local
