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


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


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
            else:
                names.extend(f"{f.name}={c}" for c in f.levels)
        return names

    @cached_property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @cached_property
    def _onehot_tables(self) -> dict[str, np.ndarray]:
        """Per categorical feature, row i = the (standardised, clipped) encoding of level i:
        encoding a column is then one lookup, the same for 1 row or 1 million."""
        tables: dict[str, np.ndarray] = {}
        for f in self.features:
            if isinstance(f, CategoricalFeature):
                table = np.eye(len(f.levels), dtype="float64")
                if f.frequencies is not None:
                    table = np.clip(
                        _standardise_indicator(table, np.asarray(f.frequencies)),
                        -self.clip,
                        self.clip,
                    )
                tables[f.name] = table
        return tables

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        """Rows -> float32 design matrix (columns in `output_names` order)."""
        columns: dict[str, np.ndarray] = {}
        for f in self.features:
            col = x[f.name]
            if isinstance(f, NumericFeature):
                columns[f.name] = col.to_numpy(dtype="float64")
            else:
                columns[f.name] = col.astype(object).where(col.notna(), None).to_numpy()
        return self._matrix(columns, len(x))

    def transform_rows(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """`transform` for records (dicts), without building a DataFrame: the eligibility
        service's hot path (pandas costs ~20 ms per single-row call). A few records go through
        plain Python floats (`_record`: ~15 us a row, where the column path's numpy calls cost
        ~340 us whatever the row count); more go through the column path. Same arithmetic in
        float64 either way, so the same matrix (tested)."""
        if len(rows) <= _FEW_ROWS:
            return np.array([self._record(r) for r in rows], dtype=np.float32).reshape(
                len(rows), self.n_outputs
            )
        return self.transform_columns({f.name: [r[f.name] for r in rows] for f in self.features})

    def transform_columns(self, columns: Mapping[str, Sequence[object]]) -> np.ndarray:
        """`transform` for plain columns of Python values (None = missing), one per feature:
        what the service's batch path extracts from validated requests."""
        arrays: dict[str, np.ndarray] = {}
        n = len(columns[self.features[0].name]) if self.features else 0
        for f in self.features:
            values = columns[f.name]
            if isinstance(f, NumericFeature):
                arrays[f.name] = np.array(values, dtype="float64")  # None -> NaN
            else:
                arrays[f.name] = np.array(values, dtype=object)
        return self._matrix(arrays, n)

    @cached_property
    def _record_plan(self) -> list[_NumericStep | _CategoricalStep]:
        plan: list[_NumericStep | _CategoricalStep] = []
        for f in self.features:
            if isinstance(f, NumericFeature):
                flags = (0.0, 1.0)
                if f.missing_rate is not None:
                    std = _standardise_indicator(np.array([0.0, 1.0]), np.array([f.missing_rate]))
                    lo, hi = np.clip(std, -self.clip, self.clip).tolist()
                    flags = (lo, hi)
                plan.append(
                    _NumericStep(f.name, f.transform == "log1p", f.mean, f.std, f.impute, flags)
                )
            else:
                index = f.level_index
                plan.append(
                    _CategoricalStep(
                        f.name,
                        index,
                        index[OTHER],
                        index.get(MISSING),
                        self._onehot_tables[f.name].tolist(),
                    )
                )
        return plan

    def _record(self, record: Mapping[str, object]) -> list[float]:
        """One record's row in plain Python, mirroring `_matrix` step for step."""
        out: list[float] = []
        clip = self.clip
        for step in self._record_plan:
            value = record[step.name]
            if isinstance(step, _NumericStep):
                if _missing(value):
                    if not step.impute:
                        raise ValueError(
                            f"feature {step.name!r} has missing values and no imputation"
                        )
                    out.append(0.0)
                else:
                    v = float(value)  # type: ignore[arg-type]
                    if step.log1p:  # = apply_transform's signed log1p
                        v = math.copysign(math.log1p(abs(v)), v) if v else 0.0
                    z = (v - step.mean) / step.std
                    out.append(min(max(z, -clip), clip))
                if step.impute:
                    out.append(step.flags[_missing(value)])
            else:
                if _missing(value):
                    if step.missing is None:
                        raise ValueError(
                            f"feature {step.name!r} has missing values and no imputation"
                        )
                    code = step.missing
                else:
                    code = step.index.get(value, step.other)  # type: ignore[call-overload]
                out.extend(step.table[code])
        return out

    def _matrix(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        # Filled in place, block by block: stacking float64 blocks and casting at the end held
        # several copies at once (transient +0.75 GiB on the full SBA training rows; now +0.32).
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        at = 0
        for f in self.features:
            col = columns[f.name]
            if isinstance(f, NumericFeature):
                raw = col
                miss = np.isnan(raw)
                if miss.any() and not f.impute:
                    raise ValueError(f"feature {f.name!r} has missing values and no imputation")
                z = (apply_transform(np.where(miss, 0.0, raw), f.transform) - f.mean) / f.std
                out[:, at] = np.clip(np.where(miss, 0.0, z), -self.clip, self.clip)
                at += 1
                if f.impute:
                    flag = miss.astype("float64")
                    if f.missing_rate is not None:
                        flag = np.clip(
                            _standardise_indicator(flag, np.array([f.missing_rate])),
                            -self.clip,
                            self.clip,
                        )
                    out[:, at] = flag
                    at += 1
            else:
                index = f.level_index
                other = index[OTHER]
                miss = pd.isna(col)  # None and NaN, like `_missing`, in one C loop
                if miss.any() and not f.impute:
                    raise ValueError(f"feature {f.name!r} has missing values and no imputation")
                # map over dict.get runs in C: no Python frame per value (the service's batch
                # path spends its time in loops like this one).
                codes = np.fromiter(map(index.get, col, repeat(other, n)), np.int64, count=n)
                if f.impute:
                    codes[miss] = index[MISSING]
                table = self._onehot_tables[f.name]
                out[:, at : at + table.shape[1]] = table[codes]
                at += table.shape[1]
        return out


_FEW_ROWS = 16  # up to this many records, `_record` beats the column path (measured)


@dataclass(frozen=True)
class _NumericStep:
    name: str
    log1p: bool
    mean: float
    std: float
    impute: bool
    flags: tuple[float, float]  # the missing-indicator's value when present / missing


@dataclass(frozen=True)
class _CategoricalStep:
    name: str
    index: dict[str, int]
    other: int
    missing: int | None  # None: missing values are an error
    table: list[list[float]]  # row i: level i's encoding


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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
    features: list[NumericFeature | CategoricalFeature] = []
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
