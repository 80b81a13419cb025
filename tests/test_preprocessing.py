"""Federated preprocessing must equal the pooled statistics it replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.schema import Schema, parse_schema
from jointcredit.models.preprocessing import (
    MISSING,
    OTHER,
    CategoricalFeature,
    NumericFeature,
    agree,
    apply_transform,
    summarize,
)

UNBOUNDED = {"max_categories": 10_000, "min_count": 1}


def test_federated_statistics_equal_pooled_on_sba() -> None:
    fed = load_federation(DataConfig(dataset="sba"))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, **UNBOUNDED) for d in fed.institutions.values()
    ]
    spec = agree(summaries, fed.schema, **UNBOUNDED)
    pooled = fed.pooled_train()
    for f in spec.features:
        col = pooled.x[f.name]
        if isinstance(f, NumericFeature):
            values = apply_transform(col.dropna().to_numpy(dtype="float64"), f.transform)
            assert f.mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-9)
            assert f.std == pytest.approx(values.std(ddof=0), rel=1e-7)
        else:
            assert isinstance(f, CategoricalFeature)
            assert f.categories == sorted(col.dropna().unique().tolist())
    # And the design matrix from the agreed spec equals one built from a single pooled summary.
    pooled_spec = agree(
        [summarize(pooled.x, pooled.y, fed.schema, **UNBOUNDED)], fed.schema, **UNBOUNDED
    )
    np.testing.assert_allclose(
        spec.transform(pooled.x), pooled_spec.transform(pooled.x), rtol=1e-5, atol=1e-6
    )


SCHEMA = parse_schema(
    {
        "label": "y",
        "positive": 1,
        "features": {
            "amount": {"type": "numeric", "transform": "log1p", "missing": "impute"},
            "sector": {"type": "categorical", "missing": "impute"},
            "region": "categorical",
        },
    }
)


def _frame(
    amounts: list[float | None], sectors: list[str | None], regions: list[str]
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": pd.Series(amounts, dtype="float64"),
            "sector": pd.Series(sectors, dtype=object),
            "region": regions,
        }
    )


def test_layout_imputation_and_unknown_categories() -> None:
    a = _frame([100.0, None, 1000.0], ["retail", "retail", None], ["north", "north", "south"])
    b = _frame([10.0, 10.0, 10.0], ["farm", "retail", "retail"], ["south", "south", "south"])
    s = [summarize(f, np.array([0, 1, 0]), SCHEMA, max_categories=10, min_count=1) for f in (a, b)]
    spec = agree(s, SCHEMA, max_categories=10, min_count=1)
    assert spec.output_names == [
        "amount", "amount__missing",
        "sector=farm", "sector=retail", f"sector={OTHER}", f"sector={MISSING}",
        "region=north", "region=south", f"region={OTHER}",
    ]  # fmt: skip
    x = spec.transform(_frame([None, 50.0], [None, "mining"], ["west", "north"]))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[0], [0, 1, 0, 0, 0, 1, 0, 0, 1])  # missing -> mean + flag
    assert x[1, 1] == 0 and x[1, 4] == 1 and x[1, 6] == 1  # unseen sector -> __other__
    # Imputed value is the federated mean of the transformed amounts (5 present values).
    present = apply_transform(np.array([100.0, 1000.0, 10.0, 10.0, 10.0]), "log1p")
    assert spec.features[0].mean == pytest.approx(present.mean())


def test_rare_categories_never_leave_the_institution() -> None:
    frame = _frame([1.0] * 7, ["a"] * 5 + ["rare", "rare"], ["n"] * 7)
    summary = summarize(frame, np.zeros(7, dtype=int), SCHEMA, max_categories=10, min_count=3)
    assert summary.categorical["sector"].counts == {"a": 5}
    bounded = summarize(frame, np.zeros(7, dtype=int), SCHEMA, max_categories=1, min_count=1)
    assert list(bounded.categorical["sector"].counts) == ["a"]


def test_missing_without_imputation_is_refused() -> None:
    spec = agree(
        [
            summarize(
                _frame([1.0], ["a"], ["n"]), np.array([1]), SCHEMA, max_categories=5, min_count=1
            )
        ],
        SCHEMA,
        max_categories=5,
        min_count=1,
    )
    with pytest.raises(ValueError, match="region"):
        spec.transform(pd.DataFrame({"amount": [1.0], "sector": ["a"], "region": [None]}))


def test_spec_digest_is_stable_and_sensitive() -> None:
    s = [
        summarize(
            _frame([1.0, 2.0], ["a", "b"], ["n", "s"]),
            np.array([0, 1]),
            SCHEMA,
            max_categories=5,
            min_count=1,
        )
    ]
    one = agree(s, SCHEMA, max_categories=5, min_count=1)
    two = agree(s, SCHEMA, max_categories=5, min_count=1)
    assert one.digest() == two.digest()
    fewer = agree(s, SCHEMA, max_categories=1, min_count=1)
    assert fewer.digest() != one.digest()


def test_standardised_indicators_have_zero_mean_unit_variance() -> None:
    fed = load_federation(DataConfig(dataset="sba", institutions=5))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, **UNBOUNDED) for d in fed.institutions.values()
    ]
    spec = agree(summaries, fed.schema, **UNBOUNDED, standardize_indicators=True)
    x = spec.transform(fed.pooled_train().x)
    names = spec.output_names
    for j, name in enumerate(names):
        col = x[:, j].astype("float64")
        if "=" not in name or col.std() == 0 or abs(col).max() >= spec.clip:
            continue  # levels so rare their standardised value hits the clip are skipped
        assert abs(col.mean()) < 1e-4, name
        assert col.std() == pytest.approx(1.0, abs=1e-3), name
    plain = agree(summaries, fed.schema, **UNBOUNDED)
    assert plain.output_names == names  # same layout, only the scale differs


@pytest.mark.parametrize("standardize", [False, True])
def test_record_path_equals_the_dataframe_path(standardize: bool) -> None:
    """The service's pandas-free `transform_rows` must give exactly `transform`'s matrix,
    missing values, unseen categories and all."""
    fed = load_federation(DataConfig(dataset="sba", institutions=3))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    spec = agree(
        summaries, fed.schema, max_categories=64, min_count=5, standardize_indicators=standardize
    )
    x = fed.pooled_test().x.head(500).copy()
    x.loc[3, "sector"] = "never-seen"
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in x.to_dict(orient="records")
    ]
    assert any(r["sector"] is None for r in records)  # the sample has missing sectors
    expected = spec.transform(x)
    np.testing.assert_array_equal(spec.transform_rows(records), expected)  # the column path
    few = np.concatenate([spec.transform_rows(records[i : i + 3]) for i in range(0, 500, 3)])
    np.testing.assert_array_equal(few, expected)  # the per-record path


def test_record_path_refuses_missing_values_without_imputation() -> None:
    fed = load_federation(DataConfig(dataset="sba", institutions=3))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    spec = agree(summaries, fed.schema, max_categories=64, min_count=5)
    strict = next(f for f in spec.features if not f.impute)
    record = {
        k: (None if isinstance(v, float) and np.isnan(v) else v)
        for k, v in fed.pooled_test().x.head(1).to_dict(orient="records")[0].items()
    }
    record[strict.name] = None
    for rows in ([record], [record] * 20):  # both paths
        with pytest.raises(ValueError, match=f"{strict.name!r} has missing values"):
            spec.transform_rows(rows)


CODES = parse_schema(
    {
        "label": "y",
        "positive": 1,
        "features": {"dq": {"type": "numeric", "min": 0, "max": 95, "special": [96, 98]}},
    }
)


def test_special_codes_are_counted_apart_and_never_averaged() -> None:
    a = pd.DataFrame({"dq": [0.0, 1.0, 96.0, 2.0]})
    b = pd.DataFrame({"dq": [98.0, 3.0, 96.0, 0.0]})
    y = np.array([0, 1, 0, 1])
    summaries = [summarize(f, y, CODES, **UNBOUNDED) for f in (a, b)]
    assert [s.numeric["dq"].special for s in summaries] == [[1, 0], [1, 1]]
    spec = agree(summaries, CODES, **UNBOUNDED, standardize_indicators=True)
    (f,) = spec.features
    assert isinstance(f, NumericFeature)
    real = np.array([0.0, 1.0, 2.0, 3.0, 0.0])  # the codes are not counts
    assert (f.mean, f.std) == (pytest.approx(real.mean()), pytest.approx(real.std()))
    assert f.special == [96.0, 98.0] and f.special_rates == [2 / 8, 1 / 8]
    x = spec.transform(pd.concat([a, b], ignore_index=True)).astype("float64")
    assert spec.output_names == ["dq", "dq__special=96", "dq__special=98"]
    codes = pd.concat([a, b])["dq"].isin([96.0, 98.0]).to_numpy()
    assert (x[codes, 0] == 0.0).all()  # a code sits at the mean of the value column
    for j in (1, 2):  # each code's indicator is standardised by its federated frequency
        assert abs(x[:, j].mean()) < 1e-6 and x[:, j].std() == pytest.approx(1.0, abs=1e-6)


def test_a_model_learns_what_a_code_means_instead_of_reading_a_magnitude() -> None:
    """Risk rises with the delinquency count; 96 ("no file") is the riskiest group, 98 ("too
    new to report") among the safest. Read as magnitudes the codes would tell a linear model
    that 98 is riskier than 96 and swamp the counts; with their own indicators it learns each."""
    rng = np.random.default_rng(5)
    n = 6000
    dq = rng.poisson(1.0, n).astype("float64")
    code = rng.random(n)
    dq[code < 0.1] = 96.0
    dq[(code >= 0.1) & (code < 0.2)] = 98.0
    logit = -2.0 + 0.6 * np.minimum(dq, 6.0)
    logit = np.where(dq == 96.0, 1.5, np.where(dq == 98.0, -3.0, logit))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame({"dq": dq})
    naive_schema = parse_schema(
        {"label": "y", "positive": 1, "features": {"dq": {"type": "numeric"}}}
    )

    def auc(schema: Schema) -> float:
        spec = agree([summarize(frame, y, schema, **UNBOUNDED)], schema, **UNBOUNDED)
        x = spec.transform(frame)
        fitted = LogisticRegression(max_iter=1000).fit(x[:4000], y[:4000])
        return float(roc_auc_score(y[4000:], fitted.predict_proba(x[4000:])[:, 1]))

    truth = float(roc_auc_score(y[4000:], logit[4000:]))
    assert auc(CODES) > truth - 0.02
    assert auc(CODES) > auc(naive_schema) + 0.05
