"""Models, score scaling, metrics and the artifact."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import ArtifactError, load_artifact, save_artifact, state_to_numpy
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import agree, summarize
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.training import TrainConfig, predict_pd, train
from jointcredit.trust import store
from jointcredit.trust.keys import load_private_key
from jointcredit.trust.keyset import create_key_set


def test_score_scale_documented_points() -> None:
    scale = ScoreScale()
    assert scale.score(0.10) == 660  # base: odds 9:1
    assert scale.score(1 / (1 + 18)) == 710  # odds doubled: +PDO
    assert scale.score(1 / (1 + 4.5)) == 610  # odds halved: -PDO
    assert scale.score(0.9999) == 350 and scale.score(1e-7) == 950  # clipped to the range
    pds = np.linspace(0.001, 0.999, 200)
    assert np.all(np.diff(scale.score(pds)) <= 0)  # riskier never scores higher
    assert scale.pd_at(660) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        ScoreScale(pdo=0)


def test_metrics_match_definitions() -> None:
    y = np.array([0, 0, 1, 1])
    m = risk_metrics(y, np.array([0.1, 0.4, 0.35, 0.8]))
    assert m.auc == pytest.approx(0.75)
    assert m.ks == pytest.approx(0.5)
    assert m.brier == pytest.approx(np.mean((np.array([0.1, 0.4, 0.35, 0.8]) - y) ** 2))
    one_class = risk_metrics(np.zeros(3, dtype=int), np.array([0.1, 0.2, 0.3]))
    assert one_class.auc is None and one_class.ks is None


def test_auc_is_scikit_learns_exactly() -> None:
    """risk_metrics takes the AUC from the ROC curve it draws for KS: the same number
    roc_auc_score computes, ties and float32 scores included."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for i in range(50):
        y = rng.integers(0, 2, 300)
        pd_ = rng.random(300).astype(np.float32 if i % 2 else np.float64)
        pd_ = np.round(pd_, 2) if i % 3 == 0 else pd_
        assert risk_metrics(y, pd_).auc == float(roc_auc_score(y, pd_))


def test_building_a_model_leaves_torchs_generator_as_it_was() -> None:
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    first = build_model(architecture("logreg", 4), seed=7).state_dict()
    assert torch.equal(torch.rand(2), expected)
    again = build_model(architecture("logreg", 4), seed=7).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, object]:
    fed = load_federation(DataConfig(dataset="sba", institutions=3))
    spec = agree(
        [
            summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
            for d in fed.institutions.values()
        ],
        fed.schema,
        max_categories=64,
        min_count=5,
    )
    pooled = fed.pooled_train()
    arch = architecture("logreg", spec.n_outputs)
    model = build_model(arch, seed=0)
    x = spec.transform(pooled.x)
    before = risk_metrics(
        fed.pooled_test().y, predict_pd(model, spec.transform(fed.pooled_test().x))
    )
    train(model, x, pooled.y, TrainConfig(epochs=3, learning_rate=0.01, seed=0))
    out = tmp_path_factory.mktemp("art") / "model"
    trust = create_key_set(out.parent / "keys", fed.ids, federation="test")
    save_artifact(
        out,
        stage="final",
        state=state_to_numpy(model),
        spec=spec,
        architecture=arch,
        schema=fed.schema,
        institutions=fed.ids,
        training={},
        metrics={},
        created_at="2026-11-29T00:00:00+00:00",
        signer=load_private_key(out.parent / "keys" / "coordinator.key"),
        trust=trust,
        provenance={"round": 3},
    )
    store.save_store(out.parent / "trust.json", trust)
    expected = predict_pd(model, spec.transform(fed.pooled_test().x))
    after = risk_metrics(fed.pooled_test().y, expected)
    assert after.auc is not None and before.auc is not None
    assert after.auc > before.auc + 0.1 and after.auc > 0.72  # it learned something
    return out, expected, fed


def test_artifact_round_trip_scores_identically(trained: tuple[Path, np.ndarray, object]) -> None:
    out, expected, fed = trained
    loaded = load_artifact(out, store.load_store(out.parent / "trust.json"))
    assert loaded.verified.manifest["round"] == 3
    np.testing.assert_allclose(loaded.predict_pd(fed.pooled_test().x), expected, rtol=1e-6)  # type: ignore[attr-defined]
    scores = loaded.score(fed.pooled_test().x)  # type: ignore[attr-defined]
    assert scores.min() >= 350 and scores.max() <= 950


