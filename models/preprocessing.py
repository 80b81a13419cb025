"""Federated preprocessing: agreed from per-institution summaries, never from pooled rows.

Each institution summarises its own training rows (`summarize`): per numeric feature the count,
sum and sum of squares of the (transformed) values and the number missing; per categorical
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
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from jointcredit.data.schema import Schema
from jointcredit.models.binning.encoding import WoeEncoder, WoeFeature

OTHER = "__other__"
MISSING = "__missing__"
CLIP = 5.0  # standardised values beyond +-5 sd are clipped: robust to outliers, keeps SGD stable


def apply_transform(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        # Signed log keeps the sign of negative amounts instead of failing on them.
        out: np.ndarray = np.sign(values) * np.log1p(np.abs(values))
        return out
    return values


# --------------------------------------------------------------------------- summaries


class NumericSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int
    total: float
    total_sq: float
    missing: int


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
            present = ~np.isnan(raw)
            v = apply_transform(raw[present], spec.transform)
            numeric[name] = NumericSummary(
                count=int(present.sum()),
                total=float(v.sum()),
                total_sq=float(np.square(v).sum()),
                missing=int((~present).sum()),
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

    @cached_property
    def level_index(self) -> dict[str, int]:
        # Cached: the service transforms one applicant per call, rebuilding this each time
        # was a visible share of a decision.
        return {c: i for i, c in enumerate(self.levels)}


def _standardise_indicator(block: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    out: np.ndarray = (block - p) / np.sqrt(p * (1 - p))
    return out


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
    def _encoders(self) -> list[_Numeric | _Categorical | WoeEncoder]:
        encoders: list[_Numeric | _Categorical | WoeEncoder] = []
        for f in self.features:
            if isinstance(f, WoeFeature):
                encoders.append(f.encoder())
            elif isinstance(f, NumericFeature):
                flags = (0.0, 1.0)  # the missing-indicator's value when present / missing
                if f.missing_rate is not None:
                    std = _standardise_indicator(np.array([0.0, 1.0]), np.array([f.missing_rate]))
                    lo, hi = np.clip(std, -self.clip, self.clip).tolist()
                    flags = (lo, hi)
                encoders.append(
                    _Numeric(f.name, f.transform, f.mean, f.std, self.clip, f.impute, flags)
                )
            else:
                # Row i: the (standardised, clipped) encoding of level i, so encoding a value
                # is one lookup.
                table = np.eye(len(f.levels), dtype="float64")
                if f.frequencies is not None:
                    table = np.clip(
                        _standardise_indicator(table, np.asarray(f.frequencies)),
                        -self.clip,
                        self.clip,
                    )
                index = f.level_index
                encoders.append(
                    _Categorical(
                        f.name, index, index[OTHER], index.get(MISSING), table, table.tolist()
                    )
                )
        return encoders


_FEW_ROWS = 16  # up to this many records, value by value beats numpy's per-call overhead


def _no_imputation(name: str) -> ValueError:
    return ValueError(f"feature {name!r} has missing values and no imputation")


@dataclass(frozen=True)
class _Numeric:
    """Missing -> 0 (the mean) plus the indicator, when imputed; else clip((t(v) - mean) / std)
    with t the feature's transform."""

    name: str
    transform: str
    mean: float
    std: float
    clip: float
    impute: bool
    flags: tuple[float, float]  # the missing-indicator's value when present / missing

    def one(self, value: object, out: list[float]) -> None:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing:
            if not self.impute:
                raise _no_imputation(self.name)
            out.append(0.0)
        else:
            v = float(value)  # type: ignore[arg-type]
            if self.transform == "log1p":  # = apply_transform's signed log1p
                v = math.copysign(math.log1p(abs(v)), v) if v else 0.0
            z = (v - self.mean) / self.std
            out.append(min(max(z, -self.clip), self.clip))
        if self.impute:
            out.append(self.flags[missing])

    def many(self, col: np.ndarray, out: np.ndarray, at: int) -> int:
        miss = np.isnan(col)
        if not self.impute and miss.any():
            raise _no_imputation(self.name)
        z = (apply_transform(np.where(miss, 0.0, col), self.transform) - self.mean) / self.std
        out[:, at] = np.clip(np.where(miss, 0.0, z), -self.clip, self.clip)
        if not self.impute:
            return at + 1
        out[:, at + 1] = np.where(miss, self.flags[1], self.flags[0])
        return at + 2


@dataclass(frozen=True)
class _Categorical:
    """A level's row of the one-hot table; unknown values are `__other__`, missing ones
    `__missing__` when imputed."""

    name: str
    index: dict[str, int]
    other: int
    missing: int | None  # None: missing values are an error
    table: np.ndarray  # row i: level i's encoding
    rows: list[list[float]]  # the same, as Python floats

    def one(self, value: object, out: list[float]) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if self.missing is None:
                raise _no_imputation(self.name)
            code = self.missing
        else:
            code = self.index.get(value, self.other)  # type: ignore[call-overload]
        out.extend(self.rows[code])

    def many(self, col: np.ndarray, out: np.ndarray, at: int) -> int:
        n = len(col)
        miss = pd.isna(col)  # None and NaN, as `one` reads them, in one C loop
        if self.missing is None and miss.any():
            raise _no_imputation(self.name)
        # map over dict.get runs in C: no Python frame per value.
        codes = np.fromiter(map(self.index.get, col, repeat(self.other, n)), np.int64, count=n)
        if self.missing is not None:
            codes[miss] = self.missing
        width = len(self.rows)
        out[:, at : at + width] = self.table[codes]
        return at + width


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
            features.append(
                NumericFeature(
                    name=name,
                    transform=spec.transform,
                    mean=mean,
                    std=std,
                    impute=impute,
                    missing_rate=n_missing / rows if standardize_indicators and impute else None,
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
