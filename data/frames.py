"""Validate raw institution frames against a `Schema` and split them, seeded and stratified.

Validation is strict on purpose: nothing is silently coerced. A non-numeric value in a numeric
column, a missing value where the schema says `missing = "error"`, a label that is not binary,
a file that is missing a schema column: each stops the run before training, naming the file,
the column and the first offending rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import FeatureSpec, Schema

log = logging.getLogger(__name__)

# The group of a row whose protected attribute is missing: measured as a group of its own.
MISSING_GROUP = "(missing)"
# Cells read as missing. Categorical columns keep any other string as a category.
MISSING_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")


SplitKind = Literal["random", "time"]


@dataclass(frozen=True)
class Split:
    """Features (schema order, validated types) and the binary label (1 = default); `time`:
    the schema's time column as sortable numbers (years as given, dates as seconds since
    1970), or None when the schema has none; `groups`: the schema's protected attributes as
    group labels (text; a missing value is the group `MISSING_GROUP`), never features, or None
    when the schema names none."""

    x: pd.DataFrame
    y: np.ndarray
    time: np.ndarray | None = None
    groups: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class InstitutionData:
    institution: str
    train: Split
    test: Split


@dataclass(frozen=True)
class FederatedData:
    """Every institution's splits. Only simulations and tests ever hold more than one."""

    schema: Schema
    institutions: dict[str, InstitutionData]
    description: str

    @property
    def ids(self) -> list[str]:
        return list(self.institutions)

    def pooled_test(self) -> Split:
        """The union of all test splits: a simulation-only measurement set."""
        return _pooled([p.test for p in self.institutions.values()])

    def pooled_train(self) -> Split:
        return _pooled([p.train for p in self.institutions.values()])


def _pooled(parts: list[Split]) -> Split:
    times = [p.time for p in parts if p.time is not None]
    groups = [p.groups for p in parts if p.groups is not None]
    return Split(
        x=pd.concat([p.x for p in parts], ignore_index=True),
        y=np.concatenate([p.y for p in parts]),
        time=np.concatenate(times) if times and len(times) == len(parts) else None,
        groups=pd.concat(groups, ignore_index=True)
        if groups and len(groups) == len(parts)
        else None,
    )


def _rows(mask: pd.Series, limit: int = 5) -> str:
    # Row numbers as a user sees them in a CSV: header is line 1, first data row is line 2.
    # The index is the row's position in the whole file (a chunk's rows continue the count).
    idx = np.flatnonzero(mask.to_numpy(dtype=bool, na_value=False))[:limit]
    return ", ".join(str(int(mask.index[i]) + 2) for i in idx)


