"""Fine classing without pooling rows: count histograms over one agreed fine grid.

Every institution counts its own training values of each numeric feature in the cells of a
grid that every party builds the same way from one number (`digits`), without looking at
any data: the cell boundaries are 0 and +-m x 10^e for every m with `digits` significant
digits (3: 1.00, 1.01, ..., 9.99) and 10^-6 <= |boundary| < 10^10; a cell holds the values
from its boundary up to the next. The coordinator adds the institutions' counts up (exact
integer sums: the same histogram as the pooled rows would give) and puts the fine edges at
the merged quantiles (`fine_edges`), always on cell boundaries, so an edge reads as a round
number (`< 2`, `>= 150000`) and splits the rows exactly where the pooled rows' histogram would.

Why a grid and not a quantile sketch (KLL from Apache DataSketches, optbinning's GK sketch):
counts over a fixed grid add up exactly, so the federation's edges equal the pooled rows'
edges on the same grid, the same run gives the same edges (KLL's compaction draws random
bits the Python package does not let us seed), and a histogram is a fixed-length vector of
counts, which secure aggregation can sum, whereas a sketch keeps individual rows' values.
The price: edges are only as fine as the grid (under 1 % apart with 3 digits), and values
of magnitude below 10^-6 share the cell at 0. What a histogram reveals: docs/PRIVACY.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from jointcredit.data.schema import Schema
from jointcredit.models.binning.spec import OTHER, BinningSpec, CategoricalBins, NumericBins

GRID_DIGITS = 3
SMALLEST_EXPONENT = -6  # the grid's smallest positive boundary: 10^-6
LARGEST_EXPONENT = 9  # and its largest: 9.99 x 10^9


@cache
def grid(digits: int = GRID_DIGITS) -> np.ndarray:
    """The ascending cell boundaries. Each is parsed from its decimal text, so it is the
    double nearest the round number (0.35 is the 0.35 a person types), on every machine."""
    if not 1 <= digits <= 4:
        raise ValueError(f"grid digits must be 1 to 4, not {digits}")
    mantissas = range(10 ** (digits - 1), 10**digits)
    positive = [
        float(f"{m}e{e - digits + 1}")
        for e in range(SMALLEST_EXPONENT, LARGEST_EXPONENT + 1)
        for m in mantissas
    ]
    return np.array([-x for x in reversed(positive)] + [0.0] + positive)


def cells(values: np.ndarray, digits: int = GRID_DIGITS) -> np.ndarray:
    """Each value's cell: the number of boundaries at or below it (0: below every one)."""
    out: np.ndarray = np.searchsorted(grid(digits), values, side="right")
    return out


class FeatureHistogram(BaseModel):
    """The occupied cells of one numeric feature and how many regular values (neither
    missing nor special) fell in each."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cells: list[int]
    counts: list[int]

    @model_validator(mode="after")
    def _valid(self) -> FeatureHistogram:
        if len(self.cells) != len(self.counts):
            raise ValueError("cells and counts differ in length")
        if any(b <= a for a, b in zip(self.cells, self.cells[1:], strict=False)):
            raise ValueError("cells must be strictly ascending")
        if any(c <= 0 for c in self.counts):
            raise ValueError("counts must be positive (only occupied cells are listed)")
        return self


class GridHistogram(BaseModel):
    """What one institution reveals for fine classing: per numeric feature, counts over the
    agreed grid. No labels, no rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    digits: int = Field(ge=1, le=4)
    features: dict[str, FeatureHistogram]

    def check(self, schema: Schema, digits: int) -> None:
        """Raise ValueError unless this answers the query (`digits`) for `schema`."""
        if self.digits != digits:
            raise ValueError(f"histogram on a {self.digits}-digit grid, {digits} asked")
        numeric = sorted(n for n, f in schema.features.items() if f.type == "numeric")
        if sorted(self.features) != numeric:
            raise ValueError(f"histogram features {sorted(self.features)}, expected {numeric}")
        top = len(grid(digits))
        for name, h in self.features.items():
            if h.cells and not 0 <= h.cells[0] <= h.cells[-1] <= top:
                raise ValueError(f"{name}: a cell outside the grid")


def regular_values(col: pd.Series | np.ndarray, special: Sequence[float]) -> np.ndarray:
    """A numeric column's values that are neither missing nor special."""
    v = np.asarray(col, dtype=np.float64)
    keep = ~np.isnan(v)
    for s in special:
        keep &= v != s
    out: np.ndarray = v[keep]
    return out


def grid_histogram(x: pd.DataFrame, schema: Schema, digits: int = GRID_DIGITS) -> GridHistogram:
    """An institution's histogram of its own training rows."""
    features: dict[str, FeatureHistogram] = {}
    for name, spec in schema.features.items():
        if spec.type != "numeric":
            continue
        occupied, counts = np.unique(
            cells(regular_values(x[name], spec.special), digits), return_counts=True
        )
        features[name] = FeatureHistogram(cells=occupied.tolist(), counts=counts.tolist())
    return GridHistogram(digits=digits, features=features)


def merge_histograms(histograms: Sequence[GridHistogram]) -> GridHistogram:
    """The federation's histogram: the institutions' counts added cell by cell."""
    if not histograms:
        raise ValueError("no histograms to merge")
    digits = histograms[0].digits
    if any(h.digits != digits for h in histograms):
        raise ValueError("histograms on different grids")
    merged: dict[str, FeatureHistogram] = {}
    for name in histograms[0].features:
        total: dict[int, int] = {}
        for h in histograms:
            f = h.features[name]
            for cell, count in zip(f.cells, f.counts, strict=True):
                total[cell] = total.get(cell, 0) + count
        occupied = sorted(total)
        merged[name] = FeatureHistogram(cells=occupied, counts=[total[c] for c in occupied])
    return GridHistogram(digits=digits, features=merged)


