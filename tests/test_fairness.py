"""Fairness across protected attributes: the schema keeps them out of the features, the figures
from summed counts equal fairlearn / scikit-learn on rows, a federation's sum equals the
pooled rows' counts, and the synthetic data's known disparity is what is measured."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equal_opportunity_difference
from sklearn.metrics import roc_auc_score

from jointcredit.data import synthetic
from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import parse_schema
from jointcredit.federation.fairness import Cutoffs
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.fairness import (
    GroupLayout,
    centralized,
    count_vector,
    fairness,
    group_values,
    merge_values,
    scores_of,
)

CUTOFFS = Cutoffs(approve=680, decline=600, source="test")


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    groups = pd.DataFrame(
        {"sex": rng.choice(["female", "male"], n), "band": rng.choice(["a", "b", "c"], n)}
    )
    logit = rng.normal(-2.0, 1.3, n) + 0.9 * (groups["band"] == "a").to_numpy()
    pd_ = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < pd_).astype(np.int64)
    return pd_, y, groups


# ---------------------------------------------------------------- schema


def test_a_protected_attribute_is_never_a_feature() -> None:
    raw = {"label": "y", "positive": 1, "protected": ["sex"], "features": {"sex": "categorical"}}
    with pytest.raises(DataValidationError, match="protected attribute 'sex' cannot also be"):
        parse_schema(raw)
    for column in ("y", "id"):
        with pytest.raises(DataValidationError, match="cannot be the label, the id"):
            parse_schema({**raw, "id": "id", "protected": [column], "features": {"a": "numeric"}})


def test_protected_per_feature_moves_the_column_out_of_the_features() -> None:
    schema = parse_schema(
        {
            "label": "y",
            "positive": 1,
            "protected": ["sex"],
            "features": {
                "age": {"type": "categorical", "protected": True},
                "income": {"type": "numeric", "protected": False},
            },
        }
    )
    assert schema.protected == ("sex", "age") and list(schema.features) == ["income"]
    assert parse_schema(tomllib.loads(schema.to_toml())) == schema


def test_simulate_refuses_such_a_schema_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jointcredit.cli.main import app

    data = tmp_path / "data"
    data.mkdir()
    (data / "schema.toml").write_text(
        'label = "y"\npositive = 1\nprotected = ["sex"]\n[features]\nsex = "categorical"\n'
        'income = "numeric"\n'
    )
    frame = pd.DataFrame({"y": [0, 1] * 60, "sex": ["f", "m"] * 60, "income": range(120)})
    for bank in ("bank-a", "bank-b"):
        frame.to_csv(data / f"{bank}.csv", index=False)
    result = CliRunner().invoke(
        app, ["simulate", "--dataset", str(data), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert "protected attribute 'sex' cannot also be a model feature" in " ".join(
        result.output.split()
    )


def test_a_data_file_without_a_protected_column_is_refused() -> None:
    from jointcredit.data.frames import validate_frame

    schema = parse_schema(
        {"label": "y", "positive": 1, "protected": ["sex"], "features": {"a": "numeric"}}
    )
    frame = pd.DataFrame({"y": [0, 1], "a": [1.0, 2.0]})
    with pytest.raises(DataValidationError, match=r"protected attribute column.*sex"):
        validate_frame(frame, schema, source="bank-a.csv")
    # Applicants being scored are never asked for it.
    assert validate_frame(frame, schema, source="x", with_time=False).groups is None
    split = validate_frame(frame.assign(sex=["f", None]), schema, source="bank-a.csv")
    assert split.groups is not None and split.groups["sex"].tolist() == ["f", "(missing)"]


def test_the_default_cutoffs_are_the_shipped_policy_s() -> None:
    from jointcredit.service.policy import DEFAULT_POLICY, load_policy

    policy = load_policy(DEFAULT_POLICY)
    settings = RunSettings()
    assert (settings.fairness_approve, settings.fairness_decline) == (
        policy.cutoffs.approve,
        policy.cutoffs.decline,
    )


# ---------------------------------------------------------------- the figures


def test_figures_equal_fairlearn_and_scikit_learn_on_rows() -> None:
    pd_, y, groups = _rows(6000, seed=0)
    result = centralized(pd_, y, groups, ("sex", "band"), CUTOFFS)
    scores = scores_of(pd_)
    approved, repaid = (scores >= CUTOFFS.approve).astype(int), 1 - y
    for name in ("sex", "band"):
        g = groups[name]
        assert result.demographic_parity_difference[name] == pytest.approx(
            demographic_parity_difference(repaid, approved, sensitive_features=g), abs=1e-12
        )
        assert result.equal_opportunity_difference[name] == pytest.approx(
            equal_opportunity_difference(repaid, approved, sensitive_features=g), abs=1e-12
        )
        rates = {v: approved[g == v].mean() for v in sorted(g.unique())}
        for value, rate in rates.items():
            rows = (g == value).to_numpy()
            air = result.adverse_impact_ratio[name][value]
            assert air == pytest.approx(rate / max(rates.values()), abs=1e-12)
            counts = result.groups[name][value]
            assert counts.declined == int((scores[rows] < CUTOFFS.decline).sum())
            assert counts.tp == int(((y == 1) & (approved == 0) & rows).sum())
            auc = result.auc_by_group[name][value]
            # Exact on the whole scores the histograms hold; within their resolution of the
            # raw PDs.
            assert auc == pytest.approx(roc_auc_score(y[rows], -scores[rows]), abs=1e-12)
            assert auc == pytest.approx(roc_auc_score(y[rows], pd_[rows]), abs=2e-3)
            calib = result.calibration_by_group[name][value]
            assert calib is not None
            assert calib.observed_default_rate == pytest.approx(y[rows].mean(), abs=1e-12)
            assert calib.predicted_default_rate == pytest.approx(pd_[rows].mean(), abs=5e-3)
    assert result.adverse_impact_ratio["band"]["a"] < 0.8  # the disparity _rows puts in


def test_a_federation_s_summed_counts_are_the_pooled_rows_counts() -> None:
    pd_, y, groups = _rows(3000, seed=1)
    parts = np.array_split(np.random.default_rng(2).permutation(len(y)), 4)
    protected = ("sex", "band")
    # Groups present at each institution only: one institution lacks group "c" entirely.
    parts[0] = parts[0][(groups["band"].to_numpy()[parts[0]] != "c")]
    rows = np.concatenate(parts)
    answers = [group_values(groups.iloc[p], protected) for p in parts]
    assert answers[0]["band"] == ["a", "b"]
    layout = merge_values(answers, protected)
    scores = scores_of(pd_)
    total = sum(
        count_vector(scores[p], y[p], groups.iloc[p].reset_index(drop=True), layout) for p in parts
    )
    pooled = groups.iloc[rows].reset_index(drop=True)
    assert isinstance(total, np.ndarray)
    assert np.array_equal(total, count_vector(scores[rows], y[rows], pooled, layout))
    assert fairness(total, layout, CUTOFFS) == centralized(
        pd_[rows], y[rows], pooled, protected, CUTOFFS
    )


def test_small_groups_give_nulls_with_reasons_never_a_crash() -> None:
    groups = pd.DataFrame({"g": ["x"] * 5 + ["y"] * 4})
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0])
    pd_ = np.linspace(0.01, 0.5, 9)
    layout = GroupLayout(attributes={"g": ["x", "y", "z"]})  # z: nobody at all
    result = fairness(count_vector(scores_of(pd_), y, groups, layout), layout, CUTOFFS)
    assert result.auc_by_group["g"]["x"] is None
    assert result.groups["g"]["x"].undefined["auc"] == "no defaulted applicant in this group"
    assert result.groups["g"]["x"].true_positive_rate is None
    assert result.auc_by_group["g"]["y"] is not None
    z = result.groups["g"]["z"]
    assert z.applicants == 0 and z.approval_rate is None and "approval_rate" in z.undefined
    assert result.adverse_impact_ratio["g"]["z"] is None
    assert result.calibration_by_group["g"]["z"] is None
    # One group with repaid applicants: no equal-opportunity difference to take.
    one = GroupLayout(attributes={"g": ["x"]})
    alone = fairness(count_vector(scores_of(pd_[:5]), y[:5], groups[:5], one), one, CUTOFFS)
    assert alone.equal_opportunity_difference["g"] is None
    assert alone.adverse_impact_ratio["g"]["x"] in (1.0, None)


def test_the_synthetic_disparity_is_the_documented_one() -> None:
    """Under the true PD (the oracle), at the default policy's cut-offs: sex has none, the
    youngest age band fails the 4/5 rule (docs/GOVERNANCE.md has the figures)."""
    frames = synthetic.generate(5, rows=3000, heterogeneity=0.5, seed=42)
    pooled = pd.concat(frames.values(), ignore_index=True)
    truth = synthetic.true_default_probability(pooled)
    result = centralized(
        truth,
        pooled["defaulted"].to_numpy(),
        pooled[list(synthetic.PROTECTED)],
        synthetic.PROTECTED,
        CUTOFFS,
    )
    sex = result.adverse_impact_ratio["sex"]
    assert min(v for v in sex.values() if v is not None) > 0.95
    age = result.adverse_impact_ratio["age_band"]
    assert age["50+"] == 1.0 and age["18-29"] is not None and age["18-29"] < 0.6
    assert result.demographic_parity_difference["sex"] is not None
    assert result.demographic_parity_difference["sex"] < 0.03


# ---------------------------------------------------------------- sweeps


def test_a_sweep_reports_fairness_beside_utility_and_privacy(tmp_path: Path) -> None:
    from jointcredit.simulations.sweep import RESULT_COLUMNS, _row, cells, load_grid
    from jointcredit.simulations.sweep_report import write_outputs

    grid_text = 'seeds = [1]\n[grid]\nprivacy = ["none", "secagg"]\n'
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(grid_text)
    grid = load_grid(grid_file)
    pd_, y, groups = _rows(2000, seed=3)
    fair = centralized(pd_, y, groups, ("sex", "band"), CUTOFFS)
    fixture = Path(__file__).parent / "fixtures" / "metrics-logreg-sample.json"
    metrics = RunMetrics.read(fixture)
    rows = []
    for cell, fairness_ in zip(cells(grid, tmp_path / "out"), (fair, None), strict=True):
        m = metrics.model_copy(update={"fairness": fairness_, "sweep_wall_seconds": 1.0})
        rows.append(_row(cell, m, "done"))
    assert {"min_adverse_impact_ratio", "max_equal_opportunity_difference"} <= set(RESULT_COLUMNS)
    worst = fair.worst()
    assert rows[0]["min_adverse_impact_ratio"] == worst["min_adverse_impact_ratio"]
    assert worst["min_adverse_impact_ratio"] == min(fair.adverse_impact_ratio["band"].values())
    assert rows[1]["min_adverse_impact_ratio"] is None  # no protected attribute: no figure
    out = tmp_path / "out"
    out.mkdir()
    write_outputs(rows, grid, grid_text, out, "jointcredit sweep")
    summary_md = (out / "summary.md").read_text()
    assert "min AIR" in summary_md and f"{worst['min_adverse_impact_ratio']:.3f}" in summary_md
    assert (out / "fairness.png").is_file()
    assert "![fairness.png](fairness.png)" in (out / "report.md").read_text()


def test_calibration_bands_cover_the_scale_in_50_points_the_top_score_in_the_last() -> None:
    from jointcredit.models.fairness import calibration

    n = 950 - 350 + 1
    repaid, defaulted = np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    result = calibration(repaid, defaulted)
    assert result is not None
    spans = [band.scores for band in result.bands]
    assert spans[0] == (350, 399) and spans[-1] == (900, 950) and len(spans) == 12
    assert sum(band.applicants for band in result.bands) == n