def test_artifact_detects_changed_weights(
    trained: tuple[Path, np.ndarray, object], tmp_path: Path
) -> None:
    out, _, _ = trained
    copy = tmp_path / "model"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    trust = store.load_store(out.parent / "trust.json")
    data = bytearray((copy / "weights.npz").read_bytes())
    data[-200] ^= 0x01
    (copy / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights\.npz: SHA-256 .* signed manifest"):
        load_artifact(copy, trust)
    (copy / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(copy, trust)


def test_mlp_and_fedprox_term() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    mlp = build_model(architecture("mlp", 5), seed=1)
    train(mlp, x, y, TrainConfig(epochs=30, learning_rate=0.01, seed=1))
    assert risk_metrics(y, predict_pd(mlp, x)).auc > 0.9  # finds the interaction
    # A huge proximal term keeps the weights at the anchor.
    lin = build_model(architecture("logreg", 5), seed=1)
    anchor = [p.detach().clone() for p in lin.parameters()]
    train(
        lin,
        x,
        y,
        TrainConfig(epochs=2, proximal_mu=1e4, learning_rate=0.01, seed=1),
        global_params=anchor,
    )
    drift = sum(
        float((p.detach() - a).abs().max()) for p, a in zip(lin.parameters(), anchor, strict=True)
    )
    free = build_model(architecture("logreg", 5), seed=1)
    train(free, x, y, TrainConfig(epochs=2, learning_rate=0.01, seed=1))
    free_drift = sum(
        float((p.detach() - a).abs().max()) for p, a in zip(free.parameters(), anchor, strict=True)
    )
    assert drift < free_drift / 5


def _population(rng: np.random.Generator, n: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, len(w))).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w)))).astype(int)
    return x, y


def test_personalisation_adapts_to_a_different_book_and_keeps_a_good_global() -> None:
    from jointcredit.models.personalize import personalize

    rng = np.random.default_rng(3)
    w_global, w_local = np.array([2.0, -1.0, 0.0]), np.array([0.0, -1.0, 2.0])
    glob = build_model(architecture("logreg", 3), seed=0)
    train(glob, *_population(rng, 4000, w_global), TrainConfig(epochs=5, seed=0))
    cfg = TrainConfig(epochs=20, learning_rate=0.05, seed=1)
    # A lender whose borrowers default for other reasons: personalisation must move.
    fit, val, test = (_population(rng, n, w_local) for n in (800, 200, 2000))
    chosen = personalize(glob, fit, val, cfg)
    assert chosen.mu is not None
    glob_auc = risk_metrics(test[1], predict_pd(glob, test[0])).auc
    pers_auc = risk_metrics(test[1], predict_pd(chosen.model, test[0])).auc
    assert pers_auc > glob_auc + 0.1
    # Labels that are pure noise: nothing beats the global model on validation by much, and the
    # chosen model is never worse on validation than the global one.
    noise = [(x, rng.integers(0, 2, len(y))) for x, y in (fit, val)]
    kept = personalize(glob, noise[0], noise[1], cfg)
    val_global = risk_metrics(noise[1][1], predict_pd(glob, noise[1][0])).auc
    assert kept.validation_auc is not None and kept.validation_auc >= val_global


@pytest.mark.parametrize(
    ("kind", "optimizer"), [("logreg", "adam"), ("logreg", "sgd"), ("mlp", "sgd")]
)
def test_training_candidates_together_equals_training_each_alone(kind: str, optimizer: str) -> None:
    # (Adam on the MLP is left out: exactly-zero gradients of dead ReLUs become tiny non-zero
    # ones under a different summation order, and Adam's normalisation turns those into full
    # steps, so the two runs drift apart without either being wrong.)
    from jointcredit.models.training import train_together

    rng = np.random.default_rng(5)
    x, y = _population(rng, 3000, rng.normal(size=12))
    glob = build_model(architecture(kind, 12), seed=2)  # type: ignore[arg-type]
    anchor = [p.detach().clone() for p in glob.parameters()]
    mus = (1.0, 0.1, 0.0)
    cfg = TrainConfig(epochs=2, learning_rate=0.05, seed=4, optimizer=optimizer)  # type: ignore[arg-type]
    together = [copy.deepcopy(glob) for _ in mus]
    train_together(together, x, y, cfg, mus, anchor)
    for mu, model in zip(mus, together, strict=True):
        alone = copy.deepcopy(glob)
        train(alone, x, y, replace(cfg, proximal_mu=mu), global_params=anchor)
        for a, b in zip(alone.parameters(), model.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-5), (mu, float((a - b).abs().max()))
    # Each model moved, and by how much its own pull allows.
    moved = [
        sum(float((p.detach() - q).norm()) for p, q in zip(m.parameters(), anchor, strict=True))
        for m in together
    ]
    assert 0 < moved[0] < moved[1] < moved[2]


