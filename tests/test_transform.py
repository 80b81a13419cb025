"""The agreed preprocessing has one definition per feature (models/preprocessing.py) applied two
ways: value by value for one applicant (the service's single decisions) and column by column
(batches, training). Both give the same matrix, for any spec and any values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.models.preprocessing import (
    MISSING,
    OTHER,
    CategoricalFeature,
    NumericFeature,
    PreprocessingSpec,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def numeric(draw: st.DrawFn, name: str) -> NumericFeature:
    impute = draw(st.booleans())
    special = draw(st.lists(st.sampled_from([96.0, 98.0, -1.0, 0.0]), unique=True, max_size=3))
    return NumericFeature(
        name=name,
        transform=draw(st.sampled_from(["none", "log1p"])),
        mean=draw(finite),
        std=draw(st.floats(1e-3, 1e4)),
        impute=impute,
        missing_rate=draw(st.none() | st.floats(0, 1)) if impute else None,
        special=special,
        special_rates=draw(
            st.none() | st.lists(st.floats(0, 1), min_size=len(special), max_size=len(special))
        ),
    )


@st.composite
def categorical(draw: st.DrawFn, name: str) -> CategoricalFeature:
    categories = sorted(draw(st.sets(st.text("abc0123", min_size=1, max_size=3), max_size=6)))
    impute = draw(st.booleans())
    levels = len(categories) + 1 + impute
    frequencies = draw(st.none() | st.lists(st.floats(0, 1), min_size=levels, max_size=levels))
    return CategoricalFeature(
        name=name, categories=categories, impute=impute, frequencies=frequencies
    )


@st.composite
def specs(draw: st.DrawFn) -> PreprocessingSpec:
    kinds = draw(st.lists(st.sampled_from([numeric, categorical]), min_size=1, max_size=6))
    return PreprocessingSpec(
        features=[draw(kind(f"f{k}")) for k, kind in enumerate(kinds)],
        clip=draw(st.sampled_from([5.0, 3.0, 1e9])),
    )


def _value(draw: st.DrawFn, feature: NumericFeature | CategoricalFeature) -> Any:
    missing = st.sampled_from([None, math.nan])
    if isinstance(feature, NumericFeature):
        codes = st.sampled_from(feature.special) if feature.special else st.nothing()
        integer = st.integers(-(10**6), 10**6)
        return draw(missing | codes | finite | integer | st.just(0.0) | st.just(-0.0))
    known = st.sampled_from(feature.categories) if feature.categories else st.nothing()
    unseen = st.text("abcxyz0123", max_size=4) | st.sampled_from([OTHER, MISSING])
    return draw(missing | known | unseen)


@st.composite
def batches(draw: st.DrawFn) -> tuple[PreprocessingSpec, list[dict[str, Any]]]:
    spec = draw(specs())
    n = draw(st.integers(1, 40))
    rows = [{f.name: _value(draw, f) for f in spec.features} for _ in range(n)]
    return spec, rows


def _refused(spec: PreprocessingSpec, rows: list[dict[str, Any]]) -> bool:
    """Some value is missing where the spec does not impute."""
    return any(
        not f.impute and (r[f.name] is None or r[f.name] != r[f.name])
        for f in spec.features
        for r in rows
    )


@settings(max_examples=300, deadline=None)
@given(batches())
def test_value_by_value_equals_column_by_column(
    batch: tuple[PreprocessingSpec, list[dict[str, Any]]],
) -> None:
    spec, rows = batch
    columns = {f.name: [r[f.name] for r in rows] for f in spec.features}
    if _refused(spec, rows):
        for path in (
            lambda: [spec.transform_record(r) for r in rows],
            lambda: spec.transform_columns(columns),
        ):
            with pytest.raises(ValueError, match="has missing values and no imputation"):
                path()
        return
    one = np.array([spec.transform_record(r) for r in rows], dtype=np.float32)
    many = spec.transform_columns(columns)
    assert one.shape == many.shape == (len(rows), spec.n_outputs)
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(spec.transform_rows(rows), many)
    frame = pd.DataFrame(
        {
            f.name: pd.Series(columns[f.name], dtype="float64" if f.kind == "numeric" else object)
            for f in spec.features
        }
    )
    np.testing.assert_array_equal(spec.transform(frame), many)


def test_an_encoding_is_what_the_spec_says() -> None:
    """Fixed values through both paths: the standardised numeric, the indicator, the level."""
    spec = PreprocessingSpec(
        features=[
            NumericFeature(name="amount", transform="log1p", mean=1.0, std=2.0, impute=True),
            CategoricalFeature(name="sector", categories=["a", "b"]),
        ],
        clip=5.0,
    )
    rows = [{"amount": math.e - 1, "sector": "b"}, {"amount": None, "sector": "zz"}]
    expected = [[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]]
    for got in ([spec.transform_record(r) for r in rows], spec.transform_rows(rows * 20)[:2]):
        np.testing.assert_allclose(got, expected, atol=1e-7)


def test_a_special_code_is_the_mean_plus_its_own_indicator() -> None:
    """96 and 98 are codes: the value column reads them as the mean (0), never as a large
    count, and each sets only its own indicator."""
    spec = PreprocessingSpec(
        features=[NumericFeature(name="dq", mean=1.0, std=2.0, impute=True, special=[96, 98])],
        clip=5.0,
    )
    assert spec.output_names == ["dq", "dq__missing", "dq__special=96", "dq__special=98"]
    rows = [{"dq": 3.0}, {"dq": 96}, {"dq": 98.0}, {"dq": None}]
    expected = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    for got in ([spec.transform_record(r) for r in rows], spec.transform_rows(rows * 20)[:4]):
        np.testing.assert_allclose(got, expected, atol=1e-7)
