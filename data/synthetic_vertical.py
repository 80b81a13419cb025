"""Synthetic vertical institutions: a bank (13 features and the label) and a platform (10
behavioural features) holding different columns of partly the same applicants, with a known
ground-truth default process. Everything is simulated; no row describes a real person.

Applicants
    ``joined`` applicants are known to both parties; the bank also has ``bank_only`` applicants
    the platform never saw (as a fraction of ``joined``), the platform ``platform_only``
    customers who never borrowed from the bank. Identifiers are synthetic mainland-China
    mobile numbers (``+86 1[3-9]X XXXX XXXX``), unique, in no party's row order.

Latent factors
    ``z`` (creditworthiness, seen through the bureau) and ``b`` (behaviour, seen through the
    platform's payments data), standard normal with correlation 0.3: the platform's columns
    tell the bank something its own do not.

Ground truth (`true_default_probability`), on the features, not the latents::

    logit = INTERCEPT + sum_k BANK_WEIGHTS[k] * std(bank feature k)
                      + sum_k PLATFORM_WEIGHTS[k] * std(platform feature k)
                      + 0.9 [payment_failures_90d >= 2 and debt_to_income > 0.45]

where ``std`` standardises with the fixed centres and scales in `_SCALE` (the population's, not
a sample's), and categorical features enter through their own effects. The platform's share of
the logit's variance is about a third, so a model on the joined columns beats the bank alone
by a margin a benchmark can report.

Protected attributes (the bank's, from its KYC; never features, never the platform's)
    ``sex`` and ``age_band``, drawn exactly as for the horizontal synthetic institutions
    (`jointcredit.data.synthetic.protected_attributes`, module doc there) from the bank's
    latent ``z``: ``sex`` independent of everything (no disparity by construction),
    ``age_band`` tied to creditworthiness (younger applicants default more, through the
    features only; age enters no logit). They come from their own stream
    (``[seed, 22, 3]``), so every other column is drawn as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jointcredit.data.synthetic import PROTECTED, protected_attributes
from jointcredit.data.vertical_schema import VerticalSchema, parse_vertical_schema

LABEL = "defaulted"
ID_COLUMN = "phone"
BANK, PLATFORM = "bank", "platform"
INTERCEPT = -2.2
_RHO = 0.3

BANK_FEATURES = {
    "bureau_score": "numeric", "credit_history_years": "numeric", "monthly_income": "numeric",
    "debt_to_income": "numeric", "existing_loans": "numeric", "revolving_utilization": "numeric",
    "delinquencies_24m": "numeric", "open_trades": "numeric", "loan_amount": "numeric",
    "loan_term_months": "numeric", "employment_years": "numeric", "months_at_address": "numeric",
    "home_owner": "categorical",
}  # fmt: skip
PLATFORM_FEATURES = {
    "monthly_spend": "numeric", "spend_volatility": "numeric", "small_txn_share": "numeric",
    "night_txn_share": "numeric", "account_age_months": "numeric",
    "payment_failures_90d": "numeric", "device_changes_90d": "numeric", "network_risk": "numeric",
    "app_logins_30d": "numeric", "merchant_category": "categorical",
}  # fmt: skip
# Numeric features' weight on the standardised value (centre, scale in _SCALE).
BANK_WEIGHTS = {
    "bureau_score": -0.75, "credit_history_years": -0.15, "monthly_income": -0.2,
    "debt_to_income": 0.35, "existing_loans": 0.1, "revolving_utilization": 0.3,
    "delinquencies_24m": 0.3, "open_trades": 0.0, "loan_amount": 0.1, "loan_term_months": 0.1,
    "employment_years": -0.1, "months_at_address": -0.05,
}  # fmt: skip
PLATFORM_WEIGHTS = {
    "monthly_spend": -0.1, "spend_volatility": 0.35, "small_txn_share": 0.2,
    "night_txn_share": 0.25, "account_age_months": -0.2, "payment_failures_90d": 0.45,
    "device_changes_90d": 0.2, "network_risk": 0.35, "app_logins_30d": 0.0,
}  # fmt: skip
HOME_OWNER_EFFECT = {"yes": -0.15, "no": 0.0}
MERCHANT_CATEGORIES = ("groceries", "travel", "electronics", "gaming", "utilities", "luxury")
MERCHANT_EFFECT = dict(zip(MERCHANT_CATEGORIES, (-0.1, -0.05, 0.1, 0.3, -0.15, 0.2), strict=True))
_SCALE = {
    "bureau_score": (690.0, 60.0), "credit_history_years": (8.0, 5.0),
    "monthly_income": (8.6, 0.5), "debt_to_income": (0.35, 0.15), "existing_loans": (2.0, 1.5),
    "revolving_utilization": (0.4, 0.25), "delinquencies_24m": (0.4, 0.8),
    "open_trades": (6.0, 3.0), "loan_amount": (10.0, 0.7), "loan_term_months": (30.0, 15.0),
    "employment_years": (6.0, 5.0), "months_at_address": (48.0, 36.0),
    "monthly_spend": (8.0, 0.6), "spend_volatility": (0.35, 0.15), "small_txn_share": (0.3, 0.15),
    "night_txn_share": (0.12, 0.08), "account_age_months": (40.0, 25.0),
    "payment_failures_90d": (0.5, 0.9), "device_changes_90d": (1.0, 1.2),
    "network_risk": (0.25, 0.15), "app_logins_30d": (20.0, 10.0),
}  # fmt: skip
_LOG_SCALED = ("monthly_income", "loan_amount", "monthly_spend")  # standardised on log1p


def vertical_schema() -> VerticalSchema:
    features = {**BANK_FEATURES, **PLATFORM_FEATURES}
    return parse_vertical_schema(
        {
            "label": LABEL,
            "positive": 1,
            "id": ID_COLUMN,
            "features": features,
            "parties": {
                BANK: {
                    "label": True,
                    "features": list(BANK_FEATURES),
                    "protected": list(PROTECTED),
                },
                PLATFORM: {"features": list(PLATFORM_FEATURES)},
            },
        },
        source="synthetic-vertical",
    )


def phone_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct synthetic mobile numbers, in random order."""
    drawn = np.zeros(0, dtype=np.int64)
    while drawn.size < n:
        more = rng.integers(3 * 10**9, 10 * 10**9, size=n - drawn.size + 16, dtype=np.int64)
        drawn = np.unique(np.concatenate([drawn, more]))
    picked = rng.permutation(drawn)[:n]
    return np.array([f"+86 1{s[:2]} {s[2:6]} {s[6:]}" for s in picked.astype(str)], dtype=object)


