"""Model families: one registry, each family consistent with the run settings' rules."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from jointcredit.federation.choices import ModelKind
from jointcredit.federation.recipes import models as recipe_models
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import LEARNERS, architecture, build_model, learner


def test_every_model_kind_has_a_learner_and_a_recipe() -> None:
    kinds = set(typing.get_args(ModelKind))
    assert set(LEARNERS) == kinds
    assert set(recipe_models()) == kinds
    with pytest.raises(ValueError, match="no learner"):
        learner("gbdt-someday")


# Families trained by local steps on weights (trees exchange histograms instead).
WEIGHTS = sorted(k for k, family in LEARNERS.items() if family.exchange == "weights")


def test_the_hierarchical_prior_is_allowed_exactly_for_convex_learners() -> None:
    for kind, family in LEARNERS.items():
        settings = RunSettings.from_run_config({"model": kind})
        assert (settings.personalization_method == "hierarchical") == family.convex, kind


@pytest.mark.parametrize("kind", WEIGHTS)
def test_build_is_seeded_and_leaves_the_global_rng_alone(kind: str) -> None:
    import torch

    arch = architecture(kind, 5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_model(arch, seed=7), build_model(arch, seed=7)
    assert torch.rand(1) == before  # the global RNG did not move
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    c = build_model(arch, seed=8)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))
    with pytest.raises(ValueError, match="architecture given"):
        other = next(k for k in WEIGHTS if k != kind)
        learner(other).build(arch)


@pytest.mark.parametrize("kind", WEIGHTS)
def test_fit_trains_in_place_and_reports_the_loss(kind: str) -> None:
    from jointcredit.models.training import TrainConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int)
    model = build_model(architecture(kind, 5), seed=0)
    first = learner(kind).fit(model, x, y, TrainConfig(epochs=1, learning_rate=0.05))
    later = learner(kind).fit(model, x, y, TrainConfig(epochs=5, learning_rate=0.05))
    assert later < first


def test_trees_exchange_histograms_and_are_not_fitted_by_local_steps() -> None:
    from jointcredit.models.training import TrainConfig

    trees = learner("gbdt")
    assert trees.exchange == "histograms" and not trees.convex
    model = build_model(architecture("gbdt", 3))
    with pytest.raises(NotImplementedError, match="histograms"):
        trees.fit(model, np.zeros((4, 3), np.float32), np.zeros(4, int), TrainConfig())