def _numeric(col: pd.Series, name: str, source: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        raise DataValidationError("boolean values in a numeric column", source=source, column=name)
    if pd.api.types.is_numeric_dtype(col):
        out = col.astype("float64")
    else:
        as_text = col.astype("string").str.strip()
        out = pd.to_numeric(as_text.where(~as_text.isin(MISSING_TOKENS)), errors="coerce")
        bad = out.isna() & as_text.notna() & ~as_text.isin(MISSING_TOKENS)
        if bad.any():
            example = as_text[bad].iloc[0]
            raise DataValidationError(
                f"non-numeric value {example!r} in a numeric column "
                f"({int(bad.sum())} rows, first at line(s) {_rows(bad)})",
                source=source,
                column=name,
            )
        out = out.astype("float64")
    if np.isinf(out.to_numpy()).any():
        raise DataValidationError("infinite value in a numeric column", source=source, column=name)
    return out


def _check_range(series: pd.Series, spec: FeatureSpec, name: str, source: str) -> None:
    # Special codes lie outside the range by construction (the schema checks that).
    series = series.where(~spec.is_special(series.to_numpy()))
    checks = (
        (spec.min, "below the schema's min", series.lt),
        (spec.max, "above the schema's max", series.gt),
    )
    for bound, word, outside in checks:
        if bound is None:
            continue
        bad = outside(bound).fillna(False).astype(bool)
        if bad.any():
            raise DataValidationError(
                f"value {float(series[bad].iloc[0])!r} {word} {bound} "
                f"({int(bad.sum())} rows, first at line(s) {_rows(bad)})",
                source=source,
                column=name,
            )


def _categorical(col: pd.Series) -> pd.Series:
    text = col.astype("string").str.strip()
    text = text.where(~text.isin(MISSING_TOKENS))
    # One string object per distinct level, shared by its rows: a large file's category
    # column costs a pointer per row, not a string per row.
    codes, levels = pd.factorize(text)
    out = np.full(len(text), None, dtype=object)
    present = codes >= 0
    out[present] = np.asarray(levels, dtype=object)[codes[present]]
    return pd.Series(out, index=col.index, name=col.name, dtype=object)


def typed_features(
    raw: pd.DataFrame, features: Mapping[str, FeatureSpec], source: str
) -> dict[str, pd.Series]:
    """`features`' columns of `raw` typed and checked (range, missing values), indexed from 0;
    `raw`'s index is the rows' positions in the file, which errors name."""
    feats: dict[str, pd.Series] = {}
    for name, spec in features.items():
        col = raw[name]
        series = _numeric(col, name, source) if spec.type == "numeric" else _categorical(col)
        _check_range(series, spec, name, source)
        missing = series.isna()
        if missing.any() and spec.missing == "error":
            raise DataValidationError(
                f"{int(missing.sum())} missing value(s) (first at line(s) {_rows(missing)}); "
                'set missing = "impute" in the schema to allow them',
                source=source,
                column=name,
            )
        feats[name] = series.reset_index(drop=True)
    return feats


def _numeric_text(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def label_values(col: pd.Series, schema: Schema, source: str, seen: set[str]) -> np.ndarray:
    """1 where the label is the schema's positive value; `seen` collects the distinct label
    values of the whole file (a file validated in chunks must be binary as a whole)."""
    name = schema.label
    if col.isna().any():
        raise DataValidationError(
            f"missing label values ({int(col.isna().sum())} rows, first at line(s) "
            f"{_rows(col.isna())}); labels are never imputed",
            source=source,
            column=name,
        )
    if isinstance(schema.positive, int):
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = col
        else:
            values = pd.to_numeric(col.astype("string").str.strip(), errors="coerce")
            if values.isna().any():
                bad = values.isna()
                raise DataValidationError(
                    f"schema says positive = {schema.positive} (an integer) but the label "
                    f"holds {col[bad].iloc[0]!r} (line(s) {_rows(bad)})",
                    source=source,
                    column=name,
                )
        if (values != np.round(values)).any():
            raise DataValidationError("label values must be integers", source=source, column=name)
        values = values.astype("int64")
    else:
        values = col.astype("string").str.strip()
        if not _numeric_text(schema.positive) and values.map(_numeric_text).all():
            raise DataValidationError(
                f"schema says positive = {schema.positive!r} (a string) but the label holds "
                f"only numbers ({', '.join(sorted(map(str, pd.unique(values)))[:4])}): write "
                "the positive value as the file does, e.g. positive = 1",
                source=source,
                column=name,
            )
    seen.update(map(str, pd.unique(values)))
    distinct = sorted(seen)
    if len(distinct) > 2:
        raise DataValidationError(
            f"label is not binary: {len(distinct)} distinct values ({', '.join(distinct[:6])})",
            source=source,
            column=name,
        )
    label: np.ndarray = (values == schema.positive).to_numpy().astype(np.int64)
    return label


def validate_frame(
    raw: pd.DataFrame, schema: Schema, *, source: str, with_time: bool = True
) -> Split:
    """Check one institution's raw rows against the schema; return typed features + label
    (and the time column and protected attributes, unless `with_time` is False: applicants
    being scored have no place in a split, and are never asked for protected attributes)."""
    return validate_chunks([raw], schema, source=source, with_time=with_time)


def validate_chunks(
    chunks: Iterable[pd.DataFrame], schema: Schema, *, source: str, with_time: bool = True
) -> Split:
    """`validate_frame` over a file read in consecutive pieces: only one raw piece is held at
    a time beside the typed rows, and every check (line numbers included) is the whole
    file's."""
    training = with_time
    with_groups = with_time and bool(schema.protected)
    with_time = with_time and schema.time is not None
    parts: list[Split] = []
    labels: set[str] = set()
    rows = 0
    for raw in chunks:
        if rows == 0:
            check_columns(
                list(raw.columns),
                schema,
                source=source,
                with_time=with_time,
                with_id=training,
                groups=with_groups,
            )
        if len(raw) == 0:
            continue
        parts.append(_validate_rows(raw, schema, source, (with_time, with_groups), rows, labels))
        rows += len(raw)
    if rows == 0:
        raise DataValidationError("file has no rows", source=source)
    if len(parts) == 1:
        return parts[0]
    return _pooled(parts)


def check_columns(
    columns: list[object],
    schema: Schema,
    *,
    source: str,
    with_time: bool,
    with_id: bool = True,
    groups: bool = False,
) -> None:
    """The header: no name twice, every schema column there (the id column in training files
    only: applicants being scored may come without; the protected attributes when
    `groups`)."""
    check_unique_header([str(c) for c in columns], source)
    missing_cols = [c for c in schema.columns if c not in columns]
    if missing_cols:
        raise DataValidationError(
            f"schema column(s) missing from the file: {', '.join(missing_cols)}", source=source
        )
    if with_time and schema.time not in columns:
        raise DataValidationError(
            f"the schema's time column (time = {schema.time!r}) is missing from the file",
            source=source,
        )
    if with_id and schema.id is not None and schema.id not in columns:
        # A misspelt `id` would otherwise pass, and the real id column be ignored as unknown.
        raise DataValidationError(
            f"the schema's id column (id = {schema.id!r}) is missing from the file",
            source=source,
        )
    absent = [c for c in schema.protected if c not in columns] if groups else []
    if absent:
        raise DataValidationError(
            f"protected attribute column(s) missing from the file: {', '.join(absent)} (the "
            "schema's `protected`; they are measured, never used as features)",
            source=source,
        )
    known = {*schema.columns, *schema.protected, *(c for c in (schema.id, schema.time) if c)}
    extra = [c for c in columns if c not in known]
    if extra:
        log.warning(
            "%s: ignoring columns not in the schema: %s", source, ", ".join(map(str, extra))
        )


def check_unique_header(names: list[str], source: str) -> None:
    """Refuse a column named twice: which copy is the label, or the feature, is anyone's
    guess."""
    counts = Counter(names)
    twice = [name for name, n in counts.items() if n > 1]
    if twice:
        raise DataValidationError(
            f"named more than once in the header ({counts[twice[0]]} columns); rename or "
            "drop the copies",
            source=source,
            column=twice[0],
        )


def _validate_rows(
    raw: pd.DataFrame,
    schema: Schema,
    source: str,
    parts: tuple[bool, bool],
    first: int,
    labels: set[str],
) -> Split:
    with_time, with_groups = parts
    # Index = position in the file, so that errors name the file's lines.
    raw = raw.set_axis(pd.RangeIndex(first, first + len(raw)))
    feats = typed_features(raw, schema.features, source)
    y = label_values(raw[schema.label], schema, source, labels)
    time = time_keys(raw[str(schema.time)], source) if with_time else None
    groups = group_labels(raw, schema.protected) if with_groups else None
    return Split(x=pd.DataFrame(feats), y=y, time=time, groups=groups)


def group_labels(raw: pd.DataFrame, protected: tuple[str, ...]) -> pd.DataFrame:
    """The protected attributes' columns as group labels (text; missing: `MISSING_GROUP`),
    indexed from 0."""
    return pd.DataFrame(
        {
            name: _categorical(raw[name]).fillna(MISSING_GROUP).reset_index(drop=True)
            for name in protected
        }
    )


def time_keys(col: pd.Series, source: str) -> np.ndarray:
    """The time column as float64 sort keys: numbers (years, months) as they are, dates and
    timestamps as seconds since 1970. No value may be missing: a row without a time
    cannot be put on either side of an out-of-time split."""
    name = str(col.name)
    if pd.api.types.is_bool_dtype(col):
        raise DataValidationError("boolean values in the time column", source=source, column=name)
    if pd.api.types.is_datetime64_any_dtype(col):
        stamps = pd.Series(pd.to_datetime(col, utc=True))
    elif pd.api.types.is_numeric_dtype(col):
        stamps = None
        values = col.astype("float64")
    else:
        text = col.astype("string").str.strip()
        text = text.where(~text.isin(MISSING_TOKENS))
        values = pd.to_numeric(text, errors="coerce")
        stamps = None
        if (values.isna() & text.notna()).any():
            stamps = pd.Series(pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601"))
            bad = stamps.isna() & text.notna()
            if bad.any():
                raise DataValidationError(
                    f"time column holds {text[bad].iloc[0]!r}, neither a number (such as a "
                    f"year) nor an ISO date ({int(bad.sum())} rows, first at line(s) "
                    f"{_rows(bad)})",
                    source=source,
                    column=name,
                )
    if stamps is not None:
        values = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")  # NaT -> NaN
    missing = values.isna() | ~np.isfinite(values.fillna(0.0))
    if missing.any():
        raise DataValidationError(
            f"{int(missing.sum())} missing or infinite value(s) in the time column (first at "
            f"line(s) {_rows(missing)}): every row needs a time to be split by time",
            source=source,
            column=name,
        )
    out: np.ndarray = values.to_numpy(dtype="float64")
    return out


def split_institution(
    institution: str,
    data: Split,
    *,
    test_fraction: float,
    seed: int,
    split: SplitKind = "random",
) -> InstitutionData:
    """One institution's train/test split: `random` (stratified, seeded) or `time` (train on
    the earlier rows, test on the latest `test_fraction` of them; see `time_split`)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    if split == "time":
        if data.time is None:
            raise DataValidationError(
                'split = time needs the schema\'s time column (time = "column"); this '
                "schema has none"
            )
        tr, te = time_split(data.time, test_fraction, institution)
    else:
        counts = np.bincount(data.y, minlength=2)
        # Stratify only when each class can appear on both sides; otherwise a plain split.
        stratify = data.y if counts.min() >= 2 else None
        idx = np.arange(len(data.y))
        # Imported here: scikit-learn (with SciPy) is a second of every CLI command's start.
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=stratify
        )
        tr, te = np.sort(tr), np.sort(te)
    return InstitutionData(institution=institution, train=_take(data, tr), test=_take(data, te))


def _take(data: Split, rows: np.ndarray) -> Split:
    return Split(
        x=data.x.iloc[rows].reset_index(drop=True),
        y=data.y[rows],
        time=None if data.time is None else data.time[rows],
        groups=None if data.groups is None else data.groups.iloc[rows].reset_index(drop=True),
    )


def time_split(
    time: np.ndarray, test_fraction: float, institution: str
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test), each in file order, such that every training row is
    strictly earlier than every test row.

    The cut falls between two distinct times. Rows sharing the time at which the latest
    `test_fraction` share begins (a year holds many loans) all go to one side: to the test
    side if that brings the test share closer to `test_fraction` than leaving them to
    training does, on a tie to the test side. Neither side may be empty, so an institution
    whose rows all share one time is refused."""
    n = len(time)
    times, counts = np.unique(time, return_counts=True)
    if len(times) < 2:
        raise DataValidationError(
            f"institution {institution!r}: every row has the same time, so split = time "
            "cannot test on later rows than it trains on"
        )
    # later[k]: rows at times[k] or after, i.e. the test side of a cut just before times[k]
    # (k = 1 .. len - 1; k = 0 would leave training empty). It falls as k grows.
    later = np.cumsum(counts[::-1])[::-1]
    target = test_fraction * n
    boundary = int(np.sum(later >= target)) - 1  # the time at which the latest share begins
    candidates = {min(max(k, 1), len(times) - 1) for k in (boundary, boundary + 1)}
    k = min(candidates, key=lambda c: (abs(later[c] - target), -later[c]))
    cut = times[k]
    idx = np.arange(n)
    return idx[time < cut], idx[time >= cut]


def check_federation(
    splits: Mapping[str, Split],
    schema: Schema,
    *,
    min_rows: int,
    sources: Mapping[str, str],
    require_both_classes: bool = True,
) -> None:
    """Federation-wide checks: enough rows everywhere, both label classes somewhere."""
    for inst, s in splits.items():
        if len(s) < min_rows:
            raise DataValidationError(
                f"institution {inst!r} has {len(s)} rows; at least {min_rows} are needed",
                source=sources.get(inst, inst),
            )
    if not require_both_classes:
        return
    positives = sum(int(s.y.sum()) for s in splits.values())
    total = sum(len(s) for s in splits.values())
    if positives == 0 or positives == total:
        only = "positive" if positives else "negative"
        raise DataValidationError(
            f"label has one class in the whole federation (all {only}; positive = "
            f"{schema.positive!r}): nothing to learn",
            column=schema.label,
        )
