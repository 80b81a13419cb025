"""The vertical scorecard: the bank (label party) fits from homomorphic sums and the
platform's label-free counts exactly what the same learner fits on the joined rows
(lossless), keeps no edge or level of the platform's, and refuses a platform's answer that
does not fit what it asked or already knows."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from jointcredit.data.schema import Schema
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning import BinningSpec, NumericBins
from jointcredit.models.binning.table import Classing
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.party_bins import party_bins, party_schema
from jointcredit.models.vertical.scorecard import slots
from jointcredit.models.vertical.scorecard.central import central_scorecard
from jointcredit.models.vertical.scorecard.feature_party import ScorecardFeatureParty
from jointcredit.models.vertical.scorecard.fit import (
    Calibration,
    VerticalScorecard,
    one_step,
    solve,
)
from jointcredit.models.vertical.scorecard.label_party import ScorecardLink, train
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.simulations.vertical import aligned_frames, load_data

CLASSING = Classing(fine_bins=16, min_bin_share=0.05)
SPECIAL = 99.0  # a special value given to one platform feature, beside missing values


@dataclass(frozen=True)
class Parties:
    bank: pd.DataFrame
    platform: pd.DataFrame
    y: np.ndarray
    schema: Schema
    bank_bins: BinningSpec
    platform_bins: BinningSpec
    platform_fine: BinningSpec  # 16 bins a feature: fine pair-table cells of 1-4 rows


def _schema(vs: VerticalSchema) -> VerticalSchema:
    """synthetic-vertical's schema with a special value and monotone directions, so classing
    meets every kind of bin and rule."""
    f = dict(vs.base.features)
    f["payment_failures_90d"] = f["payment_failures_90d"].model_copy(update={"special": (SPECIAL,)})
    f["network_risk"] = f["network_risk"].model_copy(update={"monotone": "increasing"})
    f["debt_to_income"] = f["debt_to_income"].model_copy(update={"monotone": "increasing"})
    return replace(vs, base=vs.base.model_copy(update={"features": f}))


@pytest.fixture(scope="module")
def parties() -> Parties:
    settings = VerticalSettings.model_validate(
        {"dataset": "synthetic-vertical", "synthetic-rows": 3000}
    )
    data = load_data(settings)
    frames, test = aligned_frames(data, settings)
    vs = _schema(data.schema)
    train_rows = ~test
    bank = frames["bank"][train_rows].reset_index(drop=True)
    platform = frames["platform"][train_rows].reset_index(drop=True)
    rng = np.random.default_rng(0)
    col = platform["payment_failures_90d"].to_numpy(dtype=float, copy=True)
    col[rng.random(len(col)) < 0.06] = SPECIAL
    col[rng.random(len(col)) < 0.03] = np.nan
    platform["payment_failures_90d"] = col
    y = bank[vs.base.label].to_numpy().astype(np.int64)

    def bins(party: str, frame: pd.DataFrame, max_bins: int) -> BinningSpec:
        schema = party_schema(vs, party)
        return party_bins(frame, schema, max_bins=max_bins, max_categories=20, min_count=5)

    # Few fine bins (the fast case), and 16, whose fine x fine pair tables would hold cells of
    # 1-4 rows: what the coarse tables replaced.
    platform_bins = bins("platform", platform, 4)
    fine = bins("platform", platform, 16)
    return Parties(bank, platform, y, vs.base, bins("bank", bank, 16), platform_bins, fine)


@pytest.fixture(scope="module")
def key() -> HeuSecretKey:
    return HeuSecretKey("ou")


def _platform(p: Parties, key: HeuSecretKey) -> ScorecardFeatureParty:
    return ScorecardFeatureParty(p.platform, p.platform_bins, public_key(key.public.to_bytes()))


def _train(p: Parties, key: HeuSecretKey, link: ScorecardLink) -> VerticalScorecard:
    return train(p.bank, p.y, p.bank_bins, p.schema, [link], key, classing=CLASSING)


@pytest.fixture(scope="module")
def fitted(parties: Parties, key: HeuSecretKey) -> VerticalScorecard:
    return _train(parties, key, _platform(parties, key))


@pytest.mark.parametrize(
    ("calibration", "fine"), [("lda", False), ("newton", False), ("lda", True)]
)
def test_lossless_against_the_joined_rows(
    parties: Parties,
    key: HeuSecretKey,
    fitted: VerticalScorecard,
    calibration: Calibration,
    fine: bool,
) -> None:
    """Equal to the joined rows' fit, also at 16 fine bins a feature, whose fine x fine pair
    tables have cells of 1-4 rows: the coarse tables are enough."""
    p = parties
    bins = p.platform_fine if fine else p.platform_bins
    if calibration != "lda" or fine:
        link = [ScorecardFeatureParty(p.platform, bins, public_key(key.public.to_bytes()))]
        fitted = train(
            p.bank,
            p.y,
            p.bank_bins,
            p.schema,
            link,
            key,
            classing=CLASSING,
            calibration=calibration,
        )
    central = central_scorecard(
        (p.bank, p.bank_bins),
        (p.platform, bins),
        p.y,
        p.schema,
        classing=CLASSING,
        calibration=calibration,
    )
    assert fitted.intercept == pytest.approx(central.intercept, abs=1e-9)
    np.testing.assert_allclose(fitted.weights, central.weights, rtol=0, atol=1e-9)
    for v, c in zip(fitted.platform, central.platform, strict=True):
        assert v.name == c.name
        np.testing.assert_array_equal(v.merge, c.merge)
        np.testing.assert_allclose(v.woe.woe, c.woe.woe, rtol=0, atol=1e-12)
        assert v.woe.rows == c.woe.rows
    # The fixture's special value and monotone rule were in play.
    special = next(f for f in fitted.platform if f.name == "payment_failures_90d")
    assert special.woe.bins.n_bins == special.woe.bins.regular + 2
    v_pts, c_pts = fitted.points, central.points
    assert v_pts.base_points == pytest.approx(c_pts.base_points, abs=1e-9)
    assert [(a.feature, a.code, a.attribute) for a in v_pts.attributes] == [
        (a.feature, a.code, a.attribute) for a in c_pts.attributes
    ]
    np.testing.assert_allclose(
        [a.points for a in v_pts.attributes], [a.points for a in c_pts.attributes], atol=1e-9
    )
    # Every platform feature carries weight: the fit is not the bank's alone.
    assert np.all(np.abs(fitted.weights[len(fitted.own) :]) > 1e-3)


def test_the_bank_keeps_no_edge_or_level_of_the_platform(
    parties: Parties, fitted: VerticalScorecard
) -> None:
    real = set()
    for f in parties.platform_bins.features:
        real |= set(f.edges) if isinstance(f, NumericBins) else set(f.index) - {"__other__"}
    for f in fitted.platform:
        bins = f.woe.bins
        held = set(bins.edges) if isinstance(bins, NumericBins) else set(bins.index)
        assert held <= {float(i) for i in range(200)} | {str(i) for i in range(200)} | {"__other__"}
    platform = {f.name for f in fitted.platform}
    labels = [a.attribute for a in fitted.points.attributes if a.feature in platform]
    assert not any(str(e) in " ".join(labels) for e in real if isinstance(e, str))
    assert all(a.startswith(("bin ", "= ", "missing")) for a in labels)


def test_one_step_is_a_newton_step_of_the_log_likelihood() -> None:
    """Against the textbook step computed row by row: gradient and Hessian at w0."""
    rng = np.random.default_rng(3)
    x = np.column_stack([np.ones(400), rng.normal(size=(400, 3))])
    y = (rng.random(400) < 1 / (1 + np.exp(-(x @ [-1.0, 0.8, -0.5, 0.2])))).astype(float)
    p0 = y.mean()
    w0 = np.r_[math.log(p0 / (1 - p0)), 0, 0, 0]
    p = 1 / (1 + np.exp(-(x @ w0)))
    hessian = (x * (p * (1 - p))[:, None]).T @ x
    expected = w0 + np.linalg.solve(hessian, x.T @ (y - p))
    b, w = one_step(x.T @ x, x.T @ y, int(y.sum()), ridge=0.0)
    np.testing.assert_allclose(np.r_[b, w], expected, rtol=1e-10, atol=1e-12)


def test_lda_calibration_is_the_linear_discriminant() -> None:
    """Against Fisher's discriminant computed row by row: the within-class covariance's
    inverse times the difference of the class means, the intercept at their midpoint plus the
    log prior odds."""
    rng = np.random.default_rng(4)
    y = (rng.random(600) < 0.25).astype(float)
    x = rng.normal(size=(600, 3)) + np.outer(y, [0.9, -0.4, 0.1]) + 0.3
    x1 = np.column_stack([np.ones(600), x])
    mu1, mu0 = x[y == 1].mean(axis=0), x[y == 0].mean(axis=0)
    within = (
        (x[y == 1] - mu1).T @ (x[y == 1] - mu1) + (x[y == 0] - mu0).T @ (x[y == 0] - mu0)
    ) / 600
    beta = np.linalg.solve(within, mu1 - mu0)
    p1 = y.mean()
    intercept = math.log(p1 / (1 - p1)) - beta @ (mu1 + mu0) / 2
    b, w = solve(x1.T @ x1, x1.T @ y, int(y.sum()), ridge=0.0, calibration="lda")
    np.testing.assert_allclose(np.r_[b, w], np.r_[intercept, beta], rtol=1e-9, atol=1e-12)


def test_slots_add_up_to_exact_counts() -> None:
    """Sums of packed plaintexts over any rows read back as the one-hot counts."""
    rng = np.random.default_rng(1)
    n, n_bins = 500, (3, 7, 2, 5)
    codes = np.column_stack([rng.integers(0, k, n) for k in n_bins])
    y = rng.integers(0, 2, n)
    plan = slots.plan(n, n_bins, plaintext_bits=40)  # 9-bit slots, 4 a plaintext
    assert (plan.width, plan.per, plan.columns) == (9, 4, 5)
    plain = np.array(slots.pack(plan, y, codes), dtype=object).reshape(plan.columns, n)
    groups = rng.integers(0, 3, n)
    sums = [[int(plain[q, groups == g].sum()) for g in range(3)] for q in range(plan.columns)]
    got = slots.unpack(plan, sums)
    for g in range(3):
        rows = groups == g
        assert got[g, slots.COUNT] == rows.sum() and got[g, slots.BAD] == y[rows].sum()
        for a, k in enumerate(n_bins):
            at = plan.offsets[a]
            expected = np.bincount(codes[rows, a], minlength=k)
            np.testing.assert_array_equal(got[g, at : at + k], expected)
    with pytest.raises(ValueError, match="out of range"):
        slots.unpack(plan, [[1 << 40] * 3, *sums[1:]])


class Hostile:
    """The honest platform with one answer changed."""

    def __init__(self, honest: ScorecardFeatureParty, **changes: object) -> None:
        self.honest, self.changes = honest, changes

    def columns(self) -> FineColumns:
        cols = self.honest.columns()
        change = self.changes.get("columns")
        return change(cols) if callable(change) else cols

    def tables(self, message: EncryptedSlots) -> EncryptedTables:
        change = self.changes.get("slots")
        answer = self.honest.tables(change(message) if callable(change) else message)
        change = self.changes.get("tables")
        return change(answer) if callable(change) else answer

    def coarse(self, maps: Sequence[np.ndarray]) -> PairCounts:
        pairs = self.honest.coarse(maps)
        change = self.changes.get("pairs")
        return change(pairs) if callable(change) else pairs


def _fine_pairs(p: PairCounts) -> PairCounts:
    """Tables of another shape than the coarse codes' (e.g. fine x fine) are refused."""
    return PairCounts(tuple(np.pad(t, ((0, 1), (0, 1))) for t in p.tables))


