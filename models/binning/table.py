"""The binning as a whole: fine classing, counts, coarse classing, WOE and IV, and the IV
table that goes into the model artifact as `binning.json`.

The federation runs these steps as message rounds (`jointcredit.server.binning`): each
institution's histogram and counts are added up between the steps. `binning_from_rows` runs
the same steps on rows, one part per institution: its parts' sums are the same integers, so
with every institution's rows as the parts it gives the federation's table exactly, and with
one part it is the centralized twin (pooled rows) or one institution alone (local-only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from jointcredit.data.schema import Schema
from jointcredit.models.binning import grid
from jointcredit.models.binning.classing import coarse_bins, regroup
from jointcredit.models.binning.counts import BinCounts, add_counts, count_bins, woe_iv
from jointcredit.models.binning.spec import BinningSpec, CategoricalBins, NumericBins

BinKind = Literal["regular", "special", "missing"]


class BinRow(BaseModel):
    """One attribute (coarse bin) of a feature."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: int
    label: str
    kind: BinKind
    goods: int
    bads: int
    share: float  # of all training rows
    bad_rate: float | None  # None: no rows
    woe: float
    iv: float


class FeatureTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    type: Literal["numeric", "categorical"]
    monotone: Literal["none", "increasing", "decreasing"]
    iv: float
    bins: list[BinRow]


class Classing(BaseModel):
    """How the bins are made: the fine grid's digits, fine classing's most bins per numeric
    feature, coarse classing's smallest share of the rows per attribute."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    grid_digits: int = Field(default=grid.GRID_DIGITS, ge=1, le=4)
    fine_bins: int = Field(32, ge=2)
    min_bin_share: float = Field(0.05, gt=0, lt=0.5)


class BinningTable(BaseModel):
    """`binning.json`: how the federation binned, and the IV table per feature."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    rows: int
    goods: int
    bads: int
    classing: Classing
    bins: BinningSpec  # the coarse bins: what scoring applies
    features: list[FeatureTable]
    # Per numeric feature, the values its training rows covered, trimmed (`grid.span`); the
    # service refers applicants beyond it. Absent from artifacts written before it existed.
    spans: dict[str, tuple[float, float]] = Field(default_factory=dict)

    def feature(self, name: str) -> FeatureTable:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def _kinds(bins: NumericBins | CategoricalBins) -> list[BinKind]:
    regular: BinKind = "regular"
    special: BinKind = "special"
    missing: BinKind = "missing"
    return [regular] * bins.regular + [special] * (bins.n_bins - 1 - bins.regular) + [missing]


def iv_table(
    coarse: BinningSpec,
    counts: BinCounts,
    schema: Schema,
    classing: Classing,
) -> BinningTable:
    """The IV table of coarse bins with these (summed) counts."""
    counts.check(coarse)
    features: list[FeatureTable] = []
    rows = goods_total = 0
    for f in coarse.features:
        goods, bads = counts.arrays(f.name)
        rows, goods_total = int(goods.sum() + bads.sum()), int(goods.sum())
        woe, iv = woe_iv(goods, bads)
        n = goods + bads
        labels = f.labels()
        kinds = _kinds(f)
        features.append(
            FeatureTable(
                name=f.name,
                type=f.kind,
                monotone=schema.features[f.name].monotone,
                iv=float(iv.sum()),
                bins=[
                    BinRow(
                        code=i,
                        label=labels[i],
                        kind=kinds[i],
                        goods=int(goods[i]),
                        bads=int(bads[i]),
                        share=float(n[i] / rows) if rows else 0.0,
                        bad_rate=float(bads[i] / n[i]) if n[i] else None,
                        woe=float(woe[i]),
                        iv=float(iv[i]),
                    )
                    for i in range(f.n_bins)
                ],
            )
        )
    return BinningTable(
        rows=rows,
        goods=goods_total,
        bads=rows - goods_total,
        classing=classing,
        bins=coarse,
        features=features,
    )


def classify(
    fine: BinningSpec,
    counts: BinCounts,
    schema: Schema,
    classing: Classing,
    histogram: grid.GridHistogram | None = None,
) -> BinningTable:
    """Coarse classing of fine bins with the federation's counts, and its IV table; with the
    summed `histogram` the fine bins came from, the training spans too."""
    coarse = coarse_bins(fine, counts, schema, min_share=classing.min_bin_share)
    table = iv_table(coarse, regroup(fine, coarse, counts), schema, classing)
    if histogram is None:
        return table
    return table.model_copy(update={"spans": grid.spans(histogram)})


def binning_from_rows(
    parts: Sequence[tuple[pd.DataFrame, np.ndarray]],
    schema: Schema,
    vocabularies: Mapping[str, Sequence[str]],
    classing: Classing,
) -> BinningTable:
    """Every step on rows: `parts` are (features, labels) per institution (module docstring)."""
    digits = classing.grid_digits
    histogram = grid.merge_histograms([grid.grid_histogram(x, schema, digits) for x, _ in parts])
    fine = grid.fine_bins(histogram, schema, vocabularies, max_bins=classing.fine_bins)
    counts = add_counts([count_bins(x, y, fine) for x, y in parts])
    return classify(fine, counts, schema, classing, histogram)
