"""Agreed bins: which bin every value of every feature falls in, one definition for the
federation, the centralized twin, the scorecard and the trees.

Code layout of one feature (what `bin_codes` returns, and what every count vector follows):

    numeric      0 .. k-1   regular values: bin i holds edges[i-1] <= v < edges[i]
                            (k = len(edges) + 1; bin 0 is everything below edges[0])
                 k .. k+s-1 one bin per special value (the schema's `special`, in its order)
                 k+s        missing (NaN / None): always the last code
    categorical  0 .. k-1   one bin per group of levels (fine classing: one level each); the
                            group holding `OTHER` also takes every value outside the groups
                 k          missing: always the last code

Regular bins come first, then special values, then missing as the last code, whatever the
feature: `n_bins(f)` and `missing_code(f)` say where they are.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from itertools import pairwise, repeat
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

OTHER = "__other__"  # the agreed vocabulary's bucket for values outside it (= preprocessing's)


class NumericBins(BaseModel):
    """A numeric feature's bins: ascending edges on the raw scale, then its special values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["numeric"] = "numeric"
    name: str
    edges: list[float]
    special: list[float] = []

    @model_validator(mode="after")
    def _valid(self) -> NumericBins:
        if any(not math.isfinite(e) for e in self.edges):
            raise ValueError(f"{self.name}: bin edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"{self.name}: bin edges must be strictly ascending")
        if len(set(self.special)) != len(self.special):
            raise ValueError(f"{self.name}: special values repeat")
        return self

    @property
    def regular(self) -> int:
        return len(self.edges) + 1

    @property
    def n_bins(self) -> int:
        return self.regular + len(self.special) + 1

    @property
    def missing_code(self) -> int:
        return self.n_bins - 1

    @cached_property
    def _special_code(self) -> dict[float, int]:
        return {s: self.regular + i for i, s in enumerate(self.special)}

    def code(self, value: object) -> int:
        """One value's bin, in plain Python (the service's one-applicant path)."""
        if value is None:
            return self.missing_code
        v = float(value)  # type: ignore[arg-type]
        if math.isnan(v):
            return self.missing_code
        special = self._special_code.get(v)
        if special is not None:
            return special
        return bisect.bisect_right(self.edges, v)

    def codes(self, values: np.ndarray) -> np.ndarray:
        """A column's bins (float64 values, NaN = missing)."""
        v = np.asarray(values, dtype=np.float64)
        out = np.searchsorted(np.asarray(self.edges, dtype=np.float64), v, side="right")
        for s, c in self._special_code.items():
            out[v == s] = c
        out[np.isnan(v)] = self.missing_code
        return out

    def labels(self) -> list[str]:
        """Every bin's label, in code order: `< 5`, `[5, 10)`, `>= 10`, `= 98`, `missing`."""
        e = [_number(x) for x in self.edges]
        if not e:
            regular = ["all values"]
        else:
            regular = [f"< {e[0]}", *(f"[{a}, {b})" for a, b in pairwise(e))]
            regular.append(f">= {e[-1]}")
        return [*regular, *(f"= {_number(s)}" for s in self.special), "missing"]


class CategoricalBins(BaseModel):
    """A categorical feature's bins: groups of levels (one level each before coarse
    classing); exactly one group holds `OTHER`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["categorical"] = "categorical"
    name: str
    groups: list[list[str]]

    @model_validator(mode="after")
    def _valid(self) -> CategoricalBins:
        levels = [level for group in self.groups for level in group]
        if len(set(levels)) != len(levels):
            raise ValueError(f"{self.name}: a level is in more than one bin")
        if OTHER not in levels:
            raise ValueError(f"{self.name}: no bin takes values outside the vocabulary")
        if any(not group for group in self.groups):
            raise ValueError(f"{self.name}: an empty group of levels")
        return self

    @property
    def regular(self) -> int:
        return len(self.groups)

    @property
    def n_bins(self) -> int:
        return self.regular + 1

    @property
    def missing_code(self) -> int:
        return self.n_bins - 1

    @cached_property
    def index(self) -> dict[str, int]:
        return {level: i for i, group in enumerate(self.groups) for level in group}

    @property
    def other_code(self) -> int:
        return self.index[OTHER]

    def code(self, value: object) -> int:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.missing_code
        code: int = self.index.get(value, self.other_code)  # type: ignore[call-overload]
        return code

    def codes(self, values: np.ndarray) -> np.ndarray:
        col = np.asarray(values, dtype=object)
        n = len(col)
        # map over dict.get runs in C: no Python frame per value.
        out = np.fromiter(map(self.index.get, col, repeat(self.other_code, n)), np.int64, n)
        out[pd.isna(col)] = self.missing_code
        return out

    def labels(self) -> list[str]:
        def name(level: str) -> str:
            return "other values" if level == OTHER else level

        return [", ".join(map(name, group)) for group in self.groups] + ["missing"]


FeatureBins = Annotated[NumericBins | CategoricalBins, Field(discriminator="kind")]


class BinningSpec(BaseModel):
    """Every feature's bins, in the schema's order; JSON-serialisable (model artifacts, the
    counts query)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    features: list[FeatureBins]

    @cached_property
    def by_name(self) -> dict[str, NumericBins | CategoricalBins]:
        return {f.name: f for f in self.features}

    def feature(self, feature: str | int) -> NumericBins | CategoricalBins:
        return self.features[feature] if isinstance(feature, int) else self.by_name[feature]

    def n_bins(self, feature: str | int) -> int:
        """Every code of the feature: regular bins, special values, missing."""
        return self.feature(feature).n_bins

    def missing_code(self, feature: str | int) -> int:
        """The feature's missing bin: always its last code (`n_bins - 1`)."""
        return self.feature(feature).missing_code

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        widest = max((f.n_bins for f in self.features), default=1)
        return np.uint8 if widest <= 256 else np.uint16

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def codes(self, data: pd.DataFrame | Mapping[str, Sequence[object] | np.ndarray]) -> np.ndarray:
        """`bin_codes(data, self)`."""
        return bin_codes(data, self)

    def codes_record(self, record: Mapping[str, object]) -> list[int]:
        """One record's codes (None: missing), as `bin_codes` gives them, in plain Python:
        the service's one-applicant path, where building arrays per call would dominate."""
        return [f.code(record[f.name]) for f in self.features]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what messages and digests carry."""
        return self._json

    def digest(self) -> str:
        """SHA-256 of `to_json()`: names the bins in messages that refer to them."""
        return hashlib.sha256(self._json.encode()).hexdigest()

    @cached_property
    def _json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def bin_codes(
    data: pd.DataFrame | Mapping[str, Sequence[object] | np.ndarray] | np.ndarray,
    spec: BinningSpec,
) -> np.ndarray:
    """(rows, features) bin codes, columns in `spec.features` order, uint8 when every feature
    has at most 256 codes, else uint16 (layout: this module's docstring).

    `data`: a DataFrame or a mapping of columns by feature name (numeric columns as numbers,
    NaN or None missing; categorical ones as text, None missing), or a 2-D array whose columns
    are the spec's features in order."""
    if isinstance(data, np.ndarray):
        if data.ndim != 2 or data.shape[1] != len(spec.features):
            raise ValueError(
                f"a matrix of bin inputs needs {len(spec.features)} columns, got {data.shape}"
            )
        columns: list[Any] = [data[:, j] for j in range(data.shape[1])]
    else:
        columns = [data[f.name] for f in spec.features]
    n = len(columns[0]) if columns else 0
    out = np.empty((n, len(spec.features)), dtype=spec.dtype)
    for j, (f, col) in enumerate(zip(spec.features, columns, strict=True)):
        if isinstance(f, NumericBins):
            out[:, j] = f.codes(_numbers(col))
        else:
            out[:, j] = f.codes(_objects(col))
    return out


def _numbers(col: pd.Series | Sequence[object] | np.ndarray) -> np.ndarray:
    """A numeric column as float64, missing (NaN, None, pd.NA) as NaN."""
    if isinstance(col, pd.Series):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.array(col, dtype=np.float64)  # None -> NaN


def _objects(col: pd.Series | Sequence[object] | np.ndarray) -> np.ndarray:
    """A categorical column as Python objects, missing as None or NaN."""
    if isinstance(col, pd.Series):
        return col.astype(object).where(col.notna(), None).to_numpy()
    return np.asarray(col, dtype=object)


def _number(x: float) -> str:
    """An edge as a person reads it: 5 not 5.0, 0.35 not 0.35000000000000003."""
    return f"{x:.12g}"
