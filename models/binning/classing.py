"""Coarse classing: adjacent fine bins merged into the scorecard's attributes.

Rules, per feature, on the federation's summed counts (special values and missing keep their
own bins, never merged):
1. numeric features whose schema says `monotone`: adjacent bins are pooled until the bad rate
   runs one way (pool-adjacent-violators): `increasing` means the risk of default rises with
   the value, so the bad rate never falls from one bin to the next and WOE never rises;
   `decreasing` the reverse;
2. then, while a bin holds fewer than `min_share` of the rows (or no goods, or no bads, so
   that it would have no WOE), the smallest such bin is merged into the neighbour whose bad
   rate is closest (merging neighbours keeps a monotone sequence monotone).
Categorical levels have no order: they are sorted by bad rate first, then rule 2 groups
neighbours of similar risk.

Written here rather than taken from optbinning: its optimal binning searches for the bins of
highest IV with a constraint solver (OR-Tools, CVXPY), fits on rows rather than on counts, and
is not this documented, deterministic merge; the WOE and IV it reports follow the same
conventions as `counts.woe_iv`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from jointcredit.data.schema import Schema
from jointcredit.models.binning.counts import BinCounts
from jointcredit.models.binning.spec import BinningSpec, CategoricalBins, NumericBins


@dataclass
class _Run:
    """Adjacent fine bins [start, stop) merged into one, with their counts."""

    start: int
    stop: int
    goods: int
    bads: int

    @property
    def rows(self) -> int:
        return self.goods + self.bads

    def rate(self, fallback: Fraction) -> Fraction:
        return Fraction(self.bads, self.rows) if self.rows else fallback

    def __add__(self, other: _Run) -> _Run:
        return _Run(self.start, other.stop, self.goods + other.goods, self.bads + other.bads)


def _pool_violators(runs: list[_Run], direction: int, fallback: Fraction) -> list[_Run]:
    """Merge adjacent runs until the bad rate is monotone (`direction` +1: non-decreasing)."""
    out: list[_Run] = []
    for run in runs:
        out.append(run)
        while len(out) > 1 and direction * (out[-2].rate(fallback) - out[-1].rate(fallback)) > 0:
            last = out.pop()
            out[-1] = out[-1] + last
    return out


def _merge_small(runs: list[_Run], min_rows: int, fallback: Fraction) -> list[_Run]:
    """Merge the smallest short run (fewer than `min_rows` rows, or one class missing) into
    its neighbour of closest bad rate, until none is left or one run remains."""
    runs = list(runs)
    while len(runs) > 1:
        short = [i for i, r in enumerate(runs) if r.rows < min_rows or r.goods == 0 or r.bads == 0]
        if not short:
            break
        i = min(short, key=lambda k: (runs[k].rows, k))
        rate = runs[i].rate(fallback)
        neighbours = [k for k in (i - 1, i + 1) if 0 <= k < len(runs)]
        # Closest bad rate; ties to the smaller neighbour, then the left one.
        k = min(neighbours, key=lambda n: (abs(runs[n].rate(fallback) - rate), runs[n].rows, n))
        lo, hi = min(i, k), max(i, k)
        runs[lo : hi + 1] = [runs[lo] + runs[hi]]
    return runs


def _coarse_numeric(
    fine: NumericBins, goods: np.ndarray, bads: np.ndarray, monotone: str, min_rows: int
) -> NumericBins:
    fallback = Fraction(int(bads.sum()), max(int(goods.sum() + bads.sum()), 1))
    runs = [_Run(i, i + 1, int(goods[i]), int(bads[i])) for i in range(fine.regular)]
    if monotone != "none":
        runs = _pool_violators(runs, 1 if monotone == "increasing" else -1, fallback)
    runs = _merge_small(runs, min_rows, fallback)
    # Run [start, stop) spans edges[start - 1] .. edges[stop - 1]: the runs' inner boundaries.
    edges = [fine.edges[r.stop - 1] for r in runs[:-1]]
    return NumericBins(name=fine.name, edges=edges, special=fine.special)


def _coarse_categorical(
    fine: CategoricalBins, goods: np.ndarray, bads: np.ndarray, min_rows: int
) -> CategoricalBins:
    fallback = Fraction(int(bads.sum()), max(int(goods.sum() + bads.sum()), 1))
    singles = [_Run(i, i + 1, int(goods[i]), int(bads[i])) for i in range(fine.regular)]
    order = sorted(range(fine.regular), key=lambda i: (singles[i].rate(fallback), i))
    # Runs over positions in the risk order, so `_merge_small` merges neighbours in risk.
    runs = [_Run(p, p + 1, singles[i].goods, singles[i].bads) for p, i in enumerate(order)]
    groups = []
    for r in _merge_small(runs, min_rows, fallback):
        members = sorted(order[r.start : r.stop])
        groups.append([level for i in members for level in fine.groups[i]])
    return CategoricalBins(name=fine.name, groups=groups)


def min_rows_for(rows: int, min_share: float) -> int:
    """The fewest rows a coarse bin may hold: `min_share` of them, rounded up."""
    # From the decimal text: 0.05 of 1000 rows is 50, not the 51 of the nearest double.
    return max(1, math.ceil(Fraction(repr(min_share)) * rows))


def coarse_bins(
    fine: BinningSpec, counts: BinCounts, schema: Schema, *, min_share: float
) -> BinningSpec:
    """The coarse bins (this module's rules) of fine bins with these summed counts."""
    counts.check(fine)
    out: list[NumericBins | CategoricalBins] = []
    for f in fine.features:
        goods, bads = counts.arrays(f.name)
        min_rows = min_rows_for(int(goods.sum() + bads.sum()), min_share)
        if isinstance(f, NumericBins):
            out.append(_coarse_numeric(f, goods, bads, schema.features[f.name].monotone, min_rows))
        else:
            out.append(_coarse_categorical(f, goods, bads, min_rows))
    return BinningSpec(features=out)


def regroup(fine: BinningSpec, coarse: BinningSpec, counts: BinCounts) -> BinCounts:
    """Fine-bin counts summed into the coarse bins (each coarse bin is a union of fine ones:
    no second pass over rows)."""
    goods: dict[str, list[int]] = {}
    bads: dict[str, list[int]] = {}
    for f, c in zip(fine.features, coarse.features, strict=True):
        target = merge_map(f, c)
        g, b = counts.arrays(f.name)
        goods[f.name] = np.bincount(target, weights=g, minlength=c.n_bins).astype(int).tolist()
        bads[f.name] = np.bincount(target, weights=b, minlength=c.n_bins).astype(int).tolist()
    return BinCounts(goods=goods, bads=bads)


def merge_map(
    fine: NumericBins | CategoricalBins, coarse: NumericBins | CategoricalBins
) -> np.ndarray:
    """For each fine code of a feature, the coarse code `coarse_bins` merged it into."""
    if isinstance(fine, NumericBins) and isinstance(coarse, NumericBins):
        # A fine bin's lowest value is its lower edge (bin 0: below everything).
        lows: Sequence[float] = [-np.inf, *fine.edges]
        regular = [int(np.searchsorted(coarse.edges, lo, side="right")) for lo in lows]
        shift = coarse.regular - fine.regular
        specials = [fine.regular + s + shift for s in range(len(fine.special))]
        return np.array([*regular, *specials, coarse.missing_code], dtype=np.int64)
    if isinstance(fine, CategoricalBins) and isinstance(coarse, CategoricalBins):
        regular = [coarse.index[group[0]] for group in fine.groups]
        return np.array([*regular, coarse.missing_code], dtype=np.int64)
    raise ValueError(f"{fine.name}: fine and coarse bins of different kinds")