def _std(name: str, values: np.ndarray) -> np.ndarray:
    centre, scale = _SCALE[name]
    x = np.log1p(values) if name in _LOG_SCALED else values
    out: np.ndarray = (x - centre) / scale
    return out


def true_default_probability(bank: pd.DataFrame, platform: pd.DataFrame) -> np.ndarray:
    """The ground-truth PD of applicants whose bank and platform rows are aligned."""
    logit = np.full(len(bank), INTERCEPT)
    for name, weight in BANK_WEIGHTS.items():
        logit += weight * _std(name, bank[name].to_numpy(dtype=float))
    for name, weight in PLATFORM_WEIGHTS.items():
        logit += weight * _std(name, platform[name].to_numpy(dtype=float))
    logit += bank["home_owner"].map(HOME_OWNER_EFFECT).to_numpy(dtype=float)
    logit += platform["merchant_category"].map(MERCHANT_EFFECT).to_numpy(dtype=float)
    stacked = (platform["payment_failures_90d"].to_numpy() >= 2) & (
        bank["debt_to_income"].to_numpy() > 0.45
    )
    logit += 0.9 * stacked
    out: np.ndarray = 1.0 / (1.0 + np.exp(-logit))
    return out


def _bank_columns(rng: np.random.Generator, z: np.ndarray) -> pd.DataFrame:
    n = len(z)

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0.0, sd, n)

    income = np.exp(8.6 + 0.25 * z + noise(0.4))
    return pd.DataFrame(
        {
            "bureau_score": np.clip(690 + 55 * z + noise(25), 300, 850).round(),
            "credit_history_years": np.clip(8 + 2.5 * z + noise(4), 0, 50).round(1),
            "monthly_income": income.round(-1),
            "debt_to_income": np.clip(0.35 - 0.06 * z + noise(0.13), 0, 2).round(3),
            "existing_loans": rng.poisson(np.exp(0.6 - 0.2 * z)).astype(float),
            "revolving_utilization": np.clip(0.4 - 0.12 * z + noise(0.2), 0, 1.5).round(3),
            "delinquencies_24m": rng.poisson(np.exp(-1.2 - 0.7 * z)).astype(float),
            "open_trades": rng.poisson(6, n).astype(float),
            "loan_amount": np.exp(10 + 0.2 * z + noise(0.6)).round(-2),
            "loan_term_months": rng.choice([12.0, 24.0, 36.0, 60.0], n, p=[0.2, 0.35, 0.3, 0.15]),
            "employment_years": np.clip(6 + 1.5 * z + noise(4.5), 0, 45).round(1),
            "months_at_address": np.clip(48 + 10 * z + noise(34), 0, 600).round(),
            "home_owner": np.where(z + noise(1.0) > 0.3, "yes", "no").astype(object),
        }
    )


