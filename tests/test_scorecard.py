"""The binned scorecard: WOE inputs, the points table (adding points is scoring with the model),
adverse-action reasons, and its signed artifact (binning.json, scorecard.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from test_binning import PARTS, _federated, _schema
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.models.artifact import (
    BINNING,
    SCORECARD,
    ArtifactError,
    ScoringModel,
    load_artifact,
    save_artifact,
    state_to_numpy,
)
from jointcredit.models.binning import BinningTable, bin_codes
from jointcredit.models.learners import architecture, build_model, feature_columns, learner
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.scorecard import ScoreScale, points_table, woe_preprocessing
from jointcredit.models.training import predict_pd
from jointcredit.service.loader import check_model
from jointcredit.trust import store
from jointcredit.trust.keys import load_private_key
from jointcredit.trust.keyset import create_key_set

X = __import__("pandas").concat([p[0] for p in PARTS], ignore_index=True)
Y = np.concatenate([p[1] for p in PARTS])


def _fitted() -> tuple[BinningTable, PreprocessingSpec, torch.nn.Module]:
    _, _, table = _federated(_schema("decreasing"))
    spec = woe_preprocessing(table)
    model = build_model(architecture("scorecard", spec.n_outputs), seed=0)
    opt = LogisticRegression(C=1e4, max_iter=1000).fit(spec.transform(X), Y)
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor(opt.coef_, dtype=torch.float32))  # type: ignore[union-attr]
        model.linear.bias.copy_(torch.tensor(opt.intercept_, dtype=torch.float32))  # type: ignore[union-attr]
    return table, spec, model


TABLE, SPEC, MODEL = _fitted()


def test_the_woe_input_is_each_bins_standardised_woe() -> None:
    x = SPEC.transform(X)
    assert x.shape == (len(X), 3) and SPEC.output_names == [
        "utilisation__woe",
        "age__woe",
        "sector__woe",
    ]
    codes = bin_codes(X, TABLE.bins)
    for j, f in enumerate(TABLE.features):
        woe = np.array([b.woe for b in f.bins])[codes[:, j]]
        assert x[:, j] == pytest.approx((woe - woe.mean()) / woe.std(), abs=1e-5)
    # One applicant at a time (the service) and a batch encode alike.
    records = X.head(40).astype(object).where(X.head(40).notna(), None).to_dict("records")
    one = np.array([SPEC.transform_record(r) for r in records], dtype=np.float32)
    assert (one == x[:40]).all()
    assert (SPEC.transform_rows(records) == x[:40]).all()


def test_adding_points_is_scoring_with_the_model() -> None:
    scale = ScoreScale()
    points = points_table(SPEC, state_to_numpy(MODEL), scale)
    pd_ = predict_pd(MODEL, SPEC.transform(X)).astype(np.float64)
    logit = np.log(pd_ / (1 - pd_))
    raw_model = scale.base_score + scale.pdo / np.log(2) * (-logit - np.log(scale.base_odds))
    names = [f.name for f in SPEC.features]
    codes = bin_codes(X, TABLE.bins)
    assert points.raw(codes, names) == pytest.approx(raw_model, abs=1e-3)
    # Exactly, against the same float64 arithmetic of the model's log-odds:
    w = MODEL.linear.weight.detach().double().numpy().reshape(-1)  # type: ignore[union-attr]
    b = float(MODEL.linear.bias.detach().double()[0])  # type: ignore[union-attr, index]
    exact = scale.base_score - scale.pdo / np.log(2) * (
        SPEC.transform(X).astype(np.float64) @ w + b + np.log(scale.base_odds)
    )
    assert points.raw(codes, names) == pytest.approx(exact, abs=1e-9, rel=0)
    model_scores = scale.score(1 / (1 + np.exp(-(SPEC.transform(X).astype(np.float64) @ w + b))))
    assert (points.score(codes, names) == model_scores).all()
    # The CSV carries the same numbers at full precision.
    rows = points.to_csv().splitlines()
    assert rows[0] == "feature,code,attribute,woe,points"
    assert float(rows[1].split(",")[-1]) == points.base_points
    assert len(rows) == 2 + sum(f.bins.n_bins for f in SPEC.features)  # type: ignore[union-attr]


def test_reasons_are_points_lost_against_the_best_attribute() -> None:
    kernel = learner("scorecard").kernel(MODEL, feature_columns(SPEC))
    x = SPEC.transform(X)
    pd_, contrib = kernel(x)
    assert pd_ == pytest.approx(predict_pd(MODEL, x), abs=1e-6)
    assert (contrib >= -1e-12).all()
    points = points_table(SPEC, state_to_numpy(MODEL), ScoreScale())
    factor = ScoreScale().pdo / np.log(2)
    codes = bin_codes(X, TABLE.bins)
    for j, name in enumerate(f.name for f in SPEC.features):
        table = points.lookup([name])[0]
        seen = np.array([b.goods + b.bads > 0 for b in TABLE.features[j].bins])
        lost = table[seen].max() - table[codes[:, j]]
        assert contrib[:, j] * factor == pytest.approx(lost, abs=1e-6)
        assert contrib[:, j].min() == pytest.approx(0.0, abs=1e-9)  # the best attribute


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scorecard") / "model"
    trust = create_key_set(
        out.parent / "keys", ["bank-a", "bank-b"], federation=f"test-{out.parent.name}"
    )
    schema = _schema("decreasing")
    save_artifact(
        out,
        stage="final",
        state=state_to_numpy(MODEL),
        spec=SPEC,
        architecture=architecture("scorecard", SPEC.n_outputs),
        schema=schema,
        institutions=["bank-a", "bank-b"],
        training={},
        metrics={},
        created_at="2026-12-06T00:00:00+00:00",
        signer=load_private_key(out.parent / "keys" / "coordinator.key"),
        trust=trust,
        provenance={"round": 1},
        binning=TABLE,
    )
    store.save_store(out.parent / "trust.json", trust)
    return out


def _load(directory: Path, trust_dir: Path) -> ScoringModel:
    return load_artifact(directory, store.load_store(trust_dir / "trust.json"))


def test_the_artifact_carries_the_signed_iv_and_points_tables(artifact: Path) -> None:
    model = _load(artifact, artifact.parent)
    assert model.binning == TABLE
    assert model.card.scorecard is not None
    assert (artifact / SCORECARD).read_text() == model.card.scorecard.to_csv()
    assert set(model.verified.manifest["files"]) >= {BINNING, SCORECARD}
    assert json.loads((artifact / BINNING).read_text())["features"][0]["name"] == "utilisation"
    np.testing.assert_allclose(model.predict_pd(X), predict_pd(MODEL, SPEC.transform(X)))
    check_model(model)  # the service's start-up checks accept it


def test_verify_accepts_it_and_fails_when_a_table_is_edited(artifact: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    trust = str(artifact.parent / "trust.json")
    ok = runner.invoke(app, ["verify", str(artifact), "--trust", trust])
    assert ok.exit_code == 0, ok.output
    # A bigger IV for the first feature; other base points.
    edits = {BINNING: (b'"iv":', b'"iv":9'), SCORECARD: (b"base points,,", b"base points,,9")}
    for name, (old, new) in edits.items():
        copy = tmp_path / name / "model"
        copy.mkdir(parents=True)
        for f in artifact.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        data = (copy / name).read_bytes()
        assert old in data
        (copy / name).write_bytes(data.replace(old, new, 1))
        failed = runner.invoke(app, ["verify", str(copy), "--trust", trust])
        assert failed.exit_code == 1 and name in failed.output, failed.output
        with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
            _load(copy, artifact.parent)


def test_the_binning_command_shows_the_iv_table(artifact: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    trust = str(artifact.parent / "trust.json")
    shown = runner.invoke(app, ["binning", str(artifact), "--trust", trust, "--points"])
    assert shown.exit_code == 0, shown.output
    for text in ("Information value", "utilisation", "= 98", "missing", "Points: base"):
        assert text in shown.output
    bad = runner.invoke(app, ["binning", str(artifact), "--trust", trust, "--feature", "nope"])
    assert bad.exit_code == 2 and "--feature 'nope'" in bad.output
    missing = runner.invoke(app, ["binning", str(tmp_path / "none"), "--trust", trust])
    assert missing.exit_code == 2 and "not a model directory" in missing.output