def test_map_fit_is_the_exact_optimum() -> None:
    """Nearly no prior: sklearn's converged logistic regression; the prior's gradient balances
    the data's at the returned point."""
    from sklearn.linear_model import LogisticRegression

    from jointcredit.models.personalize import map_fit

    rng = np.random.default_rng(11)
    x, y = _population(rng, 3000, np.array([1.5, -0.5, 0.8]))
    glob = build_model(architecture("logreg", 3), seed=0)
    center = [p.detach() for p in glob.parameters()]
    free = map_fit(glob, x, y, center, [torch.full_like(c, 1e-9) for c in center])
    ref = LogisticRegression(C=1e6, tol=1e-10, max_iter=1000).fit(x, y)
    got = np.concatenate(
        [free.linear.weight.detach().numpy()[0], free.linear.bias.detach().numpy()]
    )
    want = np.concatenate([ref.coef_[0], ref.intercept_])
    assert np.abs(got - want).max() < 1e-3
    # A strong prior on the first coefficient only: it stays at the center, and the objective's
    # gradient (data + prior) vanishes at the returned point.
    strong = [torch.tensor([[1e4, 0.0, 0.0]], dtype=torch.float64), torch.zeros(1)]
    pulled = map_fit(glob, x, y, center, strong)
    assert abs(float(pulled.linear.weight[0, 0] - center[0][0, 0])) < 1e-3
    params = [p.detach().double().requires_grad_(True) for p in pulled.parameters()]
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        xt @ params[0][0] + params[1], yt
    ) + sum(
        0.5 * torch.sum(k * (p - c.double()) ** 2)
        for p, c, k in zip(params, center, strong, strict=True)
    )
    grads = torch.autograd.grad(loss, params)
    assert max(float(g.abs().max()) for g in grads) < 1e-4


def test_hierarchical_prior_pulls_where_lenders_agree_and_frees_where_they_differ() -> None:
    from jointcredit.models.personalize import map_fit, personalize_hierarchical, prior_deviation

    rng = np.random.default_rng(4)
    w_global = np.array([2.0, -1.0, 0.0])
    glob = build_model(architecture("logreg", 3), seed=0)
    train(glob, *_population(rng, 20000, w_global), TrainConfig(epochs=5, seed=0))
    # A lender like the federation deviates little; one with another book deviates on the
    # first and last coefficient.
    same = prior_deviation(glob, *_population(rng, 2000, w_global))
    other = prior_deviation(glob, *_population(rng, 2000, np.array([0.0, -1.0, 2.0])))
    assert [d.shape for d in same] == [(1, 3), (1,)] and all((d >= 0).all() for d in same)
    assert other[0][0, 0] > 10 * same[0][0, 0] and other[0][0, 2] > 10 * same[0][0, 2]
    # The others agree on coefficients 0 and 1 and differ on 2: a small lender, whose book
    # differs on 2 only, keeps the federation's 0 and 1 and its own rows decide 2.
    others_total = [np.array([[0.0, 0.0, 8.0]]), np.zeros(1)]
    x, y = _population(rng, 800, np.array([2.0, -1.0, 2.0]))
    chosen = personalize_hierarchical(glob, x, y, others_total, others=4)
    assert chosen.method == "hierarchical" and chosen.mu is None
    w = chosen.model.linear.weight.detach().numpy()[0]
    g = glob.linear.weight.detach().numpy()[0]
    center = [p.detach() for p in glob.parameters()]
    own = map_fit(glob, x, y, center, [torch.full_like(c, 1e-9) for c in center])
    free = own.linear.weight.detach().numpy()[0]
    assert abs(w[0] - g[0]) < 0.01 and abs(w[1] - g[1]) < 0.01  # prior variance at the floor
    assert abs(free[0] - g[0]) > 0.02  # (which the lender's own rows alone would not keep)
    # Coefficient 2 (prior variance 2) lands where no prior on it at all would put it.
    floor = 1 / (800 * 1e-4)
    loose = [torch.tensor([[floor, floor, 0.0]], dtype=torch.float64), torch.full((1,), floor)]
    ref = map_fit(glob, x, y, center, loose).linear.weight.detach().numpy()[0]
    assert abs(w[2] - ref[2]) < 0.02 < abs(w[2] - g[2])
    with pytest.raises(ValueError, match="do not match"):
        personalize_hierarchical(glob, x, y, [np.zeros((1, 2)), np.zeros(1)], others=4)
    with pytest.raises(ValueError, match="at least one other"):
        personalize_hierarchical(glob, x, y, others_total, others=0)