def _bump(cols: FineColumns, delta: int) -> FineColumns:
    rows = list(cols.rows)
    rows[0] = rows[0].copy()
    rows[0][0] += delta
    rows[0][1] -= delta
    return replace(cols, rows=tuple(rows))


def _other_rows(c: FineColumns) -> FineColumns:
    return replace(c, rows=(c.rows[0] + 1, *c.rows[1:]))


def _bank_feature(c: FineColumns) -> FineColumns:
    return replace(c, names=("bureau_score", *c.names[1:]))


def _more_bins(c: FineColumns) -> FineColumns:
    return replace(c, regular=(c.regular[0] + 1, *c.regular[1:]))


def _moved_pair(p: PairCounts) -> PairCounts:
    return PairCounts((np.roll(p.tables[0], 1, axis=0), *p.tables[1:]))


def _swapped(t: EncryptedTables) -> EncryptedTables:
    return replace(t, columns=(t.columns[-1], *t.columns[1:]))


HOSTILE = [
    pytest.param({"columns": _other_rows}, "counts", id="rows-not-n"),
    pytest.param({"columns": lambda c: _bump(c, int(c.rows[0][1]) + 1)}, "below 0", id="negative"),
    pytest.param({"columns": _bank_feature}, "not a feature party's", id="bank-feature"),
    pytest.param({"columns": _more_bins}, "shape", id="bins-vs-rows"),
    pytest.param(
        {"columns": lambda c: replace(c, regular=(2.5, *c.regular[1:]))}, "whole", id="half-bin"
    ),
    pytest.param({"pairs": lambda p: PairCounts(p.tables[:-1])}, "pair tables", id="pair-missing"),
    pytest.param({"pairs": _moved_pair}, "add up|above its", id="pair-inconsistent"),
    pytest.param({"pairs": _fine_pairs}, "of shape", id="pair-not-coarse"),
    pytest.param(
        {"tables": lambda t: replace(t, columns=t.columns[:-1])}, "columns of", id="column-missing"
    ),
    pytest.param({"tables": _swapped}, "sums of|out of range", id="column-swapped"),
    pytest.param(
        {"tables": lambda t: replace(t, buckets=t.buckets + 1)}, "in a column", id="buckets"
    ),
]


