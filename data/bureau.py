"""Bureau-style columns of the synthetic institutions (`jointcredit.data.synthetic`).

Real bureau and ledger extracts are not the clean, roughly normal columns a standardised
logistic regression likes. These columns reproduce the usual pathologies, each with a known
effect on default (the terms of `logit`, added to the synthetic ground truth):

``revolving_utilization``
    Revolving balance over limit. Most accounts lie in 0-1.3; about 8 % are inactive (exactly
    0) and about 1.3 % have a token limit, so the ratio runs into the hundreds or thousands.
    Effect (non-monotone)::

        0.4                                      if u == 0     (inactive revolvers)
        4.0 * clip(u - 0.25, 0, 1)               if 0 < u <= 10 (flat to 0.25, steep to 1.25)
        0.3                                      if u > 10     (token limits: near average)

``delinquencies_24m``
    Delinquencies in the last 24 months, real counts 0-95; the bureau codes ``96`` (no bureau
    file: the count is unknown) and ``98`` (file too new to report). Declared as the schema's
    ``special = [96, 98]`` (with ``max = 95``) and ``monotone = "increasing"``. Effect::

        0.35 * min(d, 4)   for a count d;   1.1 for 96;   0.3 for 98

``open_trades``
    Open credit lines. Effect (U-shaped: thin files and the over-extended are riskier)::

        0.35 * max(3 - t, 0) + 0.12 * clip(t - 10, 0, 15)

Missing income (`publish_capacity`)
    ``monthly_income`` is missing for about 10 % of applicants (at ``h = 1``: banks 6 %,
    consumer-finance companies 15 %, micro-lenders 24 %), and, as in many bureau extracts, the
    published ``debt_to_income`` is then computed against an income floor of ``INCOME_FLOOR``
    (1 dollar): it becomes the monthly debt payment itself, in the hundreds or thousands. The
    ground truth knows only what the lender knows: for those rows it has no income or
    debt-ratio term, only ``MISSING_INCOME_EFFECT``.

``application_month``
    When the application was made, months 1-36: the schema's ``time`` column (never a
    feature). The default process does not change over time; the population drifts: revolving
    utilisation rises by about 0.1 over the three years, so later applicants default a little
    more often (about 14 % in the first year, 16 % in the third) and an out-of-time test set
    differs from the training rows.

Heterogeneity: each kind of lender shifts these populations by ``h`` times its profile below
(micro-lenders see more missing incomes and "no file" codes, consumer-finance companies higher
utilisation and more token limits), as the other synthetic columns do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.data.schema import FeatureSpec

TIME_COLUMN = "application_month"
MONTHS = 36
INCOME_FLOOR = 1.0
NO_FILE = 96.0
TOO_NEW = 98.0
MISSING_INCOME_EFFECT = 0.45

FEATURES: dict[str, FeatureSpec] = {
    "revolving_utilization": FeatureSpec(type="numeric", min=0),
    "delinquencies_24m": FeatureSpec(
        type="numeric", min=0, max=95, special=(NO_FILE, TOO_NEW), monotone="increasing"
    ),
    "open_trades": FeatureSpec(type="numeric", min=0),
}


@dataclass(frozen=True)
class _Profile:
    """How one kind of lender's bureau population departs from the shared one at h = 1
    (logit or log-scale shifts)."""

    missing_income: float
    no_file: float
    utilization: float
    token_limit: float
    trades: float


_PROFILES: dict[str, _Profile] = {
    "bank": _Profile(missing_income=-0.6, no_file=-0.8, utilization=-0.3, token_limit=-0.3,
                     trades=0.2),
    "consumer-finance": _Profile(missing_income=0.4, no_file=0.2, utilization=0.5,
                                 token_limit=0.6, trades=0.1),
    "micro-lender": _Profile(missing_income=1.0, no_file=1.2, utilization=0.1, token_limit=0.2,
                             trades=-0.5),
}  # fmt: skip


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
    return out


def draw(rng: np.random.Generator, z: np.ndarray, h: float, kind: str) -> dict[str, np.ndarray]:
    """One institution's bureau columns for applicants of latent creditworthiness `z`, plus
    `income_missing` (a mask for `publish_capacity`). Published values: counts as floats,
    ratios rounded to 4 decimals."""
    n = len(z)
    p = _PROFILES[kind]
    month = rng.integers(1, MONTHS + 1, n)
    drift = 0.6 * (month - 1) / (MONTHS - 1)  # utilisation creeps up over the window

    inactive = rng.random(n) < _sigmoid(-2.5 + 0.3 * z)
    token = rng.random(n) < _sigmoid(-4.2 + h * p.token_limit)
    ordinary = 1.3 * _sigmoid(rng.normal(-0.8 - 0.8 * z + drift + h * p.utilization, 1.0))
    tail = np.exp(rng.normal(6.5, 1.2, n))
    utilization = np.where(inactive, 0.0, np.where(token, tail, ordinary))

    counts = np.minimum(rng.poisson(np.exp(-1.0 - 0.9 * z)), 95).astype(np.float64)
    code = rng.random(n)
    no_file = code < _sigmoid(-3.2 - 0.3 * z + h * p.no_file)
    too_new = ~no_file & (code > 1.0 - _sigmoid(-3.5))
    delinquencies = np.where(no_file, NO_FILE, np.where(too_new, TOO_NEW, counts))

    trades = rng.poisson(np.exp(rng.normal(np.log(5.5) + 0.05 * z + h * p.trades, 0.5)))
    income_missing = rng.random(n) < _sigmoid(-2.2 - 0.2 * z + h * p.missing_income)
    return {
        TIME_COLUMN: month.astype(np.int64),
        "revolving_utilization": np.round(utilization, 4),
        "delinquencies_24m": delinquencies,
        "open_trades": trades.astype(np.float64),
        "income_missing": income_missing,
    }


def publish_capacity(
    income: np.ndarray, debt_to_income: np.ndarray, missing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(monthly_income, debt_to_income) as the lender's file holds them: no income where it is
    missing, and there the debt ratio taken against `INCOME_FLOOR` (so it explodes)."""
    payments = debt_to_income * income
    published_income = np.where(missing, np.nan, income)
    published_ratio = np.where(missing, np.round(payments / INCOME_FLOOR, 3), debt_to_income)
    return published_income, published_ratio


def logit(
    revolving_utilization: np.ndarray, delinquencies_24m: np.ndarray, open_trades: np.ndarray
) -> np.ndarray:
    """The bureau columns' terms of the ground-truth logit (module docstring)."""
    u = revolving_utilization
    ordinary = 4.0 * np.clip(u - 0.25, 0.0, 1.0)
    utilization = np.where(u == 0.0, 0.4, np.where(u > 10.0, 0.3, ordinary))
    d = delinquencies_24m
    counted = 0.35 * np.minimum(np.where(d >= NO_FILE, 0.0, d), 4.0)
    delinquency = np.where(d == NO_FILE, 1.1, np.where(d == TOO_NEW, 0.3, counted))
    t = open_trades
    trades = 0.35 * np.maximum(3.0 - t, 0.0) + 0.12 * np.clip(t - 10.0, 0.0, 15.0)
    out: np.ndarray = utilization + delinquency + trades
    return out
