"""Federated preprocessing: agreed from per-institution summaries, never from pooled rows.

Each institution summarises its own training rows (`summarize`): per numeric feature the count,
sum and sum of squares of the (transformed) values, the number missing and the number of each
of the schema's special codes (96 = "unknown": a code, never a magnitude); per categorical
feature the counts of its values, bounded (only values seen at least `min_count` times locally,
at most `max_categories` of them), so rare values never leave the institution. The server adds
the summaries up (`agree`) into a `PreprocessingSpec`: standardisation statistics, category
vocabularies, imputation values. The spec travels inside the model artifact, so scoring applies
exactly the transformation training used.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from jointcredit.data.schema import Schema
from jointcredit.models.binning.encoding import WoeEncoder, WoeFeature
from jointcredit.models.encoders import (
    CategoricalEncoder,
    NumericEncoder,
    apply_transform,
    standardise_indicator,
)

OTHER = "__other__"
MISSING = "__missing__"
CLIP = 5.0  # standardised values beyond +-5 sd are clipped: robust to outliers, keeps SGD stable
_FEW_ROWS = 16  # up to this many records, value by value beats numpy's per-call overhead


# --------------------------------------------------------------------------- summaries


class NumericSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int  # values that are neither missing nor special
    total: float
    total_sq: float
    missing: int
    special: list[int] = []  # rows holding each of the schema's special codes, in its order


class CategoricalSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    counts: dict[str, int]
    missing: int


class InstitutionSummary(BaseModel):
    """What one institution reveals to agree preprocessing: aggregates only."""

    model_config = ConfigDict(extra="forbid")
    rows: int
    positives: int
    numeric: dict[str, NumericSummary]
    categorical: dict[str, CategoricalSummary]


def summarize(
    x: pd.DataFrame, y: np.ndarray, schema: Schema, *, max_categories: int, min_count: int
) -> InstitutionSummary:
    numeric: dict[str, NumericSummary] = {}
    categorical: dict[str, CategoricalSummary] = {}
    for name, spec in schema.features.items():
        col = x[name]
        if spec.type == "numeric":
            raw = col.to_numpy(dtype="float64")
            present = ~np.isnan(raw) & ~spec.is_special(raw)
            v = apply_transform(raw[present], spec.transform)
            numeric[name] = NumericSummary(
                count=int(present.sum()),
                total=float(v.sum()),
                total_sq=float(np.square(v).sum()),
                missing=int(np.isnan(raw).sum()),
                special=[int((raw == code).sum()) for code in spec.special],
            )
        else:
            counts = col.dropna().value_counts()
            counts = counts[counts >= min_count]
            # Largest first, ties by value, so the bound is deterministic.
            top = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
            categorical[name] = CategoricalSummary(
                counts={str(k): int(v) for k, v in top[:max_categories]},
                missing=int(col.isna().sum()),
            )
    return InstitutionSummary(
        rows=len(y), positives=int(np.sum(y)), numeric=numeric, categorical=categorical
    )


# --------------------------------------------------------------------------- agreed spec


class NumericFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["numeric"] = "numeric"
    name: str
    transform: Literal["none", "log1p"] = "none"
    mean: float
    std: float
    impute: bool = False  # missing -> mean, plus a `<name>__missing` indicator column
    missing_rate: float | None = None  # set: the indicator column is standardised with it
    # Special codes (the schema's `special`): each -> the mean, plus its own indicator column
    # `<name>__special=<code>`, so the model learns what the code means instead of reading it
    # as a huge value. `special_rates` (set like missing_rate): each code's frequency.
    special: list[float] = []
    special_rates: list[float] | None = None

    @property
    def width(self) -> int:
        """Model inputs this feature becomes: value, [missing indicator], one per code."""
        return 1 + int(self.impute) + len(self.special)


class CategoricalFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["categorical"] = "categorical"
    name: str
    categories: list[str]
    impute: bool = False  # missing -> its own `__missing__` level
    # Set: federated frequency of each level (categories, __other__, [__missing__]); the one-hot
    # columns are then standardised, (indicator - p) / sqrt(p (1 - p)), so every input column
    # has unit variance. Plain SGD needs that: rare levels otherwise learn 100x slower.
    frequencies: list[float] | None = None

    @property
    def levels(self) -> list[str]:
        return [*self.categories, OTHER, *([MISSING] if self.impute else [])]

    @property
    def width(self) -> int:
        return len(self.levels)

    @cached_property
    def level_index(self) -> dict[str, int]:
        # Cached: the service transforms one applicant per call, rebuilding this each time
        # was a visible share of a decision.
        return {c: i for i, c in enumerate(self.levels)}


# WoeFeature: the scorecard's encoding, its bin's weight of evidence (models/binning).
Feature = Annotated[NumericFeature | CategoricalFeature | WoeFeature, Field(discriminator="kind")]


def numeric_input(f: NumericFeature | CategoricalFeature | WoeFeature) -> bool:
    """Whether a feature reads numbers (else text categories)."""
    return isinstance(f, NumericFeature) or (isinstance(f, WoeFeature) and f.numeric)


class PreprocessingSpec(BaseModel):
    """The agreed feature transformation; part of the model artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    features: list[Feature]
    clip: float = CLIP
    rows: int = 0  # training rows behind the statistics (informational)

    @property
    def output_names(self) -> list[str]:
        names: list[str] = []
        for f in self.features:
            if isinstance(f, NumericFeature):
                names.append(f.name)
                if f.impute:
                    names.append(f"{f.name}__missing")
                names.extend(f"{f.name}__special={code:g}" for code in f.special)
            elif isinstance(f, WoeFeature):
                names.append(f"{f.name}__woe")
            else:
                names.extend(f"{f.name}={c}" for c in f.levels)
        return names

    @cached_property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    # The transform has one definition, `_encoders`: each feature's encoding with its
    # parameters worked out once (standardisation, clip, indicator values, one-hot table). Each
    # encoder applies it to one value in plain Python floats (`one`) and to a column in numpy
    # (`many`): numpy's per-call overhead dominates at one row, Python's per-value loop at many.

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        """Rows -> float32 design matrix (columns in `output_names` order)."""
        columns: dict[str, np.ndarray] = {}
        for f in self.features:
            col = x[f.name]
            if numeric_input(f):
                columns[f.name] = col.to_numpy(dtype="float64")
            else:
                columns[f.name] = col.astype(object).where(col.notna(), None).to_numpy()
        return self._matrix(columns, len(x))

    def transform_rows(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """`transform` for records (dicts, None = missing), without building a DataFrame: a
        few go value by value, more as columns. The same matrix either way (tested)."""
        if len(rows) <= _FEW_ROWS:
            out = [self.transform_record(r) for r in rows]
            return np.array(out, dtype=np.float32).reshape(len(rows), self.n_outputs)
        return self.transform_columns({f.name: [r[f.name] for r in rows] for f in self.features})

    def transform_record(self, record: Mapping[str, object]) -> list[float]:
        """One record's row of the design matrix, in float64."""
        out: list[float] = []
        for encoder in self._encoders:
            encoder.one(record[encoder.name], out)
        return out

    def transform_columns(self, columns: Mapping[str, Sequence[object]]) -> np.ndarray:
        """`transform` for plain columns of Python values (None = missing), one per feature."""
        arrays: dict[str, np.ndarray] = {}
        n = len(columns[self.features[0].name]) if self.features else 0
        for f in self.features:
            values = columns[f.name]
            if numeric_input(f):
                arrays[f.name] = np.array(values, dtype="float64")  # None -> NaN
            else:
                arrays[f.name] = np.array(values, dtype=object)
        return self._matrix(arrays, n)

    def _matrix(self, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        # Filled in place, block by block: stacking float64 blocks and casting at the end held
        # several copies of the full training data at once.
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        at = 0
        for encoder in self._encoders:
            at = encoder.many(columns[encoder.name], out, at)
        return out

    @cached_property
    def _encoders(self) -> list[NumericEncoder | CategoricalEncoder | WoeEncoder]:
        encoders: list[NumericEncoder | CategoricalEncoder | WoeEncoder] = []
        for f in self.features:
            if isinstance(f, WoeFeature):
                encoders.append(f.encoder())
            elif isinstance(f, NumericFeature):
                # Each indicator's value when off / on: 0 and 1, or standardised by its rate.
                flags = self._flags(f.missing_rate)
                rates: list[float | None] = (
                    list(f.special_rates) if f.special_rates else [None] * len(f.special)
                )
                encoders.append(
                    NumericEncoder(
                        f.name,
                        f.transform,
                        f.mean,
                        f.std,
                        self.clip,
                        f.impute,
                        flags,
                        tuple(f.special),
                        tuple(self._flags(r) for r in rates),
                    )
                )
            else:
                # Row i: the (standardised, clipped) encoding of level i, so encoding a value
                # is one lookup.
                table = np.eye(len(f.levels), dtype="float64")
                if f.frequencies is not None:
                    table = np.clip(
                        standardise_indicator(table, np.asarray(f.frequencies)),
                        -self.clip,
                        self.clip,
                    )
                index = f.level_index
                encoders.append(
                    CategoricalEncoder(
                        f.name, index, index[OTHER], index.get(MISSING), table, table.tolist()
                    )
                )
        return encoders

    def _flags(self, rate: float | None) -> tuple[float, float]:
        if rate is None:
            return (0.0, 1.0)
        std = standardise_indicator(np.array([0.0, 1.0]), np.array([rate]))
        lo, hi = np.clip(std, -self.clip, self.clip).tolist()
        return (lo, hi)


def agree(
    summaries: Sequence[InstitutionSummary],
    schema: Schema,
    *,
    max_categories: int,
    min_count: int,
    standardize_indicators: bool = False,
) -> PreprocessingSpec:
    """Server side: add the institutions' summaries up into one preprocessing spec."""
    if not summaries:
        raise ValueError("no institution summaries to agree preprocessing from")
    rows = sum(s.rows for s in summaries)
    features: list[NumericFeature | CategoricalFeature | WoeFeature] = []
    for name, spec in schema.features.items():
        impute = spec.missing == "impute"
        if spec.type == "numeric":
            count = sum(s.numeric[name].count for s in summaries)
            total = sum(s.numeric[name].total for s in summaries)
            total_sq = sum(s.numeric[name].total_sq for s in summaries)
            mean = total / count if count else 0.0
            var = max(total_sq / count - mean * mean, 0.0) if count else 0.0
            std = math.sqrt(var) if var > 1e-12 else 1.0
            n_missing = sum(s.numeric[name].missing for s in summaries)
            n_special = [
                sum(s.numeric[name].special[k] for s in summaries) for k in range(len(spec.special))
            ]
            features.append(
                NumericFeature(
                    name=name,
                    transform=spec.transform,
                    mean=mean,
                    std=std,
                    impute=impute,
                    missing_rate=n_missing / rows if standardize_indicators and impute else None,
                    special=list(spec.special),
                    special_rates=[c / rows for c in n_special] if standardize_indicators else None,
                )
            )
        else:
            merged: dict[str, int] = {}
            for s in summaries:
                for value, c in s.categorical[name].counts.items():
                    merged[value] = merged.get(value, 0) + c
            kept = sorted(
                (kv for kv in merged.items() if kv[1] >= min_count), key=lambda kv: (-kv[1], kv[0])
            )[:max_categories]
            categories = sorted(k for k, _ in kept)
            frequencies = None
            if standardize_indicators:
                # Levels suppressed at some institution (rare there) count as __other__ here:
                # a slightly off scale for that column, never a wrong category.
                missing_share = sum(s.categorical[name].missing for s in summaries) / rows
                known = [merged[c] / rows for c in categories]
                other = max(1.0 - sum(known) - missing_share, 0.0)
                frequencies = [*known, other, *([missing_share] if impute else [])]
            features.append(
                CategoricalFeature(
                    name=name, categories=categories, impute=impute, frequencies=frequencies
                )
            )
    return PreprocessingSpec(features=features, rows=rows)