@pytest.mark.parametrize(("changes", "error"), HOSTILE)
def test_inconsistent_answers_are_refused(
    parties: Parties, key: HeuSecretKey, changes: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        _train(parties, key, Hostile(_platform(parties, key), **changes))


def test_sums_over_other_rows_are_refused(parties: Parties, key: HeuSecretKey) -> None:
    """A platform whose sums count other rows than those whose bins it announced."""
    honest = _platform(parties, key)
    n = len(parties.platform)
    shifted = _platform(parties, key)
    shifted.codes = shifted.codes[np.r_[0 : n // 2, 0 : n - n // 2]]
    cheat = Hostile(honest)
    cheat.tables = shifted.tables  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="sums of"):
        _train(parties, key, cheat)


def test_the_platform_refuses_another_key_and_row_count(
    parties: Parties, key: HeuSecretKey
) -> None:
    platform = _platform(parties, key)
    message = EncryptedSlots(b"another key", b"", len(parties.platform), 1)
    with pytest.raises(ValueError, match="another key"):
        platform.tables(message)
    message = EncryptedSlots(key.public.to_bytes(), b"", len(parties.platform) + 1, 1)
    with pytest.raises(ValueError, match="aligned training rows"):
        platform.tables(message)


def test_distinct_feature_parties_and_two_classes(parties: Parties, key: HeuSecretKey) -> None:
    p = parties
    platform = _platform(p, key)
    with pytest.raises(ValueError, match="not a feature party's feature"):  # answered twice
        train(p.bank, p.y, p.bank_bins, p.schema, [platform, platform], key, classing=CLASSING)
    with pytest.raises(ValueError, match="at least one feature party"):
        train(p.bank, p.y, p.bank_bins, p.schema, [], key, classing=CLASSING)
    with pytest.raises(ValueError, match="both goods and bads"):
        train(p.bank, np.zeros_like(p.y), p.bank_bins, p.schema, [platform], key, classing=CLASSING)
    with pytest.raises(ValueError, match="0/1 label"):
        train(p.bank, p.y[:-1], p.bank_bins, p.schema, [platform], key, classing=CLASSING)


def test_bins_of_a_few_applicants_are_refused(parties: Parties, key: HeuSecretKey) -> None:
    """Neither party lets the other count a bin of fewer than 5 applicants: the bank would
    learn their platform bins, or the platform's bins of theirs."""
    p = parties
    few = p.platform.copy()
    col = few["payment_failures_90d"].to_numpy(dtype=float, copy=True)
    col[np.isnan(col)] = 0.0
    col[:3] = np.nan  # a missing bin of 3 rows
    few["payment_failures_90d"] = col
    with pytest.raises(ValueError, match=r"payment_failures_90d: bin \d+ holds 3 rows"):
        ScorecardFeatureParty(few, p.platform_bins, public_key(key.public.to_bytes()))
    bank = p.bank.copy()
    income = bank["monthly_income"].to_numpy(dtype=float, copy=True)
    income[:2] = np.nan
    bank["monthly_income"] = income
    with pytest.raises(ValueError, match=r"monthly_income: bin \d+ holds 2 rows"):
        train(bank, p.y, p.bank_bins, p.schema, [_platform(p, key)], key, classing=CLASSING)


def _wrapped(cells: PairCounts, delta: int | None) -> PairCounts:
    """+delta on cells (0, 0) and (1, 1) of the first table, -delta on (0, 1) and (1, 0),
    sent as uint64: the -delta cells wrap past 2^63, every row and column total holds.
    None: cell (0, 0) one above its row's or column's total."""
    t = cells.tables[0].astype(np.uint64)
    if delta is None:
        low = min(int(t[0].sum()), int(t[:, 0].sum()))
        delta = low - int(t[0, 0]) + 1
    for at, sign in (((0, 0), 1), ((1, 1), 1), ((0, 1), -1), ((1, 0), -1)):
        t[at] = np.uint64((int(t[at]) + sign * delta) % 2**64)
    return PairCounts((t, *cells.tables[1:]))


@pytest.mark.parametrize("delta", [10**12, None], ids=["1e12", "one-above-marginal"])
def test_wrapped_uint64_pair_tables_are_refused(
    parties: Parties, key: HeuSecretKey, delta: int | None
) -> None:
    """The review's attack: a uint64 table whose wrapped cells keep the totals (it moved the
    platform's weights to ~0); `None`: cell (0, 0) one above its row's or column's total."""
    honest = _platform(parties, key)
    a, b = honest.columns().names[:2]
    with pytest.raises(ValueError, match=rf"pair table \({a}, {b}\): a count below 0 or above"):
        _train(parties, key, Hostile(honest, pairs=lambda p: _wrapped(p, delta)))


MALFORMED = [
    pytest.param(
        {"tables": lambda t: replace(t, buckets=float(t.buckets))}, "buckets", id="buckets"
    ),
    pytest.param(
        {"columns": lambda c: replace(c, rows=tuple(r.tolist() for r in c.rows))},
        "rows of",
        id="rows-as-lists",
    ),
    pytest.param(
        {"columns": lambda c: replace(c, names=(["x"], *c.names[1:]))}, "names", id="name-list"
    ),
]


@pytest.mark.parametrize(("changes", "error"), MALFORMED)
def test_malformed_answers_are_value_errors(
    parties: Parties, key: HeuSecretKey, changes: dict[str, object], error: str
) -> None:
    """A field of the wrong type is a ValueError naming it, not a TypeError further on."""
    with pytest.raises(ValueError, match=error):
        _train(parties, key, Hostile(_platform(parties, key), **changes))


def _pooled(bins: BinningSpec) -> list[np.ndarray]:
    """Merge maps classing may give: every regular fine bin one attribute, each special value
    and missing its own."""
    return [np.r_[np.zeros(f.regular, np.int64), 1 + np.arange(f.n_bins - f.regular)]
            for f in bins.features]  # fmt: skip


def test_pair_cells_of_a_few_applicants_are_refused(parties: Parties, key: HeuSecretKey) -> None:
    """Every fine bin holds 5 rows or more, but a coarse pair cell fewer (3 rows missing in
    both features): a platform that asks for a minimum on pair cells refuses to send that
    table, naming both features and not the count; one that asks for less than 5 gets 5."""
    frame = parties.platform.copy()
    a, b = "monthly_spend", "spend_volatility"
    for name, rows in ((a, np.r_[0:3, 10:14]), (b, np.r_[0:3, 20:24])):
        col = frame[name].to_numpy(dtype=float, copy=True)
        col[rows] = np.nan  # 7 missing each, 3 of them the same applicants
        frame[name] = col
    spec = party_bins(frame, party_schema(_schema(load_data(VerticalSettings()).schema),
                      "platform"), max_bins=4, max_categories=20, min_count=5)  # fmt: skip
    pk = public_key(key.public.to_bytes())
    maps = _pooled(spec)
    served = ScorecardFeatureParty(frame, spec, pk).coarse(maps)  # not asked: served
    assert any(((t > 0) & (t < 5)).any() for t in served.tables)
    for asked in (5, 2):
        platform = ScorecardFeatureParty(frame, spec, pk, pair_min_rows=asked)
        assert platform.pair_min_rows == 5
        with pytest.raises(ValueError, match=rf"pair table \({a}, {b}\): a cell holds fewer "
                           "than 5 rows") as refused:  # fmt: skip
            platform.coarse(maps)
        assert not re.search(r"\b[1-4] rows", str(refused.value))  # no count named
        assert platform.merge is None  # nothing kept


def test_the_platform_takes_merge_maps_once_and_no_finer_than_classing(
    parties: Parties, key: HeuSecretKey
) -> None:
    platform = _platform(parties, key)
    maps = _pooled(parties.platform_bins)
    with pytest.raises(ValueError, match=r"finer than classing|pool only with neighbours"):
        platform.coarse([np.arange(len(m)) for m in maps])  # its fine bins back
    assert platform.merge is None
    platform.coarse(maps)
    with pytest.raises(ValueError, match="given already"):
        platform.coarse(maps)


def test_the_coarse_tables_are_no_finer_than_the_merge_maps(
    parties: Parties, key: HeuSecretKey
) -> None:
    """What the bank is sent: one table per pair of the platform's features, each of the
    coarse codes' shape, never a fine bin's row or column."""
    p = parties
    platform = ScorecardFeatureParty(p.platform, p.platform_fine, public_key(key.public.to_bytes()))
    seen: list[PairCounts] = []

    class Recording(Hostile):
        def coarse(self, maps: Sequence[np.ndarray]) -> PairCounts:
            seen.append(self.honest.coarse(maps))
            return seen[-1]

    model = train(p.bank, p.y, p.bank_bins, p.schema, [Recording(platform)], key,
                  classing=CLASSING)  # fmt: skip
    k = [f.woe.bins.n_bins for f in model.platform]
    fine = [f.n_bins for f in p.platform_fine.features]
    assert sum(k) < sum(fine)
    (pairs,) = seen
    assert [t.shape for t in pairs.tables] == [(a, b) for a, b in combinations(k, 2)]


def test_no_setting_lowers_the_minimum_below_5(parties: Parties, key: HeuSecretKey) -> None:
    """`min_rows=1` (a vertical run's `min-category-count`) still refuses bins of 2-3 rows."""
    p = parties
    few = p.platform.copy()
    col = few["payment_failures_90d"].to_numpy(dtype=float, copy=True)
    col[np.isnan(col)] = 0.0
    col[:3] = np.nan
    few["payment_failures_90d"] = col
    pk = public_key(key.public.to_bytes())
    with pytest.raises(ValueError, match="holds 3 rows, fewer than 5"):
        ScorecardFeatureParty(few, p.platform_bins, pk, min_rows=1)
    bank = p.bank.copy()
    income = bank["monthly_income"].to_numpy(dtype=float, copy=True)
    income[:2] = np.nan
    bank["monthly_income"] = income
    with pytest.raises(ValueError, match="holds 2 rows, fewer than 5"):
        train(bank, p.y, p.bank_bins, p.schema, [_platform(p, key)], key, classing=CLASSING,
              min_rows=1)  # fmt: skip


def test_one_bound_on_fine_bins() -> None:
    """The models' bound on fine codes is the scheme's bucket limit, defined once."""
    from jointcredit.models.vertical.cipher import MAX_BUCKETS
    from jointcredit.models.vertical.scorecard.checks import MAX_FINE_BINS
    from jointcredit.privacy.paillier import MAX_BUCKETS as SCHEME_BUCKETS

    assert MAX_FINE_BINS == MAX_BUCKETS == SCHEME_BUCKETS


def _split(p: Parties, key: HeuSecretKey, at: int) -> list[ScorecardFeatureParty]:
    """The platform's features held by two feature parties: the first `at`, and the rest."""
    pk = public_key(key.public.to_bytes())
    features = p.platform_fine.features
    return [ScorecardFeatureParty(p.platform, BinningSpec(features=features[:at]), pk),
            ScorecardFeatureParty(p.platform, BinningSpec(features=features[at:]), pk)]  # fmt: skip


def test_two_feature_parties_are_lossless(parties: Parties, key: HeuSecretKey) -> None:
    """A bank and two platforms: the fit equals the joined rows' (and the one platform
    holding all their features'), the cross blocks of X'X coming from one platform's
    encrypted coarse codes summed by the other."""
    p = parties
    two = _split(p, key, 4)
    fitted = train(p.bank, p.y, p.bank_bins, p.schema, two, key, classing=CLASSING)
    halves = [(p.platform, party.bins) for party in two]
    central = central_scorecard((p.bank, p.bank_bins), halves, p.y, p.schema, classing=CLASSING)
    assert fitted.intercept == pytest.approx(central.intercept, abs=1e-9)
    np.testing.assert_allclose(fitted.weights, central.weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        [a.points for a in fitted.points.attributes],
        [a.points for a in central.points.attributes],
        atol=1e-9,
    )
    one = central_scorecard(
        (p.bank, p.bank_bins), (p.platform, p.platform_fine), p.y, p.schema, classing=CLASSING
    )
    np.testing.assert_allclose(fitted.weights, one.weights, rtol=0, atol=1e-9)


def test_a_cross_table_that_does_not_add_up_is_refused(parties: Parties, key: HeuSecretKey) -> None:
    """The second platform sums other rows' codes than the first one encrypted (the first
    half of them twice): the cross sums no longer match the first party's coarse rows. (A
    permutation of the rows would pass: docs/PRIVACY.md, trust assumptions.)"""
    p = parties
    first, second = _split(p, key, 4)

    class Shifted(ScorecardFeatureParty):
        def cross(self, peer: ScorecardFeatureParty) -> EncryptedTables:
            slots_ = peer.cross_slots()
            values = self._key.load(slots_.ciphertexts)
            n = slots_.rows
            half = np.r_[0 : n // 2, 0 : n - n // 2]
            order = np.concatenate([q * n + half for q in range(slots_.columns)])
            moved = replace(slots_, ciphertexts=values.take(order).to_bytes())
            return self.cross_tables(moved)

    shifted = Shifted(p.platform, second.bins, public_key(key.public.to_bytes()))
    with pytest.raises(ValueError, match="sums of"):
        train(p.bank, p.y, p.bank_bins, p.schema, [first, shifted], key, classing=CLASSING)


def _cross_pair(
    p: Parties, key: HeuSecretKey, floors: tuple[int | None, int | None]
) -> tuple[list[ScorecardFeatureParty], str, str]:
    """Two platforms, one holding `monthly_spend`, the other `spend_volatility`: 7 rows
    missing in each, 3 of them the same applicants, so the cross table's (missing, missing)
    cell holds 3 rows while every fine bin holds 5 or more (and neither has a pair table of
    its own). `floors`: each one's pair-min-rows."""
    frame = p.platform.copy()
    a, b = "monthly_spend", "spend_volatility"
    for name, rows in ((a, np.r_[0:3, 10:14]), (b, np.r_[0:3, 20:24])):
        col = frame[name].to_numpy(dtype=float, copy=True)
        col[rows] = np.nan
        frame[name] = col
    spec = party_bins(frame, party_schema(_schema(load_data(VerticalSettings()).schema),
                      "platform"), max_bins=4, max_categories=20, min_count=5)  # fmt: skip
    feats = spec.features
    mine = [f for f in feats if f.name == a]
    rest = [f for f in feats if f.name == b]
    pk = public_key(key.public.to_bytes())
    two = [ScorecardFeatureParty(frame, BinningSpec(features=part), pk, pair_min_rows=floor)
           for part, floor in zip((mine, rest), floors, strict=True)]  # fmt: skip
    return two, a, b


def test_cross_cells_of_a_few_applicants_are_not_used(parties: Parties, key: HeuSecretKey) -> None:
    """A cross cell of 1-4 rows: with neither platform's pair-min-rows set the fit takes it
    (the old rule); with either's set, the bank refuses the decrypted cross table before any
    use, naming the pair and the floor, not the count."""
    p = parties
    two, a, b = _cross_pair(p, key, (None, None))
    train(p.bank, p.y, p.bank_bins, p.schema, two, key, classing=CLASSING)
    assert two[0].merge is not None and two[1].merge is not None
    first_codes = coarse_codes(two[0].codes, two[0].merge)
    second_codes = coarse_codes(two[1].codes, two[1].merge)
    joint = np.bincount(first_codes[:, 0] * 10 + second_codes[:, 0])
    assert ((joint > 0) & (joint < 5)).any()  # the cell the floor is about
    for floors in ((5, None), (None, 2), (5, 8)):
        two, a, b = _cross_pair(p, key, floors)
        floor = max(f for f in floors if f is not None)
        with pytest.raises(ValueError, match=rf"cross table \({a}, {b}\): a cell holds fewer "
                           rf"than {max(floor, 5)} rows") as refused:  # fmt: skip
            train(p.bank, p.y, p.bank_bins, p.schema, two, key, classing=CLASSING)
        assert not re.search(r"\b[1-4] rows", str(refused.value))  # no count named


def test_the_pair_floor_travels_with_the_pair_tables(parties: Parties, key: HeuSecretKey) -> None:
    """A platform's pair-min-rows reaches the bank with its pair tables (in process and over
    the wire); an announced floor under 5, not whole or absurdly large is refused."""
    from jointcredit.client import vertical_scorecard_wire as sw
    from jointcredit.federation import vertical as v
    from jointcredit.models.vertical.scorecard import checks

    p = parties
    pk = public_key(key.public.to_bytes())
    maps = _pooled(p.platform_bins)
    for asked, announced in ((None, None), (2, 5), (9, 9)):
        platform = ScorecardFeatureParty(p.platform, p.platform_bins, pk, pair_min_rows=asked)
        pairs = platform.coarse(maps)
        assert pairs.min_rows == announced
        back = sw.pairs_from(sw.pairs_arrays(pairs), [len(set(m.tolist())) for m in maps])
        assert back.min_rows == announced and checks.pair_floor(back.min_rows) == announced
    for bad in (3, -1, 10**7, 5.0, True):
        with pytest.raises(ValueError, match="pair-min-rows"):
            checks.pair_floor(bad)
    arrays = sw.pairs_arrays(pairs)
    arrays[v.PAIR_FLOOR] = np.array([5, 5], np.int64)
    with pytest.raises(ValueError, match="one value"):
        sw.pairs_from(arrays, [len(set(m.tolist())) for m in maps])
    platform = _platform(p, key)
    hostile = Hostile(platform, pairs=lambda t: replace(t, min_rows=4))
    with pytest.raises(ValueError, match="pair-min-rows 4 outside"):
        _train(p, key, hostile)
