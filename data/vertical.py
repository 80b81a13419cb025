"""Bring-your-own vertical data: a directory per party, one data file in each, and a vertical
schema (data/vertical_schema.py; default DIR/schema.toml)::

    DIR/schema.toml
    DIR/bank/loans.csv        # id column, the bank's features, the label
    DIR/platform/users.parquet  # id column, the platform's features

A party reads only its own directory (`load_party`); a simulation holding every party's files
loads them all (`load_vertical`). Each party's frame is its id column (text) and its own typed
features, plus the label (1 = default) at the label party only: a column of another party's
in a party's file is ignored, never loaded. Identifiers must be present and unique in a file.
The label party's protected attributes (its table's `protected`) are read beside its frame,
as group labels (`PartyData.groups`), never into it: no feature, bin or message is made from
them, only the fairness figures of its held-out rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jointcredit.data.errors import DataValidationError
from jointcredit.data.files import DEFAULT_MAX_FILE_MB, SUPPORTED_SUFFIXES, read_chunks
from jointcredit.data.frames import (
    MISSING_TOKENS,
    check_unique_header,
    group_labels,
    label_values,
    time_keys,
    typed_features,
)
from jointcredit.data.vertical_schema import VerticalSchema, load_vertical_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartyData:
    """One party's rows: `frame` = the id column, its features, and the label at the label
    party (the schema's label name, 1 = default)."""

    party: str
    frame: pd.DataFrame
    id_column: str
    label_column: str | None
    # The label party's protected attributes, row for row with `frame` (None elsewhere).
    groups: pd.DataFrame | None = None

    @property
    def ids(self) -> np.ndarray:
        return self.frame[self.id_column].to_numpy(dtype=object)

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class VerticalData:
    schema: VerticalSchema
    parties: dict[str, PartyData]

    @property
    def label_party(self) -> PartyData:
        return self.parties[self.schema.label_party]


def party_file(directory: Path, party: str) -> Path:
    """The one data file of a party's directory."""
    where = directory / party
    if not where.is_dir():
        raise DataValidationError(f"no directory for party {party!r}", source=str(where))
    files = sorted(
        p for p in where.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
    )
    if len(files) != 1:
        names = ", ".join(p.name for p in files) or "none"
        raise DataValidationError(
            f"party {party!r} needs exactly one data file (*.csv, *.parquet), found: {names}",
            source=str(where),
        )
    return files[0]


def load_party(
    path: Path, schema: VerticalSchema, party: str, *, max_mb: int = DEFAULT_MAX_FILE_MB
) -> PartyData:
    """Read and validate one party's file: its id column, own features (and label)."""
    return validate_party(read_chunks(path, max_mb=max_mb), schema, party, source=str(path))


def validate_party(
    chunks: Iterable[pd.DataFrame], schema: VerticalSchema, party: str, *, source: str
) -> PartyData:
    """One party's raw rows (consecutive pieces, indexed by file position) validated."""
    spec = schema.parties[party]
    features = schema.party_features(party)
    label = schema.base.label if spec.label else None
    protected = spec.protected if spec.label else ()
    parts: list[pd.DataFrame] = []
    group_parts: list[pd.DataFrame] = []
    seen_labels: set[str] = set()
    for raw in chunks:
        if not parts:
            _check_header(list(raw.columns), schema, party, source)
        if len(raw) == 0:
            continue
        columns = {schema.id: _ids(raw[schema.id], schema.id, source)}
        columns.update(typed_features(raw, features, source))
        if label is not None:
            columns[label] = pd.Series(label_values(raw[label], schema.base, source, seen_labels))
            if (time := schema.base.time) is not None:  # only the label party splits by it
                columns[time] = pd.Series(time_keys(raw[time], source), index=raw.index)
        parts.append(pd.DataFrame(columns).set_axis(raw.index))
        if protected:
            group_parts.append(group_labels(raw, protected))
    frame = pd.concat(parts) if parts else pd.DataFrame()
    if frame.empty:
        raise DataValidationError("file has no rows", source=source)
    twice = frame[schema.id].duplicated(keep=False)
    if twice.any():
        lines = ", ".join(str(int(i) + 2) for i in frame.index[twice.to_numpy()][:5])
        raise DataValidationError(
            f"identifier {frame[schema.id][twice].iloc[0]!r} appears more than once "
            f"({int(twice.sum())} rows, first at line(s) {lines}): one row per applicant",
            source=source,
            column=schema.id,
        )
    groups = pd.concat(group_parts, ignore_index=True) if protected else None
    return PartyData(party, frame.reset_index(drop=True), schema.id, label, groups)


def load_vertical(
    directory: Path, schema_path: Path | None = None, *, max_mb: int = DEFAULT_MAX_FILE_MB
) -> VerticalData:
    """Every party's validated rows (a simulation, or `data check --layout vertical`)."""
    if not directory.is_dir():
        raise DataValidationError("not a directory", source=str(directory))
    schema = load_vertical_schema(schema_path or directory / "schema.toml")
    files = {party: party_file(directory, party) for party in schema.parties}
    dirs = {p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")}
    stray = sorted(dirs - set(schema.parties))
    if stray:
        raise DataValidationError(
            f"directories with no [parties.<id>] table in the schema: {', '.join(stray)}",
            source=str(directory),
        )
    parties = {
        party: load_party(path, schema, party, max_mb=max_mb) for party, path in files.items()
    }
    return VerticalData(schema, parties)


def _check_header(columns: list[object], schema: VerticalSchema, party: str, source: str) -> None:
    names = [str(c) for c in columns]
    check_unique_header(names, source)
    if schema.id not in names:
        raise DataValidationError(
            f"the identifier column (id = {schema.id!r}) is missing from party {party!r}'s file",
            source=source,
        )
    wanted = list(schema.parties[party].features)
    if schema.parties[party].label:
        wanted.append(schema.base.label)
        if schema.base.time is not None:
            wanted.append(schema.base.time)
        wanted.extend(schema.parties[party].protected)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataValidationError(
            f"party {party!r}'s column(s) missing from its file: {', '.join(missing)}",
            source=source,
        )
    extra = [c for c in names if c not in (*wanted, schema.id)]
    if extra:
        log.warning("%s: ignoring columns not %s's in the schema: %s", source, party, extra)


def _ids(col: pd.Series, name: str, source: str) -> pd.Series:
    text = col.astype("string").str.strip()
    missing = text.isna() | text.isin(MISSING_TOKENS)
    if missing.any():
        lines = ", ".join(str(int(i) + 2) for i in col.index[missing.to_numpy()][:5])
        raise DataValidationError(
            f"{int(missing.sum())} missing identifier(s) (first at line(s) {lines})",
            source=source,
            column=name,
        )
    return text.astype(object).reset_index(drop=True)
