"""Institution files on disk: which files of a directory are institutions (a file's name
without its extension is the institution id, under the one rule of `trust.ids`), and reading
one in bounded memory (a size limit first, then consecutive chunks).

Every command that reads a data directory (`data check`, `simulate`, `sweep`, a simulated or
deployed node) goes through here, so they accept and refuse the same files with the same
message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from jointcredit.data.errors import DataValidationError
from jointcredit.data.frames import MISSING_TOKENS, check_unique_header
from jointcredit.trust.ids import RULE, is_institution_id

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
# Largest institution file read, in MiB (run setting `max-file-mb`, `data check
# --max-file-mb`): reading peaks at a few times the file's size (docs/DATA.md).
DEFAULT_MAX_FILE_MB = 1024
MIB = 2**20
CHUNK_ROWS = 100_000


def institution_files(directory: Path) -> dict[str, Path]:
    """The institutions of a bring-your-own-data directory: id -> file, in id order. A file
    whose name cannot be an institution id is refused, not skipped: it would be a lender
    silently left out of the federation."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in SUPPORTED_SUFFIXES or not path.is_file():
            continue
        inst = institution_id(path, source=str(directory))
        if inst in found:
            raise DataValidationError(
                f"two files for institution {inst!r}: {found[inst].name}, {path.name}",
                source=str(directory),
            )
        found[inst] = path
    if not found:
        raise DataValidationError(
            "no institution files (*.csv, *.parquet) in the directory", source=str(directory)
        )
    return found


def institution_id(path: Path, *, source: str, given: str | None = None) -> str:
    """The institution a file holds: `given` (a deployed node's config) or the file name
    without its extension; refused unless it is a valid institution id."""
    inst = given or path.stem
    if not is_institution_id(inst):
        what = "institution id" if given else "file name (without its extension)"
        raise DataValidationError(
            f"institution file {path.name!r}: the {what} {inst!r} is not a valid institution "
            f"id: {RULE}; rename the file",
            source=source,
        )
    return inst


def check_size(path: Path, max_mb: int) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DataValidationError("file not found", source=str(path)) from exc
    except OSError as exc:
        raise DataValidationError(f"cannot read file: {exc}", source=str(path)) from exc
    if size > max_mb * MIB:
        raise DataValidationError(
            f"file is {size / MIB:,.0f} MiB, above the limit of {max_mb:,} MiB per institution "
            "file; raise it (run setting max-file-mb, `data check --max-file-mb`) on a machine "
            "with the memory for it",
            source=str(path),
        )


def read_chunks(
    path: Path, *, max_mb: int = DEFAULT_MAX_FILE_MB, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """One institution file as consecutive frames of at most `chunk_rows` rows, each indexed
    by its rows' positions in the file; CSV cells are read as text so that typing stays
    ours. A file above `max_mb` MiB or with a column named twice is refused before any row is
    read."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataValidationError(
            f"unsupported file type {suffix!r} (use .csv or .parquet)", source=str(path)
        )
    check_size(path, max_mb)
    try:
        if suffix == ".csv":
            yield from _csv_chunks(path, chunk_rows)
        else:
            yield from _parquet_chunks(path, chunk_rows)
    except DataValidationError:
        raise
    except FileNotFoundError as exc:
        raise DataValidationError("file not found", source=str(path)) from exc
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataValidationError(f"cannot read file: {exc}", source=str(path)) from exc


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    # pandas renames a repeated header name (`defaulted`, `defaulted.1`) and the first copy
    # would silently win: read the header as written first.
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    check_unique_header([str(v) for v in header.iloc[0]] if len(header) else [], str(path))
    options = {"dtype": str, "keep_default_na": False, "na_values": list(MISSING_TOKENS)}
    with pd.read_csv(path, chunksize=chunk_rows, **options) as reader:  # type: ignore[call-overload]
        yield from reader


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(path)
    check_unique_header(list(parquet.schema_arrow.names), str(path))
    first = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(first, first + len(frame))
        first += len(frame)
        yield frame


def read_table(path: Path, *, max_mb: int = DEFAULT_MAX_FILE_MB) -> pd.DataFrame:
    """A whole (small) file as one frame: applicants to score."""
    chunks = list(read_chunks(path, max_mb=max_mb))
    return pd.concat(chunks) if len(chunks) > 1 else chunks[0] if chunks else pd.DataFrame()
