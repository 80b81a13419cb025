"""Name a vertical dataset, get every party's validated rows.

`sba-vertical` (data/sba_vertical.py: the shipped SBA sample split between a bank and a
platform), `synthetic-vertical` (data/synthetic_vertical.py: a known ground truth), or a
directory in the vertical layout (data/vertical.py). The named ones are derived at load time,
deterministically from `seed`, and go through the same validation as a directory's files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from jointcredit.data import sba_vertical, synthetic_vertical
from jointcredit.data.files import DEFAULT_MAX_FILE_MB
from jointcredit.data.vertical import VerticalData, load_vertical, validate_party
from jointcredit.data.vertical_schema import VerticalSchema

VERTICAL_DATASETS = ("sba-vertical", "synthetic-vertical")
SYNTHETIC_JOINED_ROWS = 30_000


def vertical_frames(
    name: str, *, seed: int = 0, rows: int = SYNTHETIC_JOINED_ROWS
) -> tuple[VerticalSchema, dict[str, pd.DataFrame]]:
    """A named dataset's schema and raw per-party frames (`rows`: synthetic joined rows)."""
    makers: dict[str, Callable[[], tuple[VerticalSchema, dict[str, pd.DataFrame]]]] = {
        "sba-vertical": lambda: (sba_vertical.vertical_schema(), sba_vertical.generate(seed)),
        "synthetic-vertical": lambda: (
            synthetic_vertical.vertical_schema(),
            synthetic_vertical.generate(rows, seed=seed),
        ),
    }
    if name not in makers:
        raise ValueError(f"unknown vertical dataset {name!r}; one of {', '.join(makers)}")
    return makers[name]()


def load_vertical_dataset(
    dataset: str,
    *,
    schema: Path | None = None,
    seed: int = 0,
    rows: int = SYNTHETIC_JOINED_ROWS,
    max_mb: int = DEFAULT_MAX_FILE_MB,
) -> VerticalData:
    """A named vertical dataset or a directory in the vertical layout, validated."""
    if dataset not in VERTICAL_DATASETS:
        return load_vertical(Path(dataset), schema, max_mb=max_mb)
    vschema, frames = vertical_frames(dataset, seed=seed, rows=rows)
    parties = {
        party: validate_party([frame], vschema, party, source=f"{dataset}:{party}")
        for party, frame in frames.items()
    }
    return VerticalData(vschema, parties)


def write_vertical_directory(
    dataset: str, out: Path, *, seed: int = 0, rows: int = SYNTHETIC_JOINED_ROWS
) -> Path:
    """A named dataset in the vertical layout (a directory per party, `schema.toml`)."""
    if out.exists():
        raise FileExistsError(f"{out} exists")
    vschema, frames = vertical_frames(dataset, seed=seed, rows=rows)
    # Built beside `out` and moved into place whole: a crash leaves no half-written layout.
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    for party, frame in frames.items():
        (tmp / party).mkdir()
        frame.to_parquet(tmp / party / f"{party}.parquet", compression="zstd", index=False)
    (tmp / "schema.toml").write_text(vschema.to_toml(), encoding="utf-8")
    tmp.rename(out)
    return out
