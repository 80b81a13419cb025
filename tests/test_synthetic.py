"""Synthetic institutions: determinism, schema conformance, heterogeneity knob, ground truth."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from jointcredit.data import bureau
from jointcredit.data.schema import parse_schema
from jointcredit.data.synthetic import (
    INSTITUTION_KINDS,
    generate,
    generate_institution,
    institution_ids,
    synthetic_schema,
    true_default_probability,
)

N = 12
ROWS = 2000
SEED = 11

FEATURES = [
    "bureau_score",
    "months_since_delinquency",
    "credit_history_years",
    "monthly_income",
    "debt_to_income",
    "existing_loans",
    "spend_volatility",
    "small_txn_share",
    "id_verified",
    "network_risk",
    "industry",
    "region",
    "recent_lender_inquiries",
    "offline_activity_share",
    "revolving_utilization",
    "delinquencies_24m",
    "open_trades",
]
CATEGORICAL = {"id_verified", "industry", "region"}


@pytest.fixture(scope="module")
def iid() -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = generate(N, rows=ROWS, heterogeneity=0.0, seed=SEED)
    return frames


@pytest.fixture(scope="module")
def half() -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = generate(N, rows=ROWS, heterogeneity=0.5, seed=SEED)
    return frames


@pytest.fixture(scope="module")
def hetero() -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = generate(N, rows=ROWS, heterogeneity=1.0, seed=SEED)
    return frames


def _rates(frames: dict[str, pd.DataFrame]) -> np.ndarray:
    return np.array([f["defaulted"].mean() for f in frames.values()])


def _pooled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames.values(), ignore_index=True)


def _kind_frame(frames: dict[str, pd.DataFrame], kind: str) -> pd.DataFrame:
    # "bank" is not a prefix of another kind, so startswith is exact here.
    return pd.concat([f for i, f in frames.items() if i.startswith(f"{kind}-")])


# ---------------------------------------------------------------- ids and determinism


def test_institution_ids_cycle_kinds() -> None:
    assert institution_ids(4) == ["bank-00", "consumer-finance-01", "micro-lender-02", "bank-03"]
    wide = institution_ids(101)
    assert wide[0] == "bank-000"
    assert wide[-1] == "consumer-finance-100"
    assert len(set(wide)) == 101


def test_same_arguments_give_identical_frames() -> None:
    a = generate_institution(1, 5, rows=500, heterogeneity=0.7, seed=3)
    b = generate_institution(1, 5, rows=500, heterogeneity=0.7, seed=3)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "changed",
    [
        {"seed": 4},
        {"index": 4},
        {"heterogeneity": 0.2},
    ],
)
def test_different_arguments_give_different_frames(changed: dict[str, float]) -> None:
    args: dict[str, float] = {"index": 1, "seed": 3, "heterogeneity": 0.7}
    base = generate_institution(1, 5, rows=500, heterogeneity=0.7, seed=3)
    args.update(changed)
    other = generate_institution(
        int(args["index"]),
        5,
        rows=500,
        heterogeneity=args["heterogeneity"],
        seed=int(args["seed"]),
    )
    n = min(len(base), len(other))
    assert not np.array_equal(
        base["bureau_score"].to_numpy()[:n], other["bureau_score"].to_numpy()[:n]
    )


def test_iid_institutions_are_independent_draws(iid: dict[str, pd.DataFrame]) -> None:
    # At h = 0 the populations coincide, so only the (seed, index) stream tells banks apart.
    a, b = (iid[i]["bureau_score"].to_numpy()[:1000] for i in ("bank-00", "bank-03"))
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.15


def test_one_institution_alone_equals_it_inside_generate() -> None:
    frames = generate(5, rows=400, heterogeneity=0.6, seed=9)
    assert list(frames) == institution_ids(5)
    for i, inst in enumerate(institution_ids(5)):
        alone = generate_institution(i, 5, rows=400, heterogeneity=0.6, seed=9)
        pd.testing.assert_frame_equal(alone, frames[inst])


# ---------------------------------------------------------------- schema and values


def test_schema_shape_and_toml_round_trip() -> None:
    schema = synthetic_schema()
    assert schema.label == "defaulted"
    assert schema.positive == 1
    assert schema.id == "applicant_id"
    assert list(schema.features) == FEATURES
    for name, spec in schema.features.items():
        assert spec.type == ("categorical" if name in CATEGORICAL else "numeric"), name
    imputed = {"months_since_delinquency", "monthly_income"}
    assert {n for n, s in schema.features.items() if s.missing == "impute"} == imputed
    assert schema.time == "application_month"
    assert schema.features["delinquencies_24m"].special == (96.0, 98.0)
    assert schema.features["monthly_income"].transform == "log1p"
    assert parse_schema(tomllib.loads(schema.to_toml())) == schema


def test_frames_hold_every_schema_column_with_sane_values(
    hetero: dict[str, pd.DataFrame],
) -> None:
    schema = synthetic_schema()
    for inst, f in hetero.items():
        assert list(f.columns) == [
            "applicant_id", "application_month", *schema.features, "sex", "age_band",
            "defaulted"
        ], inst  # fmt: skip
        assert f["applicant_id"].is_unique
        assert f["applicant_id"].str.startswith(f"{inst}-").all()
        for name, spec in schema.features.items():
            col = f[name]
            if spec.type == "numeric":
                assert pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
                assert np.isfinite(col.dropna().to_numpy()).all(), name
            else:
                assert col.map(type).eq(str).all(), name
            if spec.missing == "error":
                assert col.notna().all(), name
        assert set(f["defaulted"].unique()) <= {0, 1}
        assert f["defaulted"].dtype == np.int64

    f = _pooled(hetero)
    assert f["bureau_score"].between(300, 850).all()
    assert (f["bureau_score"] == f["bureau_score"].round()).all()
    for share in ("small_txn_share", "network_risk", "offline_activity_share"):
        assert f[share].between(0.0, 1.0).all(), share
    for count in ("existing_loans", "recent_lender_inquiries"):
        assert (f[count] >= 0).all() and (f[count] == f[count].round()).all(), count
    assert (f["monthly_income"].dropna() > 0).all()
    assert f["application_month"].between(1, 36).all()
    assert (f["credit_history_years"] > 0).all()
    assert (f["debt_to_income"] >= 0).all()
    assert (f["spend_volatility"] > 0).all()
    # Missing only when never delinquent: some of each, and observed values are months >= 1.
    msd = f["months_since_delinquency"]
    assert 0.2 < msd.isna().mean() < 0.9
    assert (msd.dropna() >= 1).all()
    assert set(f["id_verified"]) == {"yes", "no"}
    assert f["industry"].nunique() == 8
    assert {"retail", "agriculture", "education", "professional-services"} <= set(f["industry"])
    assert f["region"].nunique() == 6


def test_row_counts_vary_by_kind_and_respect_the_floor(iid: dict[str, pd.DataFrame]) -> None:
    sizes = {
        k: np.mean([len(f) for i, f in iid.items() if i.startswith(f"{k}-")])
        for k in INSTITUTION_KINDS
    }
    assert sizes["bank"] > sizes["consumer-finance"] > sizes["micro-lender"]
    assert 0.7 * ROWS < np.mean([len(f) for f in iid.values()]) < 1.3 * ROWS
    small = generate(6, rows=200, heterogeneity=0.3, seed=1)
    assert all(len(f) >= 200 for f in small.values())
    assert min(len(f) for f in small.values()) == 200


# ---------------------------------------------------------------- labels and heterogeneity


@pytest.mark.parametrize("which", ["iid", "half", "hetero"])
def test_default_rates_are_in_a_sane_band(which: str, request: pytest.FixtureRequest) -> None:
    frames: dict[str, pd.DataFrame] = request.getfixturevalue(which)
    assert 0.10 <= _pooled(frames)["defaulted"].mean() <= 0.20
    rates = _rates(frames)
    assert (rates > 0.02).all() and (rates < 0.6).all()


def test_iid_institutions_look_alike(iid: dict[str, pd.DataFrame]) -> None:
    # Only sampling noise: sd of a ~14% rate over >=1200 rows is about 0.01.
    assert _rates(iid).std() < 0.015
    assert np.std([f["bureau_score"].mean() for f in iid.values()]) < 5.0
    shares = np.array(
        [f["region"].value_counts(normalize=True).sort_index().to_numpy() for f in iid.values()]
    )
    assert (shares.max(axis=0) - shares.min(axis=0)).max() < 0.08


def test_heterogeneity_spreads_institutions_apart(
    iid: dict[str, pd.DataFrame],
    half: dict[str, pd.DataFrame],
    hetero: dict[str, pd.DataFrame],
) -> None:
    spread = [_rates(frames).std() for frames in (iid, half, hetero)]
    assert spread[0] < spread[1] < spread[2]
    assert spread[2] > 0.05
    assert spread[2] > 4 * spread[0]
    score_spread = np.std([f["bureau_score"].mean() for f in hetero.values()])
    assert score_spread > 10.0
    # Region mixes are a Dirichlet draw per institution: at h = 1 some lender is concentrated
    # in one region (the shared mix tops out at 25%).
    top_region_share = max(f["region"].value_counts(normalize=True).max() for f in hetero.values())
    assert top_region_share > 0.5


def test_kinds_differ_the_documented_way_at_full_heterogeneity(
    hetero: dict[str, pd.DataFrame],
) -> None:
    bank, cf, micro = (_kind_frame(hetero, k) for k in INSTITUTION_KINDS)
    assert bank["bureau_score"].mean() > cf["bureau_score"].mean() + 20
    assert cf["recent_lender_inquiries"].mean() > 1.5 * bank["recent_lender_inquiries"].mean()
    assert cf["small_txn_share"].mean() > bank["small_txn_share"].mean() + 0.1
    assert micro["offline_activity_share"].mean() > bank["offline_activity_share"].mean() + 0.2
    assert (micro["industry"] == "agriculture").mean() > 2 * (
        bank["industry"] == "agriculture"
    ).mean()
    assert bank["monthly_income"].median() > 1.3 * micro["monthly_income"].median()
    assert bank["credit_history_years"].mean() > cf["credit_history_years"].mean() + 2
    assert bank["defaulted"].mean() < cf["defaulted"].mean()
    assert bank["defaulted"].mean() < micro["defaulted"].mean()


# ---------------------------------------------------------------- ground truth


def test_true_pd_separates_labels_and_is_calibrated(hetero: dict[str, pd.DataFrame]) -> None:
    f = _pooled(hetero)
    pd_true = true_default_probability(f)
    assert pd_true.shape == (len(f),)
    assert ((pd_true > 0) & (pd_true < 1)).all()
    assert roc_auc_score(f["defaulted"], pd_true) > 0.8
    # Labels are Bernoulli draws from this PD: the averages must agree.
    assert abs(pd_true.mean() - f["defaulted"].mean()) < 0.01
    for frame in hetero.values():
        assert abs(true_default_probability(frame).mean() - frame["defaulted"].mean()) < 0.04


def test_true_pd_ignores_label_and_id_columns(iid: dict[str, pd.DataFrame]) -> None:
    f = next(iter(iid.values()))
    features = f[FEATURES].iloc[::-1]
    np.testing.assert_allclose(
        true_default_probability(features), true_default_probability(f)[::-1]
    )


@pytest.mark.parametrize(
    ("column", "change", "direction"),
    [
        ("bureau_score", 40, -1),
        ("debt_to_income", 0.2, +1),
        ("recent_lender_inquiries", 2, +1),
        ("network_risk", 0.2, +1),
        ("monthly_income", 2000, -1),
        ("credit_history_years", 3, -1),
        ("offline_activity_share", 0.2, +1),
        ("spend_volatility", 0.2, +1),
    ],
)
def test_true_pd_has_lender_signs(
    iid: dict[str, pd.DataFrame], column: str, change: float, direction: int
) -> None:
    f = next(iter(iid.values()))
    # Where the income is missing the truth has no income or debt-ratio term (data/bureau.py).
    f = f[f["monthly_income"].notna()].copy()
    before = true_default_probability(f)
    f[column] = f[column] + change
    after = true_default_probability(f)
    assert (direction * (after - before) >= 0).all()
    assert (direction * (after - before) > 0).mean() > 0.99


def test_true_pd_categorical_and_delinquency_effects(iid: dict[str, pd.DataFrame]) -> None:
    f = next(iter(iid.values())).copy()
    yes, no = f.assign(id_verified="yes"), f.assign(id_verified="no")
    assert (true_default_probability(no) > true_default_probability(yes)).all()
    never = f.assign(months_since_delinquency=np.nan)
    recent = f.assign(months_since_delinquency=2.0)
    old = f.assign(months_since_delinquency=60.0)
    p_never, p_old, p_recent = (true_default_probability(x) for x in (never, old, recent))
    assert (p_never < p_old).all() and (p_old < p_recent).all()
    edu = true_default_probability(f.assign(industry="education"))
    hosp = true_default_probability(f.assign(industry="hospitality"))
    assert (hosp > edu).all()


def test_true_pd_rejects_bad_frames(iid: dict[str, pd.DataFrame]) -> None:
    f = next(iter(iid.values()))
    with pytest.raises(ValueError, match="network_risk"):
        true_default_probability(f.drop(columns=["network_risk"]))
    with pytest.raises(ValueError, match="mining"):
        true_default_probability(f.assign(industry="mining"))


# ---------------------------------------------------------------- validation and speed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_institutions": 0}, "n_institutions"),
        ({"rows": 199}, "rows"),
        ({"heterogeneity": -0.1}, "heterogeneity"),
        ({"heterogeneity": 1.01}, "heterogeneity"),
        ({"heterogeneity": math.nan}, "heterogeneity"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"n_institutions": 3, "rows": 300, "heterogeneity": 0.5, "seed": 0}
    args.update(kwargs)
    n, rows, h, seed = (args[k] for k in ("n_institutions", "rows", "heterogeneity", "seed"))
    with pytest.raises(ValueError, match=message):
        generate(int(n), rows=int(rows), heterogeneity=h, seed=int(seed))
    with pytest.raises(ValueError, match=message):
        generate_institution(0, int(n), rows=int(rows), heterogeneity=h, seed=int(seed))


def test_bad_index_and_ids_raise() -> None:
    with pytest.raises(ValueError, match="index"):
        generate_institution(3, 3, rows=300, heterogeneity=0.5, seed=0)
    with pytest.raises(ValueError, match="index"):
        generate_institution(-1, 3, rows=300, heterogeneity=0.5, seed=0)
    with pytest.raises(ValueError, match="n_institutions"):
        institution_ids(0)


# ---------------------------------------------------------------- bureau-style columns


def _rate(f: pd.DataFrame, mask: pd.Series) -> float:
    return float(f.loc[mask, "defaulted"].mean())


def test_revolving_utilisation_is_heavy_tailed_and_acts_non_monotonically(
    half: dict[str, pd.DataFrame],
) -> None:
    f = _pooled(half)
    u = f["revolving_utilization"]
    assert (u >= 0).all() and u.max() > 1000  # a few token limits: ratios in the thousands
    assert 0.005 < (u > 10).mean() < 0.03 and 0.05 < (u == 0).mean() < 0.12
    assert u.quantile(0.9) < 1.3  # the bulk stays where a ratio belongs
    low, high = _rate(f, (u > 0) & (u <= 0.25)), _rate(f, (u > 0.75) & (u <= 1.3))
    # Inactive revolvers are riskier than light users; token limits far safer than maxed out.
    assert _rate(f, u == 0) > 2 * low and high > 5 * low and _rate(f, u > 10) < high / 2


def test_delinquency_counts_carry_the_declared_codes(half: dict[str, pd.DataFrame]) -> None:
    f = _pooled(half)
    spec = synthetic_schema().features["delinquencies_24m"]
    d = f["delinquencies_24m"]
    assert set(spec.special) == {96.0, 98.0} and spec.max == 95
    assert 0.02 < (d == 96).mean() < 0.1 and 0.01 < (d == 98).mean() < 0.06
    counts = d[~d.isin(spec.special)]
    assert counts.max() <= 95 and (counts == counts.round()).all()
    assert _rate(f, d == 96) > _rate(f, d == 0)  # no file is riskier than a clean one


def test_missing_income_explodes_the_debt_ratio(hetero: dict[str, pd.DataFrame]) -> None:
    f = _pooled(hetero)
    missing = f["monthly_income"].isna()
    assert 0.05 < missing.mean() < 0.25
    dti = f["debt_to_income"]
    assert dti[~missing].max() <= 2.0 and dti[missing].median() > 100  # payment over a $1 floor
    micro, bank = _kind_frame(hetero, "micro-lender"), _kind_frame(hetero, "bank")
    assert micro["monthly_income"].isna().mean() > 2 * bank["monthly_income"].isna().mean()


def test_open_trades_act_u_shaped(half: dict[str, pd.DataFrame]) -> None:
    f = _pooled(half)
    t = f["open_trades"]
    middle = _rate(f, t.between(5, 9))
    assert _rate(f, t == 0) > 1.5 * middle and _rate(f, t >= 18) > 1.15 * middle


def test_the_documented_bureau_terms_are_the_ground_truth() -> None:
    u = np.array([0.0, 0.1, 0.25, 0.75, 1.25, 3.0, 500.0])
    d = np.array([0.0, 1.0, 4.0, 9.0, 96.0, 98.0, 0.0])
    t = np.array([0.0, 3.0, 10.0, 25.0, 40.0, 5.0, 5.0])
    expected = (
        np.array([0.4, 0.0, 0.0, 2.0, 4.0, 4.0, 0.3])
        + np.array([0.0, 0.35, 1.4, 1.4, 1.1, 0.3, 0.0])
        + np.array([1.05, 0.0, 0.0, 1.8, 1.8, 0.0, 0.0])
    )
    np.testing.assert_allclose(bureau.logit(u, d, t), expected)


def test_the_labels_are_drawn_from_the_documented_probability() -> None:
    """Recover the ground truth from the labels alone: regressed on the documented logit, the
    labels give it back with slope 1 and intercept 0 (a wrong or missing term would bend it)."""
    f = _pooled(generate(20, rows=3000, heterogeneity=0.5, seed=5))
    p = true_default_probability(f)
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(logit, f["defaulted"])
    assert fit.coef_[0, 0] == pytest.approx(1.0, abs=0.04)
    assert fit.intercept_[0] == pytest.approx(0.0, abs=0.06)
    # And each bureau column matters as documented: dropping its term mis-ranks the labels.
    for column, neutral in (("revolving_utilization", 0.2), ("delinquencies_24m", 0.0)):
        blind = true_default_probability(f.assign(**{column: neutral}))
        assert roc_auc_score(f["defaulted"], blind) < roc_auc_score(f["defaulted"], p) - 0.002