def _platform_columns(rng: np.random.Generator, b: np.ndarray) -> pd.DataFrame:
    n = len(b)

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0.0, sd, n)

    odds = np.exp(np.outer(-b, [0.0, 0.0, 0.2, 0.6, -0.1, 0.4]) + rng.normal(0, 0.3, (n, 6)))
    category = [MERCHANT_CATEGORIES[k] for k in (odds / odds.sum(1, keepdims=True)).argmax(1)]
    return pd.DataFrame(
        {
            "monthly_spend": np.exp(8 + 0.15 * b + noise(0.55)).round(-1),
            "spend_volatility": np.clip(0.35 - 0.08 * b + noise(0.12), 0.01, 2).round(3),
            "small_txn_share": np.clip(0.3 - 0.06 * b + noise(0.13), 0, 1).round(3),
            "night_txn_share": np.clip(0.12 - 0.04 * b + noise(0.06), 0, 1).round(3),
            "account_age_months": np.clip(40 + 8 * b + noise(22), 1, 240).round(),
            "payment_failures_90d": rng.poisson(np.exp(-1.0 - 0.7 * b)).astype(float),
            "device_changes_90d": rng.poisson(np.exp(-0.2 - 0.4 * b)).astype(float),
            "network_risk": np.clip(0.25 - 0.07 * b + noise(0.12), 0, 1).round(3),
            "app_logins_30d": rng.poisson(20, n).astype(float),
            "merchant_category": np.array(category, dtype=object),
        }
    )


def generate(
    joined: int = 30_000,
    *,
    bank_only: float = 0.2,
    platform_only: float = 0.5,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """The bank's and the platform's frames (id column, own features; label at the bank)."""
    if joined < 1 or bank_only < 0 or platform_only < 0:
        raise ValueError("joined must be positive and the extra fractions non-negative")
    rng = np.random.default_rng([seed, 22])
    n_bank, n_platform = round(joined * bank_only), round(joined * platform_only)
    n = joined + n_bank + n_platform
    z = rng.standard_normal(n)
    b = _RHO * z + np.sqrt(1 - _RHO**2) * rng.standard_normal(n)
    ids = phone_numbers(rng, n)
    bank = _bank_columns(rng, z)
    platform = _platform_columns(rng, b)
    # Everyone gets both kinds of column, so the label's truth is defined for all; a party
    # keeps only its own applicants' rows and columns.
    label = (rng.random(n) < true_default_probability(bank, platform)).astype(np.int64)
    at_bank = np.arange(joined + n_bank)
    at_platform = np.r_[np.arange(joined), np.arange(joined + n_bank, n)]
    bank_rows, platform_rows = rng.permutation(at_bank), rng.permutation(at_platform)
    sex, age_band = protected_attributes(np.random.default_rng([seed, 22, 3]), z)
    bank_frame = bank.iloc[bank_rows].assign(
        **{LABEL: label[bank_rows], "sex": sex[bank_rows], "age_band": age_band[bank_rows]}
    )
    platform_frame = platform.iloc[platform_rows]
    return {
        BANK: _with_id(bank_frame, ids[bank_rows]),
        PLATFORM: _with_id(platform_frame, ids[platform_rows]),
    }


def _with_id(frame: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    out = frame.reset_index(drop=True)
    out.insert(0, ID_COLUMN, ids)
    return out
