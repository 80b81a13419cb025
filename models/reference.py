"""The training reference distribution (`reference.json` in the signed artifact): how the
federation's training rows spread over score bands and over each feature's bins, as counts.

Stability monitoring compares the applicants a service scores with it (PSI of the score, CSI
of each feature: `stability_index`). The counts are summed across institutions after
training: each counts its own training rows (`count_rows`) with the final global model and a
bin layout every institution knows (`reference_bins`), and only the counts leave.

Layout of the counts, as one vector (what a secure sum adds up): the score bands first, then
each feature's bins in `bins.features` order (regular bins, one per special value, missing
last: `jointcredit.models.binning.spec`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

from jointcredit.models.binning.spec import OTHER, BinningSpec, CategoricalBins, NumericBins
from jointcredit.models.binning.table import BinningTable
from jointcredit.models.preprocessing import CategoricalFeature, NumericFeature, PreprocessingSpec

REFERENCE = "reference.json"
# Score bands on the 350-950 scale: [350, 450), [450, 500), ..., [850, 950]. Fixed, so two
# models' monitoring reads alike; 50 points is one doubling of the odds at the default scale.
SCORE_EDGES = (450, 500, 550, 600, 650, 700, 750, 800, 850)
# Without a model's own bins, a numeric feature's edges sit at these many standard deviations
# from its federated mean (on the feature's transformed scale): 8 regular bins, the outer two
# about 7 % of a normal feature's rows each.
Z_EDGES = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
# PSI's log term is undefined for an empty bin: a share below this counts as this.
EPSILON = 1e-4
STABLE, WATCH = 0.1, 0.25  # < 0.1 stable, 0.1-0.25 watch, > 0.25 act
Band = str  # "stable" | "watch" | "act"


class Reference(BaseModel):
    """`reference.json`: the federation's training rows per score band and per feature bin."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    institutions: list[str] = []  # whose training rows the counts cover
    rows: int
    score_edges: list[int]
    score_counts: list[int]
    bins: BinningSpec
    feature_counts: dict[str, list[int]]

    @model_validator(mode="after")
    def _valid(self) -> Reference:
        if len(self.score_counts) != len(self.score_edges) + 1:
            raise ValueError("score_counts needs one count per band (len(score_edges) + 1)")
        if sorted(self.feature_counts) != sorted(self.bins.names):
            raise ValueError("feature_counts must name exactly the binned features")
        for f in self.bins.features:
            if len(self.feature_counts[f.name]) != f.n_bins:
                raise ValueError(f"{f.name}: {f.n_bins} bins, counts for a different number")
        totals = {sum(self.score_counts), *(sum(c) for c in self.feature_counts.values())}
        if totals != {self.rows} or any(
            c < 0
            for c in (*self.score_counts, *(x for v in self.feature_counts.values() for x in v))
        ):
            raise ValueError(
                f"every band and feature's counts must be non-negative, sum {self.rows}"
            )
        return self

    @classmethod
    def from_vector(
        cls, vector: np.ndarray, bins: BinningSpec, institutions: Sequence[str] = ()
    ) -> Reference:
        """The reference from its counts vector (layout: module docstring)."""
        values = [int(v) for v in np.asarray(vector).ravel()]
        if len(values) != vector_length(bins):
            raise ValueError(
                f"a reference vector has {vector_length(bins)} counts, not {len(values)}"
            )
        bands = len(SCORE_EDGES) + 1
        counts: dict[str, list[int]] = {}
        at = bands
        for f in bins.features:
            counts[f.name] = values[at : at + f.n_bins]
            at += f.n_bins
        return cls(
            institutions=list(institutions),
            rows=sum(values[:bands]),
            score_edges=list(SCORE_EDGES),
            score_counts=values[:bands],
            bins=bins,
            feature_counts=counts,
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def vector_length(bins: BinningSpec) -> int:
    return len(SCORE_EDGES) + 1 + sum(f.n_bins for f in bins.features)


def score_bands(scores: np.ndarray, edges: Sequence[int] = SCORE_EDGES) -> np.ndarray:
    """Each score's band index (band k: [edges[k-1], edges[k]))."""
    return np.searchsorted(np.asarray(edges), np.asarray(scores), side="right")


def reference_bins(
    spec: PreprocessingSpec, binning: BinningTable | None = None, bins: BinningSpec | None = None
) -> BinningSpec:
    """The bins a reference counts features in: the model's own (a tree ensemble's agreed
    bins, the binned scorecard's coarse bins), else bins from the agreed preprocessing:
    numeric edges at `Z_EDGES` standard deviations around the federated mean, one bin per
    agreed category plus one for every other value; always a missing bin, and one per special
    value."""
    if bins is not None:
        return bins
    if binning is not None:
        return binning.bins
    features: list[NumericBins | CategoricalBins] = []
    for f in spec.features:
        if isinstance(f, NumericFeature):
            features.append(NumericBins(name=f.name, edges=_edges(f), special=f.special))
        elif isinstance(f, CategoricalFeature):
            groups = [[c] for c in f.categories if c != OTHER] + [[OTHER]]
            features.append(CategoricalBins(name=f.name, groups=groups))
        else:
            raise ValueError(f"{f.name}: a WOE feature's bins come with its binning table")
    return BinningSpec(features=features)


def _edges(f: NumericFeature) -> list[float]:
    points = [f.mean + z * f.std for z in Z_EDGES] if f.std > 0 else [f.mean]
    if f.transform == "log1p":
        points = [math.expm1(p) for p in points]
    edges: list[float] = []
    for p in points:  # distinct and finite (a tiny std can collapse neighbours)
        if math.isfinite(p) and (not edges or p > edges[-1]):
            edges.append(p)
    return edges


def count_rows(
    scores: np.ndarray, x: pd.DataFrame | Mapping[str, Sequence[object]], bins: BinningSpec
) -> np.ndarray:
    """One institution's counts vector (layout: module docstring) for its rows' scores and
    features."""
    bands = np.bincount(score_bands(scores), minlength=len(SCORE_EDGES) + 1)
    codes = bins.codes(x)
    parts = [bands] + [
        np.bincount(codes[:, j].astype(np.int64), minlength=f.n_bins)
        for j, f in enumerate(bins.features)
    ]
    return np.concatenate(parts).astype(np.int64)


def stability_index(
    expected: Sequence[int] | np.ndarray, actual: Sequence[int] | np.ndarray, eps: float = EPSILON
) -> float:
    """PSI (of the score) or CSI (of a feature): sum over bins of (a - e) * ln(a / e), with a
    and e the bin's share of the actual and expected counts, each at least `eps`. NaN when
    either side has no rows."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"{e.shape} expected bins against {a.shape} actual ones")
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    pe = np.maximum(e / e.sum(), eps)
    pa = np.maximum(a / a.sum(), eps)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def band(value: float) -> Band:
    """< 0.1 stable, 0.1-0.25 watch, > 0.25 act; NaN (no applicants yet): stable."""
    if not value >= STABLE:
        return "stable"
    return "watch" if value <= WATCH else "act"
