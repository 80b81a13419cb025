"""`sba-vertical`: the shipped SBA sample split by columns between a bank and a platform.

The 60,000 loans of `data/sba_sample/` are the universe of businesses. The bank (label party)
holds a seeded 75 % of them with the lender's loan terms and the outcome; a business-data
platform (think payments or a business directory) knows 80 % of the bank's borrowers and as
many again of the businesses the bank never lent to (two thirds of the other 25 %), with their
business attributes. So the bank has 45,000 rows, the platform 46,000, and 36,000 are shared.

Only decision-time columns, as in `sba` (data/sba.py says what was dropped as leakage); the
approval year, the time column there, is the bank's time column here (never a feature:
`--split time` tests on the latest aligned loans).
Identifiers are synthetic US employer identification numbers (``NN-NNNNNNN``), unique, drawn
from the seed, in neither party's row order. Derived at load time, nothing shipped beside the
sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jointcredit.data.sba import SAMPLE_DIR, SBA_SCHEMA, TIME_COLUMN
from jointcredit.data.vertical_schema import VerticalSchema, parse_vertical_schema

ID_COLUMN = "ein"
BANK, PLATFORM = "bank", "platform"
BANK_FEATURES = (
    "gross_approved", "sba_approved", "sba_share", "revolving_line", "low_doc", "jobs_created",
    "jobs_retained",
)  # fmt: skip
PLATFORM_FEATURES = (
    "sector", "state", "employees", "business_age", "franchise", "urban_rural",
)  # fmt: skip
BANK_SHARE = 0.75  # of the universe, at the bank
KNOWN_TO_PLATFORM = 0.8  # of the bank's borrowers
OTHERS_AT_PLATFORM = 2 / 3  # of the businesses the bank does not have


def vertical_schema() -> VerticalSchema:
    features = {
        name: spec.model_dump(exclude_defaults=True) | {"type": spec.type}
        for name, spec in SBA_SCHEMA.features.items()
    }
    return parse_vertical_schema(
        {
            "label": SBA_SCHEMA.label,
            "positive": SBA_SCHEMA.positive,
            "id": ID_COLUMN,
            "time": TIME_COLUMN,
            "features": features,
            "parties": {
                BANK: {"label": True, "features": list(BANK_FEATURES)},
                PLATFORM: {"features": list(PLATFORM_FEATURES)},
            },
        },
        source="sba-vertical",
    )


def employer_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct synthetic EINs, in random order."""
    drawn = np.zeros(0, dtype=np.int64)
    while drawn.size < n:
        more = rng.integers(10**8, 10**9, size=n - drawn.size + 16, dtype=np.int64)
        drawn = np.unique(np.concatenate([drawn, more]))
    picked = rng.permutation(drawn)[:n].astype(str)
    return np.array([f"{s[:2]}-{s[2:]}" for s in picked], dtype=object)


def universe() -> pd.DataFrame:
    """The shipped sample's loans, lenders in name order."""
    files = sorted(SAMPLE_DIR.glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def generate(seed: int = 0) -> dict[str, pd.DataFrame]:
    """The bank's and the platform's frames (id column first; the label at the bank)."""
    loans = universe()
    rng = np.random.default_rng([seed, 22, 7])
    n = len(loans)
    ids = employer_ids(rng, n)
    order = rng.permutation(n)
    n_bank = round(n * BANK_SHARE)
    bank_rows, others = order[:n_bank], order[n_bank:]
    shared = bank_rows[: round(n_bank * KNOWN_TO_PLATFORM)]
    extra = others[: round(len(others) * OTHERS_AT_PLATFORM)]
    bank_rows = rng.permutation(bank_rows)
    platform_rows = rng.permutation(np.concatenate([shared, extra]))
    bank_columns = [*BANK_FEATURES, SBA_SCHEMA.label, TIME_COLUMN]
    bank = loans.iloc[bank_rows][bank_columns].reset_index(drop=True)
    platform = loans.iloc[platform_rows][list(PLATFORM_FEATURES)].reset_index(drop=True)
    bank.insert(0, ID_COLUMN, ids[bank_rows])
    platform.insert(0, ID_COLUMN, ids[platform_rows])
    return {BANK: bank, PLATFORM: platform}
