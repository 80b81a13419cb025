"""WOE encoding: a feature of the agreed preprocessing that becomes one model input, its bin's
weight of evidence, standardised with the federation's counts.

    input = (WOE[bin(value)] - center) / scale

`center` and `scale` are the mean and standard deviation of WOE over the training rows, both
exact from the summed bin counts; standardising is an affine change of the column, so the
logistic regression on it is the same model as on raw WOE (and its points table the same),
but plain SGD, the federation's recipe, is better conditioned. Unlike the numeric and one-hot
encodings nothing is clipped: the column takes one of a few known values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from jointcredit.models.binning.spec import OTHER, CategoricalBins, FeatureBins, NumericBins
from jointcredit.models.binning.table import BinningTable


class WoeFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["woe"] = "woe"
    name: str
    bins: FeatureBins
    woe: list[float]  # per bin code
    rows: list[int]  # training rows per bin code (the federation's)
    center: float
    scale: float

    @model_validator(mode="after")
    def _valid(self) -> WoeFeature:
        if not len(self.woe) == len(self.rows) == self.bins.n_bins:
            raise ValueError(f"{self.name}: one WOE and one row count per bin")
        if not self.scale > 0:
            raise ValueError(f"{self.name}: the WOE scale must be positive")
        return self

    @property
    def width(self) -> int:
        """Model inputs this feature becomes: one."""
        return 1

    @property
    def numeric(self) -> bool:
        return isinstance(self.bins, NumericBins)

    @property
    def values(self) -> np.ndarray:
        """The model input each bin code encodes to."""
        out: np.ndarray = (np.asarray(self.woe) - self.center) / self.scale
        return out

    @property
    def inputs(self) -> np.ndarray:
        """`values` exactly as the model reads them (the design matrix is float32), in
        float64: what points and reasons are computed from, so they add up to the model's
        log-odds to float64 rounding."""
        out: np.ndarray = self.values.astype(np.float32).astype(np.float64)
        return out

    def encoder(self) -> WoeEncoder:
        return WoeEncoder(self.name, self.bins, self.values, self.values.tolist())

    def representative(self, code: int) -> float | str | None:
        """A value that falls in bin `code` (the service's probes and examples)."""
        bins = self.bins
        if code == bins.missing_code:
            return None
        if isinstance(bins, NumericBins):
            if code >= bins.regular:
                return bins.special[code - bins.regular]
            if not bins.edges:
                return 0.0
            if code > 0:
                return bins.edges[code - 1]
            first = bins.edges[0]
            return first / 2 if first > 0 else first - 1
        group = [level for level in bins.groups[code] if level != OTHER]
        return group[0] if group else None

    def typical(self) -> float | str | None:
        """A value of the bin that holds the most training rows (missing aside)."""
        named = [c for c in range(self.bins.missing_code) if self.representative(c) is not None]
        if not named:
            return None
        return self.representative(max(named, key=lambda c: (self.rows[c], -c)))


@dataclass(frozen=True)
class WoeEncoder:
    """A feature's bin, then its table value: one value in plain Python (`one`), a column in
    numpy (`many`), the same definition (`jointcredit.models.binning.spec`)."""

    name: str
    bins: NumericBins | CategoricalBins
    table: np.ndarray  # bin code -> model input
    rows: list[float]  # the same, as Python floats

    def one(self, value: object, out: list[float]) -> None:
        out.append(self.rows[self.bins.code(value)])

    def many(self, col: np.ndarray, out: np.ndarray, at: int) -> int:
        out[:, at] = self.table[self.bins.codes(col)]
        return at + 1


def woe_features(table: BinningTable) -> list[WoeFeature]:
    """One WOE input per feature of a binning table, standardised with its counts."""
    out: list[WoeFeature] = []
    for bins, f in zip(table.bins.features, table.features, strict=True):
        woe = np.array([b.woe for b in f.bins])
        rows = np.array([b.goods + b.bads for b in f.bins], dtype=np.float64)
        total = rows.sum()
        center = float(rows @ woe / total) if total else 0.0
        spread = math.sqrt(float(rows @ (woe - center) ** 2 / total)) if total else 0.0
        out.append(
            WoeFeature(
                name=f.name,
                bins=bins,
                woe=woe.tolist(),
                rows=[int(r) for r in rows],
                center=center,
                # A feature in one bin carries nothing: any positive scale encodes it as 0.
                scale=spread if spread > 1e-12 else 1.0,
            )
        )
    return out
