"""The baselines train to convergence whatever the federated round count: a 3-round run's
local-only models are as good as scikit-learn's logistic regression on the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from jointcredit.data.catalog import load_federation
from jointcredit.data.frames import FederatedData
from jointcredit.federation.settings import RunSettings
from jointcredit.models.preprocessing import PreprocessingSpec, agree, summarize
from jointcredit.simulations import baselines


def _spec(fed: FederatedData, settings: RunSettings) -> PreprocessingSpec:
    bounds = {"max_categories": settings.max_categories, "min_count": settings.min_category_count}
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, **bounds) for d in fed.institutions.values()
    ]
    return agree(summaries, fed.schema, **bounds, standardize_indicators=True)


@pytest.fixture(scope="module")
def three_rounds() -> tuple[FederatedData, PreprocessingSpec, RunSettings]:
    settings = RunSettings.from_run_config({"rounds": 3, "institutions": 8})
    fed = load_federation(settings.data)
    return fed, _spec(fed, settings), settings


def _local_only_against_scikit_learn(
    fed: FederatedData, spec: PreprocessingSpec, settings: RunSettings
) -> list[float]:
    """Each institution's local-only AUC on its own test rows, checked against scikit-learn's
    logistic regression on the same rows and features; returns the gaps."""
    local = baselines.local_only(fed, spec, settings, spec.transform(fed.pooled_test().x))
    gaps = []
    for inst, data in fed.institutions.items():
        x_train, x_test = spec.transform(data.train.x), spec.transform(data.test.x)
        reference = LogisticRegression(max_iter=2000).fit(x_train, data.train.y)
        expected = roc_auc_score(data.test.y, reference.predict_proba(x_test)[:, 1])
        ours = local.per_institution[inst].auc_own
        assert ours is not None and ours > 0.55, (inst, ours, expected)
        assert ours > expected - 0.05, (inst, ours, expected)
        gaps.append(expected - ours)
    return gaps


def test_small_lenders_local_only_models_converge_in_a_three_round_run(byod_dir: Path) -> None:
    """300 loans a lender: as many passes as the federation has rounds (a few minibatch steps
    each) would leave a model near its random start; trained to convergence it scores like
    scikit-learn's."""
    settings = RunSettings.from_run_config({"rounds": 3, "dataset": str(byod_dir)})
    fed = load_federation(settings.data)
    _local_only_against_scikit_learn(fed, _spec(fed, settings), settings)


def test_local_only_at_three_rounds_matches_scikit_learn_on_the_same_rows(
    three_rounds: tuple[FederatedData, PreprocessingSpec, RunSettings],
) -> None:
    gaps = _local_only_against_scikit_learn(*three_rounds)
    assert float(np.mean(gaps)) < 0.02, gaps


def test_the_baselines_do_not_depend_on_the_round_count(
    three_rounds: tuple[FederatedData, PreprocessingSpec, RunSettings],
) -> None:
    fed, spec, settings = three_rounds
    x_test = spec.transform(fed.pooled_test().x)
    few = baselines.centralized(fed, spec, settings, x_test, with_optimum=False)
    many = baselines.centralized(
        fed, spec, settings.replaced(rounds=40), x_test, with_optimum=False
    )
    assert few == many
    optimum = baselines.optimum_auc(fed, spec, x_test)
    assert few.auc is not None and optimum is not None and few.auc > optimum - 0.005
