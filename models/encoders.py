"""The agreed preprocessing's encodings, one per feature kind: each applies its feature's
parameters to one value in plain Python floats (`one`, the service's single decisions) and to a
column in numpy (`many`, batches and training), with the same result (tested). Built by
`PreprocessingSpec` (`jointcredit.models.preprocessing`), which owns the parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd


def apply_transform(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        # Signed log keeps the sign of negative amounts instead of failing on them.
        out: np.ndarray = np.sign(values) * np.log1p(np.abs(values))
        return out
    return values


def standardise_indicator(block: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    out: np.ndarray = (block - p) / np.sqrt(p * (1 - p))
    return out


def no_imputation(name: str) -> ValueError:
    return ValueError(f"feature {name!r} has missing values and no imputation")


@dataclass(frozen=True)
class NumericEncoder:
    """Missing -> 0 (the mean) plus the indicator, when imputed; a special code -> 0 plus its
    own indicator; else clip((t(v) - mean) / std) with t the feature's transform."""

    name: str
    transform: str
    mean: float
    std: float
    clip: float
    impute: bool
    flags: tuple[float, float]  # the missing-indicator's value when present / missing
    special: tuple[float, ...] = ()
    special_flags: tuple[tuple[float, float], ...] = ()  # each code's indicator: off / on

    def one(self, value: object, out: list[float]) -> None:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        code = -1 if missing else code_of(float(value), self.special)  # type: ignore[arg-type]
        if missing:
            if not self.impute:
                raise no_imputation(self.name)
            out.append(0.0)
        elif code >= 0:
            out.append(0.0)
        else:
            v = float(value)  # type: ignore[arg-type]
            if self.transform == "log1p":  # = apply_transform's signed log1p
                v = math.copysign(math.log1p(abs(v)), v) if v else 0.0
            z = (v - self.mean) / self.std
            out.append(min(max(z, -self.clip), self.clip))
        if self.impute:
            out.append(self.flags[missing])
        out.extend(flag[k == code] for k, flag in enumerate(self.special_flags))

    def many(self, col: np.ndarray, out: np.ndarray, at: int) -> int:
        miss = np.isnan(col)
        if not self.impute and miss.any():
            raise no_imputation(self.name)
        codes = [col == code for code in self.special]
        blank = miss | np.logical_or.reduce(codes) if codes else miss
        z = (apply_transform(np.where(blank, 0.0, col), self.transform) - self.mean) / self.std
        out[:, at] = np.clip(np.where(blank, 0.0, z), -self.clip, self.clip)
        at += 1
        if self.impute:
            out[:, at] = np.where(miss, self.flags[1], self.flags[0])
            at += 1
        for is_code, (off, on) in zip(codes, self.special_flags, strict=True):
            out[:, at] = np.where(is_code, on, off)
            at += 1
        return at


def code_of(value: float, special: tuple[float, ...]) -> int:
    """Index of `value` among the special codes, -1 when it is an ordinary value."""
    return special.index(value) if value in special else -1


@dataclass(frozen=True)
class CategoricalEncoder:
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
                raise no_imputation(self.name)
            code = self.missing
        else:
            code = self.index.get(value, self.other)  # type: ignore[call-overload]
        out.extend(self.rows[code])

    def many(self, col: np.ndarray, out: np.ndarray, at: int) -> int:
        n = len(col)
        miss = pd.isna(col)  # None and NaN, as `one` reads them, in one C loop
        if self.missing is None and miss.any():
            raise no_imputation(self.name)
        # map over dict.get runs in C: no Python frame per value.
        codes = np.fromiter(map(self.index.get, col, repeat(self.other, n)), np.int64, count=n)
        if self.missing is not None:
            codes[miss] = self.missing
        width = len(self.rows)
        out[:, at : at + width] = self.table[codes]
        return at + width
