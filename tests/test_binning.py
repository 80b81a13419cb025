"""Federated binning: the bin layout, fine classing over the agreed grid, WOE/IV on summed
counts equal to the pooled rows' (missing and special bins included), coarse classing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.data.schema import Schema
from jointcredit.models.binning import (
    OTHER,
    BinningSpec,
    CategoricalBins,
    Classing,
    NumericBins,
    add_counts,
    bin_codes,
    binning_from_rows,
    classify,
    count_bins,
    fine_bins,
    grid_histogram,
    merge_histograms,
)
from jointcredit.models.binning.grid import GridHistogram, cells, fine_edges, grid

SPECIAL = (96.0, 98.0)


def _schema(monotone: str = "none") -> Schema:
    return Schema.model_validate(
        {
            "label": "bad",
            "positive": 1,
            "features": {
                "utilisation": {
                    "type": "numeric",
                    "missing": "impute",
                    "special": SPECIAL,
                    "max": 95.0,  # the codes lie outside the valid range
                },
                "age": {"type": "numeric", "monotone": monotone},
                "sector": {"type": "categorical", "missing": "impute"},
            },
        }
    )


def _institution(seed: int, rows: int = 1500) -> tuple[pd.DataFrame, np.ndarray]:
    """Bureau-style rows: a heavy-tailed ratio with sentinel codes and gaps, an age whose risk
    falls with it, a sector; the label depends on all three."""
    rng = np.random.default_rng(seed)
    util = np.minimum(rng.lognormal(-0.7 + 0.1 * seed, 1.0, rows).round(3), 95.0)
    util[rng.random(rows) < 0.04] = 96.0
    util[rng.random(rows) < 0.03] = 98.0
    util[rng.random(rows) < 0.06] = np.nan
    age = rng.integers(18, 80, rows).astype(float)
    sector = rng.choice(["retail", "farming", "mining", "tech"], rows, p=[0.4, 0.3, 0.2, 0.1])
    logit = (
        -1.2
        + 0.8 * np.log1p(np.nan_to_num(util, nan=3.0))
        - 0.03 * (age - 45)
        + 0.7 * (sector == "mining")
        + 1.0 * (util == 98.0)
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    sector_col = pd.Series(sector, dtype=object)
    sector_col[rng.random(rows) < 0.05] = None
    frame = pd.DataFrame({"utilisation": util, "age": age, "sector": sector_col})
    return frame, y


PARTS = [_institution(s) for s in (1, 2, 3)]
VOCAB = {"sector": ["farming", "mining", "retail", "tech"]}


def _federated(schema: Schema, fine_n: int = 20, share: float = 0.05):  # type: ignore[no-untyped-def]
    """The coordinator's steps on the institutions' own summaries (no rows pooled)."""
    histogram = merge_histograms([grid_histogram(x, schema) for x, _ in PARTS])
    fine = fine_bins(histogram, schema, VOCAB, max_bins=fine_n)
    counts = add_counts([count_bins(x, y, fine) for x, y in PARTS])
    return (
        fine,
        counts,
        classify(fine, counts, schema, Classing(fine_bins=fine_n, min_bin_share=share), histogram),
    )


# --------------------------------------------------------------------------- layout


def test_codes_put_regular_bins_first_then_specials_then_missing() -> None:
    spec = BinningSpec(
        features=[
            NumericBins(name="u", edges=[0.5, 2.0], special=[96.0, 98.0]),
            CategoricalBins(name="s", groups=[["a", "b"], ["c", OTHER]]),
        ]
    )
    data = {
        "u": [0.1, 0.5, 1.9, 2.0, 96.0, 98.0, None],
        "s": ["a", "b", "c", "zzz", None, "a", "c"],
    }
    codes = bin_codes(data, spec)
    assert codes.dtype == np.uint8
    assert codes[:, 0].tolist() == [0, 1, 1, 2, 3, 4, 5]
    assert codes[:, 1].tolist() == [0, 0, 1, 1, 2, 0, 1]
    assert spec.n_bins("u") == 6 and spec.missing_code("u") == 5
    assert spec.n_bins(1) == 3 and spec.missing_code("s") == 2
    assert spec.feature("u").labels() == ["< 0.5", "[0.5, 2)", ">= 2", "= 96", "= 98", "missing"]
    frame = pd.DataFrame(data)
    assert (bin_codes(frame, spec) == codes).all()
    wide = BinningSpec(features=[NumericBins(name="u", edges=[float(i) for i in range(300)])])
    assert bin_codes(np.array([[5.5], [np.nan]]), wide).dtype == np.uint16
    assert bin_codes(np.array([[5.5], [np.nan]]), wide)[:, 0].tolist() == [6, 301]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.sampled_from([96.0, 0.5, 2.0]), st.floats(-10, 10)),
        min_size=1,
        max_size=30,
    )
)
def test_one_value_and_a_column_bin_alike(values: list[float | None]) -> None:
    bins = NumericBins(name="u", edges=[-1.0, 0.5, 2.0], special=[96.0])
    many = bins.codes(np.array(values, dtype=np.float64))
    assert many.tolist() == [bins.code(v) for v in values]


def test_bad_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="ascending"):
        NumericBins(name="u", edges=[2.0, 1.0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CategoricalBins(name="s", groups=[["a"]])
    with pytest.raises(ValueError, match="more than one bin"):
        CategoricalBins(name="s", groups=[["a"], ["a", OTHER]])


# --------------------------------------------------------------------------- fine classing


def test_the_grid_is_round_numbers_and_cells_split_at_them() -> None:
    g = grid(3)
    assert 2.0 in g and 0.35 in g and 150000.0 in g and -1.01 in g and 0.0 in g
    assert (np.diff(g) > 0).all()
    c = cells(np.array([1.999, 2.0, 2.004, 2.01]))
    assert c[0] < c[1] == c[2] < c[3]  # [2.00, 2.01) is one cell


def test_fine_edges_sit_at_the_merged_quantiles() -> None:
    x = pd.DataFrame({"v": np.repeat([1.0, 2.0, 3.0, 4.0], [10, 10, 10, 10])})
    schema = Schema.model_validate({"label": "y", "positive": 1, "features": {"v": "numeric"}})
    h = grid_histogram(x, schema).features["v"]
    assert fine_edges(h, 3, 4) == [2.0, 3.0, 4.0]
    assert fine_edges(h, 3, 2) == [3.0]
    assert fine_edges(h, 3, 1) == []
    skewed = pd.DataFrame({"v": np.repeat([0.0, 7.0], [95, 5])})
    assert fine_edges(grid_histogram(skewed, schema).features["v"], 3, 32) == [7.0]


def test_histograms_add_up_to_the_pooled_rows_histogram() -> None:
    schema = _schema()
    merged = merge_histograms([grid_histogram(x, schema) for x, _ in PARTS])
    pooled = grid_histogram(pd.concat([x for x, _ in PARTS], ignore_index=True), schema)
    assert merged == pooled
    # Specials and missing values are not in the histogram: they have bins of their own.
    n = sum(int(((~x.utilisation.isna()) & ~x.utilisation.isin(SPECIAL)).sum()) for x, _ in PARTS)
    assert sum(merged.features["utilisation"].counts) == n
    with pytest.raises(ValueError, match="different grids"):
        merge_histograms([merged, GridHistogram(digits=2, features=merged.features)])


# --------------------------------------------------------------------------- WOE / IV


def _reference_woe_iv(codes: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[list, list]:  # type: ignore[type-arg]
    """The textbook computation on pooled rows, written independently of the package."""
    frame = pd.DataFrame({"code": codes, "bad": y})
    table = pd.crosstab(frame.code, frame.bad).reindex(range(n_bins), fill_value=0)
    goods, bads = table.get(0, 0) * 1.0, table.get(1, 0) * 1.0
    woe, iv = [], []
    for g, b in zip(goods, bads, strict=True):
        if g == 0 or b == 0:
            woe.append(0.0)
            iv.append(0.0)
            continue
        dg, db = g / goods.sum(), b / bads.sum()
        woe.append(math.log(dg) - math.log(db))
        iv.append((dg - db) * (math.log(dg) - math.log(db)))
    return woe, iv


@pytest.mark.parametrize("monotone", ["none", "increasing"])
def test_federated_woe_and_iv_equal_the_pooled_computation(monotone: str) -> None:
    schema = _schema(monotone)
    _, _, table = _federated(schema)
    x = pd.concat([p[0] for p in PARTS], ignore_index=True)
    y = np.concatenate([p[1] for p in PARTS])
    codes = bin_codes(x, table.bins)
    for j, f in enumerate(table.features):
        woe, iv = _reference_woe_iv(codes[:, j], y, table.bins.n_bins(f.name))
        assert [b.woe for b in f.bins] == pytest.approx(woe, abs=1e-12, rel=0)
        assert [b.iv for b in f.bins] == pytest.approx(iv, abs=1e-12, rel=0)
        assert f.iv == pytest.approx(sum(iv), abs=1e-12, rel=0)
        assert [b.goods + b.bads for b in f.bins] == np.bincount(
            codes[:, j], minlength=len(f.bins)
        ).tolist()
    util = table.feature("utilisation")
    kinds = [b.kind for b in util.bins]
    assert kinds[-3:] == ["special", "special", "missing"] and "regular" in kinds
    assert [b.label for b in util.bins[-3:]] == ["= 96", "= 98", "missing"]
    assert util.bins[-2].woe < -0.3  # sentinel 98 is a risk signal of its own
    assert table.feature("sector").bins[-1].label == "missing"
    # The same steps on the pooled rows (the centralized twin) give the same table exactly.
    assert binning_from_rows([(x, y)], schema, VOCAB, Classing(fine_bins=20)) == table


# --------------------------------------------------------------------------- coarse classing


def _regular(bins: list) -> list:  # type: ignore[type-arg]
    return [b for b in bins if b.kind == "regular"]


@pytest.mark.parametrize("share", [0.05, 0.12])
def test_coarse_bins_hold_the_minimum_share(share: float) -> None:
    _, _, table = _federated(_schema(), fine_n=32, share=share)
    for f in table.features:
        regular = _regular(f.bins)
        regular_share = sum(b.share for b in regular)
        if regular_share >= share:
            assert all(b.share >= share - 1e-12 for b in regular), f.name
        assert all(b.goods > 0 and b.bads > 0 for b in regular)


@pytest.mark.parametrize(("monotone", "sign"), [("increasing", 1), ("decreasing", -1)])
def test_monotone_features_get_monotone_woe(monotone: str, sign: int) -> None:
    """`increasing`: risk rises with the value, so WOE never rises; `decreasing` the reverse.
    Age's risk falls, so `increasing` must pool it into very few attributes."""
    _, _, unconstrained = _federated(_schema("none"), share=0.02)
    woe_free = [b.woe for b in _regular(unconstrained.feature("age").bins)]
    assert any(np.diff(woe_free) > 0) and any(np.diff(woe_free) < 0)  # noisy without it
    _, _, table = _federated(_schema(monotone), share=0.02)
    age = _regular(table.feature("age").bins)
    woe = np.array([b.woe for b in age])
    assert (sign * np.diff(woe) <= 1e-12).all()
    rates = np.array([b.bad_rate for b in age])
    assert (sign * np.diff(rates) >= -1e-12).all()
    if monotone == "decreasing":
        assert len(age) > 3  # the true direction: many attributes survive


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=24),
    monotone=st.sampled_from(["none", "increasing", "decreasing"]),
    share=st.sampled_from([0.01, 0.05, 0.2]),
)
def test_classing_rules_hold_for_any_counts(
    counts: list[tuple[int, int]], monotone: str, share: float
) -> None:
    """Whatever the fine counts: every row stays counted, attributes are unions of adjacent
    fine bins, and each holds the minimum share with both classes (unless one is left); with
    `monotone` the bad rate runs that way."""
    from jointcredit.models.binning import BinCounts
    from jointcredit.models.binning.classing import coarse_bins, min_rows_for, regroup

    k = len(counts)
    fine = BinningSpec(
        features=[NumericBins(name="v", edges=[float(i) for i in range(1, k)], special=[-1.0])]
    )
    goods = [g for g, _ in counts] + [3, 0]  # a special bin and an empty missing bin
    bads = [b for _, b in counts] + [1, 0]
    fine_counts = BinCounts(goods={"v": goods}, bads={"v": bads})
    schema = Schema.model_validate(
        {"label": "y", "positive": 1, "features": {"v": {"type": "numeric", "monotone": monotone}}}
    )
    coarse = coarse_bins(fine, fine_counts, schema, min_share=share)
    merged = regroup(fine, coarse, fine_counts)
    g, b = merged.arrays("v")
    assert g.sum() == sum(goods) and b.sum() == sum(bads)
    assert set(coarse.features[0].edges) <= set(fine.features[0].edges)  # type: ignore[union-attr]
    assert (g[-2], b[-2], g[-1], b[-1]) == (3, 1, 0, 0)  # special and missing kept apart
    regular = coarse.features[0].regular
    g, b = g[:regular], b[:regular]
    if regular > 1:
        assert ((g + b) >= min_rows_for(sum(goods) + sum(bads), share)).all()
        assert (g > 0).all() and (b > 0).all()
    rates = b / np.maximum(g + b, 1)
    if monotone == "increasing":
        assert (np.diff(rates) >= -1e-12).all()
    if monotone == "decreasing":
        assert (np.diff(rates) <= 1e-12).all()


def test_a_binning_spec_travels_as_canonical_json() -> None:
    spec = BinningSpec(
        features=[
            NumericBins(name="u", edges=[0.5, 2.0], special=[96.0]),
            CategoricalBins(name="s", groups=[["a"], [OTHER]]),
        ]
    )
    again = BinningSpec.model_validate_json(spec.to_json())
    assert again == spec and again.digest() == spec.digest() and spec.names == ["u", "s"]
    assert (spec.codes({"u": [1.0, None], "s": ["a", "b"]}) == [[1, 0], [4, 1]]).all()
    other = BinningSpec(features=[NumericBins(name="u", edges=[0.5, 2.5], special=[96.0])])
    assert other.digest() != spec.digest()
