"""INTERIM: where the trees' bins come from until the federated binning
(`jointcredit.models.binning`: mergeable quantile sketches agreed at the coordinator) is
merged. Everything outside this module reaches it through `agree_bins` and the `TreeBins`
methods the binning spec will offer too (`codes`, `layout`, `to_json`, `digest`), so the
swap replaces this module and one call.

No rows are pooled: the bins come from the federation's agreed preprocessing (per numeric
feature the mean and standard deviation of its transformed values, per categorical feature
its agreed vocabulary). Numeric edges sit at the normal quantiles of those two moments, on
the transformed scale, mapped back to raw values: equal-frequency bins for a feature whose
transformed values are roughly normal, coarser ones elsewhere. Categorical levels keep their
vocabulary, with one bin for every other value. Every feature gets a last bin for missing.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from jointcredit.models.preprocessing import CategoricalFeature, NumericFeature, PreprocessingSpec
from jointcredit.models.trees.params import BinLayout


class FeatureBins(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["numeric", "categorical"]
    edges: list[float] = []  # numeric: code i holds edges[i-1] < value <= edges[i]
    levels: list[str] = []  # categorical: code i is levels[i]; then every other value

    @property
    def n_bins(self) -> int:
        ordered = len(self.edges) + 1 if self.kind == "numeric" else len(self.levels) + 1
        return ordered + 1  # + missing

    @property
    def missing_code(self) -> int:
        return self.n_bins - 1

    def codes(self, col: pd.Series) -> np.ndarray:
        miss = col.isna().to_numpy()
        if self.kind == "numeric":
            values = col.to_numpy(dtype="float64")
            out = np.searchsorted(np.asarray(self.edges), np.nan_to_num(values), side="left")
        else:
            index = {v: i for i, v in enumerate(self.levels)}
            other = len(self.levels)
            out = np.fromiter((index.get(v, other) for v in col.astype(object)), np.int64)
        out = np.asarray(out, dtype=np.int64)
        out[miss] = self.missing_code
        return out


class TreeBins(BaseModel):
    """Per feature (schema order), how raw values become bin codes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    features: list[FeatureBins]

    def codes(self, x: pd.DataFrame) -> np.ndarray:
        """(rows, features) uint16 codes."""
        out = np.empty((len(x), len(self.features)), dtype=np.uint16)
        for j, f in enumerate(self.features):
            out[:, j] = f.codes(x[f.name])
        return out

    def layout(self) -> BinLayout:
        return BinLayout(
            tuple(f.n_bins for f in self.features), tuple(f.missing_code for f in self.features)
        )

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> str:
        return self._json

    def digest(self) -> str:
        return self._digest

    # Cached: every tree level's request looks the bins up by digest.
    @cached_property
    def _json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._json.encode()).hexdigest()


def _inverse(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        out: np.ndarray = np.sign(values) * np.expm1(np.abs(values))
        return out
    return values


def agree_bins(spec: PreprocessingSpec, max_bins: int) -> TreeBins:
    """The interim bins: at most `max_bins` ordered bins per numeric feature."""
    z = np.array([NormalDist().inv_cdf(i / max_bins) for i in range(1, max_bins)])
    features: list[FeatureBins] = []
    for f in spec.features:
        if isinstance(f, NumericFeature):
            edges: list[float] = []
            if f.std > 0:
                raw = _inverse(f.mean + f.std * z, f.transform)
                edges = sorted({float(e) for e in raw if np.isfinite(e)})
            features.append(FeatureBins(name=f.name, kind="numeric", edges=edges))
        elif isinstance(f, CategoricalFeature):
            features.append(FeatureBins(name=f.name, kind="categorical", levels=f.categories))
        else:
            raise ValueError(f"{f.name}: trees bin raw values, not a WOE encoding")
    return TreeBins(features=features)
