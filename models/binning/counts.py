"""Good/bad counts per bin, and the weight of evidence and information value they give.

Each institution counts its own training rows per bin (`count_bins`); the coordinator adds
the counts up (`add_counts`, exact integer sums), so every statistic below is the pooled
rows' statistic on the same bins.

Conventions (those of optbinning, the field's reference library): good = the label's
negative class (repaid), bad = the positive class (default);

    WOE_i = ln( (good_i / goods) / (bad_i / bads) )       higher: safer than average
    IV_i  = (good_i / goods - bad_i / bads) * WOE_i        IV = sum over the bins

and a bin without goods or without bads (empty special or missing bins, mostly) has WOE 0 and
IV 0: it carries no estimate, so it scores as the average applicant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from jointcredit.models.binning.spec import BinningSpec, bin_codes


class BinCounts(BaseModel):
    """Per feature (in the spec's order), good and bad rows per bin code."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    goods: dict[str, list[int]]
    bads: dict[str, list[int]]

    @model_validator(mode="after")
    def _valid(self) -> BinCounts:
        if list(self.goods) != list(self.bads):
            raise ValueError("goods and bads cover different features")
        for name, g in self.goods.items():
            b = self.bads[name]
            if len(g) != len(b) or min(g + b, default=0) < 0:
                raise ValueError(f"{name}: counts must be non-negative, one per bin")
        return self

    def check(self, spec: BinningSpec) -> None:
        """Raise ValueError unless these are counts on `spec`'s bins."""
        names = [f.name for f in spec.features]
        if list(self.goods) != names:
            raise ValueError(f"counts for {list(self.goods)}, bins for {names}")
        for f in spec.features:
            if len(self.goods[f.name]) != f.n_bins:
                raise ValueError(f"{f.name}: {len(self.goods[f.name])} counts for {f.n_bins} bins")

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.goods[name], np.int64), np.asarray(self.bads[name], np.int64)


def count_bins(x: pd.DataFrame, y: np.ndarray, spec: BinningSpec) -> BinCounts:
    """One institution's counts of its own training rows (`y`: 1 = bad)."""
    codes = bin_codes(x, spec)
    bad = np.asarray(y).astype(bool)
    goods: dict[str, list[int]] = {}
    bads: dict[str, list[int]] = {}
    for j, f in enumerate(spec.features):
        goods[f.name] = np.bincount(codes[~bad, j], minlength=f.n_bins).tolist()
        bads[f.name] = np.bincount(codes[bad, j], minlength=f.n_bins).tolist()
    return BinCounts(goods=goods, bads=bads)


def add_counts(parts: Sequence[BinCounts]) -> BinCounts:
    """The federation's counts: the institutions' added bin by bin."""
    if not parts:
        raise ValueError("no counts to add")
    names = list(parts[0].goods)
    if any(list(p.goods) != names for p in parts):
        raise ValueError("counts over different features")

    def total(side: str, name: str) -> list[int]:
        vectors = [np.asarray(getattr(p, side)[name], np.int64) for p in parts]
        if len({len(v) for v in vectors}) != 1:
            raise ValueError(f"{name}: counts over different bins")
        return [int(v) for v in np.sum(vectors, axis=0)]

    return BinCounts(
        goods={n: total("goods", n) for n in names}, bads={n: total("bads", n) for n in names}
    )


def woe_iv(goods: np.ndarray, bads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bin WOE and IV (this module's docstring), in float64."""
    g = np.asarray(goods, dtype=np.float64)
    b = np.asarray(bads, dtype=np.float64)
    woe = np.zeros(len(g))
    iv = np.zeros(len(g))
    both = (g > 0) & (b > 0)
    if g.sum() > 0 and b.sum() > 0:
        pg, pb = g[both] / g.sum(), b[both] / b.sum()
        woe[both] = np.log(pg / pb)
        iv[both] = (pg - pb) * woe[both]
    return woe, iv


def counts_vector(counts: BinCounts) -> np.ndarray:
    """Dense: per feature (in order) its goods per bin, then its bads (secure aggregation
    sums fixed-length vectors)."""
    parts = [
        np.asarray(side[n], np.int64) for n in counts.goods for side in (counts.goods, counts.bads)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def counts_from_vector(vector: np.ndarray, spec: BinningSpec) -> BinCounts:
    """The counts of a dense vector (`counts_vector`'s layout) on `spec`'s bins."""
    expected = 2 * sum(f.n_bins for f in spec.features)
    if vector.shape != (expected,):
        raise ValueError(f"a counts vector of shape {vector.shape}, expected {expected}")
    goods: dict[str, list[int]] = {}
    bads: dict[str, list[int]] = {}
    at = 0
    for f in spec.features:
        goods[f.name] = [int(v) for v in vector[at : at + f.n_bins]]
        bads[f.name] = [int(v) for v in vector[at + f.n_bins : at + 2 * f.n_bins]]
        at += 2 * f.n_bins
    return BinCounts(goods=goods, bads=bads)