def fine_edges(histogram: FeatureHistogram, digits: int, max_bins: int) -> list[float]:
    """Up to `max_bins` - 1 edges at the histogram's quantiles i / max_bins: where a quantile
    falls in a cell, the whole cell stays below it and the edge is the next occupied cell's
    lower boundary (so each edge separates occupied cells; duplicates collapse)."""
    if max_bins < 2 or len(histogram.cells) < 2:
        return []
    counts = np.asarray(histogram.counts, dtype=np.int64)
    cum = np.cumsum(counts)
    # Integer arithmetic: target i is total * i / max_bins; the cell where cum reaches it.
    targets = np.arange(1, max_bins, dtype=np.int64) * int(cum[-1])
    at = np.searchsorted(cum * max_bins, targets, side="left")
    nxt = np.unique(at + 1)
    nxt = nxt[nxt < len(histogram.cells)]
    lower = np.asarray(histogram.cells, dtype=np.int64)[nxt] - 1  # cell c starts at grid[c-1]
    return [float(e) for e in grid(digits)[lower]]


# The training span's ends (`spans`): each leaves out at most this share of the rows, and at
# least TAIL_ROWS rows beyond it, so neither end is one borrower's value.
TAIL_SHARE = 0.001
TAIL_ROWS = 10


def span(histogram: FeatureHistogram, digits: int) -> tuple[float, float] | None:
    """The values the federation's rows of one feature covered, trimmed: from the lower
    boundary of the cell holding the k-th smallest value to the upper boundary of the cell
    holding the k-th largest, k = max(TAIL_ROWS, TAIL_SHARE of the rows). Fewer than k rows lie
    below (above) it, and the ends are grid boundaries like the fine edges, so no single row's
    value is revealed; None when the feature has too few rows to trim."""
    counts = np.asarray(histogram.counts, dtype=np.int64)
    total = int(counts.sum())
    k = max(TAIL_ROWS, int(np.ceil(TAIL_SHARE * total)))
    if total < 2 * k:
        return None
    cum = np.cumsum(counts)
    low_cell = histogram.cells[int(np.searchsorted(cum, k, side="left"))]
    high_cell = histogram.cells[int(np.searchsorted(cum, total - k + 1, side="left"))]
    boundaries = grid(digits)
    # Cell c holds [boundaries[c-1], boundaries[c]); the outermost cells are open-ended.
    low = float(boundaries[low_cell - 1]) if low_cell > 0 else -np.inf
    high = float(boundaries[high_cell]) if high_cell < len(boundaries) else np.inf
    return low, high


def spans(histogram: GridHistogram) -> dict[str, tuple[float, float]]:
    """`span` of every numeric feature that has one."""
    out = {name: span(h, histogram.digits) for name, h in histogram.features.items()}
    return {name: s for name, s in out.items() if s is not None}


def fine_bins(
    histogram: GridHistogram,
    schema: Schema,
    vocabularies: Mapping[str, Sequence[str]],
    *,
    max_bins: int,
) -> BinningSpec:
    """Fine classing: numeric edges from the (merged) histogram, the schema's special values;
    one bin per level of the agreed vocabulary, plus values outside it."""
    features: list[NumericBins | CategoricalBins] = []
    for name, spec in schema.features.items():
        if spec.type == "numeric":
            edges = fine_edges(histogram.features[name], histogram.digits, max_bins)
            features.append(NumericBins(name=name, edges=edges, special=list(spec.special)))
        else:
            levels = [c for c in vocabularies[name] if c != OTHER]
            groups = [[c] for c in levels] + [[OTHER]]
            features.append(CategoricalBins(name=name, groups=groups))
    return BinningSpec(features=features)


# Secure aggregation sums fixed-length vectors: a histogram as every cell of the grid, numeric
# features one after the other in the schema's order.


def _numeric(schema: Schema) -> list[str]:
    return [n for n, f in schema.features.items() if f.type == "numeric"]


def histogram_length(schema: Schema, digits: int = GRID_DIGITS) -> int:
    """The length of a histogram's dense vector: every cell, every numeric feature."""
    return len(_numeric(schema)) * (len(grid(digits)) + 1)


def histogram_vector(histogram: GridHistogram, schema: Schema) -> np.ndarray:
    """Dense counts over every cell of the grid, per numeric feature (schema order)."""
    width = len(grid(histogram.digits)) + 1
    names = _numeric(schema)
    out = np.zeros(len(names) * width, dtype=np.int64)
    for j, name in enumerate(names):
        h = histogram.features[name]
        out[j * width + np.asarray(h.cells, dtype=np.int64)] = h.counts
    return out


def histogram_from_vector(vector: np.ndarray, schema: Schema, digits: int) -> GridHistogram:
    """The histogram of a dense vector of counts (`histogram_vector`'s layout)."""
    width = len(grid(digits)) + 1
    names = [n for n, f in schema.features.items() if f.type == "numeric"]
    if vector.shape != (len(names) * width,):
        raise ValueError(
            f"a histogram vector of shape {vector.shape}, expected {len(names) * width}"
        )
    features: dict[str, FeatureHistogram] = {}
    for j, name in enumerate(names):
        block = vector[j * width : (j + 1) * width]
        occupied = np.flatnonzero(block)
        features[name] = FeatureHistogram(
            cells=occupied.tolist(), counts=[int(c) for c in block[occupied]]
        )
    return GridHistogram(digits=digits, features=features)
