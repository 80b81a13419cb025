"""Synthetic lending institutions with a known ground-truth default process.

Everything here is simulated: no row describes a real borrower, and the numbers are plausible
rather than calibrated to any market. The point is a federation whose truth is known, so the
learned models (local, federated, central) can be compared with the process that drew the labels.

Institutions
    Index ``i`` is a ``bank``, ``consumer-finance`` or ``micro-lender`` (the kind cycles with
    ``i``) with id ``f"{kind}-{i:02d}"`` (wider past 100). Each institution is generated on its
    own from ``np.random.default_rng([seed, i, ...])``, so a federated client can build only its
    own frame. Sizes vary around ``rows`` (banks ~1.4x, consumer finance ~1x, micro-lenders ~0.6x,
    +-15% jitter, at least 200 rows) whatever the heterogeneity: quantity skew is always present.

Factor groups (column: meaning)
    credit history        ``bureau_score`` (300-850), ``months_since_delinquency`` (missing when
                          never delinquent), ``credit_history_years``
    capacity and debt     ``monthly_income``, ``debt_to_income``, ``existing_loans``
    spending behaviour    ``spend_volatility`` (coefficient of variation of monthly spend),
                          ``small_txn_share`` (share of many small high-frequency transactions)
    identity              ``id_verified`` ("yes"/"no")
    network signals       ``network_risk`` (0-1, risk among linked counterparties)
    industry, region      ``industry`` (8 sectors), ``region`` (6 regions)
    multi-lender demand   ``recent_lender_inquiries`` (count, last 90 days)
    thin digital file     ``offline_activity_share`` (0-1)
    bureau extract        ``revolving_utilization`` (heavy-tailed), ``delinquencies_24m`` (with
                          the codes 96/98), ``open_trades``; ``monthly_income`` is missing for
                          some applicants and ``debt_to_income`` then explodes (`bureau`)
    time                  ``application_month`` (1-36), the schema's time column

Protected attributes (never features: the schema's `protected`; used to measure fairness)
    ``sex`` ("female"/"male", probability 1/2 each) is drawn independently of everything else:
    the true PD does not depend on it, so no disparity exists by construction (adverse impact
    ratio 1 up to sampling). ``age_band`` ("18-29", "30-49", "50+") carries a known disparity:
    with ``u = -0.9 z + N(0, 0.8)`` it is "18-29" when ``u > 0.7``, "50+" when ``u < -0.5``,
    "30-49" otherwise, so younger applicants have lower creditworthiness on average and a
    higher true default rate, through the features only (age itself enters no logit). Both come
    from their own stream (``[seed, i, 3]``), so every other column is drawn as before. The
    figures this implies at the default policy's cut-offs (approval rates under the true PD,
    and what the models measure) are in docs/GOVERNANCE.md, "Fairness".

Features share a latent creditworthiness ``z ~ N(mu, 1)`` so they are correlated as in real
files (better borrowers: higher scores, income, fewer inquiries, ...).

Ground truth
    ``P(default) = sigmoid(logit)`` with one fixed logit for every institution (populations
    differ, the default process does not); see `true_default_probability`. With
    ``s = (bureau_score - 690) / 60``::

        logit = INTERCEPT
              - 0.36 s + 1.2 max(-1 - s, 0)                       # risk accelerates below 630
              + [delinquent] (0.1 + 1.3 exp(-months_since_delinquency / 9))   # recency decays
              - 0.15 log1p(credit_history_years)
              + capacity                                          # income known, or not
              + 0.08 existing_loans + 0.8 (spend_volatility - 0.3)
              + 0.55 small_txn_share + 0.5 [id_verified == "no"] + 1.1 network_risk
              + 0.25 log1p(recent_lender_inquiries)
              + 0.8 [recent_lender_inquiries >= 3]                  # loan stacking
              + 1.6 offline_activity_share exp(-credit_history_years / 5)   # thin AND young file
              + 0.7 [industry == agriculture and region == interior]    # drought exposure
              + INDUSTRY_EFFECT[industry] + REGION_EFFECT[region]
              + bureau.logit(revolving_utilization, delinquencies_24m, open_trades)

        capacity = - 0.3 (log(monthly_income) - 8.1) + 0.25 debt_to_income
                   + 4.0 max(debt_to_income - 0.4, 0) spend_volatility / 0.3   # stretched, erratic
                   when the income is known; bureau.MISSING_INCOME_EFFECT when it is missing

    Outside the bureau terms every effect is monotone with the sign a lender expects; the
    hinges, steps and interactions are what a linear model cannot express, and the bureau
    columns add heavy tails, codes and non-monotone effects (`bureau` documents them).
    ``INTERCEPT`` is set so the pooled default rate of the IID population is about 14%; the AUC
    of the true PD against the drawn labels is about 0.94, the ceiling for any learned model.

Heterogeneity ``h`` in [0, 1]
    Every population parameter is ``base + h * (kind shift + institution shift)``: at ``h = 0``
    all institutions draw from one population (IID); at ``h = 1`` consumer-finance lenders see
    lower scores, more inquiries and more small transactions, micro-lenders thin files,
    agriculture/retail and the interior/north regions, banks higher incomes and older histories,
    and each institution has its own score/income/inquiry shifts. Sector and region mixes are
    ``Dirichlet(alpha0 * target)`` with ``target`` blended from the shared to the kind mix and
    ``alpha0 = c / h**2`` falling as ``h`` grows. Default rates spread apart as ``h`` grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jointcredit.data import bureau
from jointcredit.data.schema import FeatureSpec, Schema

INSTITUTION_KINDS: tuple[str, ...] = ("bank", "consumer-finance", "micro-lender")

LABEL = "defaulted"
ID_COLUMN = "applicant_id"
MIN_ROWS = 200

INDUSTRIES: tuple[str, ...] = (
    "retail",
    "wholesale",
    "manufacturing",
    "education",
    "hospitality",
    "construction",
    "agriculture",
    "professional-services",
)
REGIONS: tuple[str, ...] = ("capital", "north", "south", "east", "west", "interior")

# Additive logit effects of the ground truth (sector cyclicality, regional economies).
INDUSTRY_EFFECT: dict[str, float] = {
    "retail": 0.15,
    "wholesale": 0.0,
    "manufacturing": 0.05,
    "education": -0.35,
    "hospitality": 0.35,
    "construction": 0.3,
    "agriculture": 0.25,
    "professional-services": -0.3,
}
REGION_EFFECT: dict[str, float] = {
    "capital": -0.15,
    "north": 0.1,
    "south": 0.05,
    "east": -0.05,
    "west": 0.0,
    "interior": 0.25,
}
# Calibrated by simulation (30 institutions x 3000 rows): pooled default rate ~14% at h = 0.
INTERCEPT = -6.11

# Shared (IID) category mixes and each kind's target mix; all entries > 0 (Dirichlet alphas).
_BASE_INDUSTRY = np.array([0.18, 0.10, 0.14, 0.10, 0.12, 0.12, 0.10, 0.14])
_BASE_REGION = np.array([0.25, 0.15, 0.17, 0.15, 0.15, 0.13])


@dataclass(frozen=True)
class _KindProfile:
    """How one kind of lender's population departs from the shared one at h = 1."""

    size: float  # row-count multiplier around `rows`
    z: float  # mean latent creditworthiness
    log_income: float
    log_history: float
    dti: float  # log-scale shift of debt-to-income
    log_loans: float
    log_volatility: float
    small_txn: float  # logit shift
    id_unverified: float  # logit shift of verification failure
    network: float  # logit shift
    log_inquiries: float
    offline: float  # logit shift
    industry: tuple[float, ...]
    region: tuple[float, ...]


_KINDS: dict[str, _KindProfile] = {
    "bank": _KindProfile(
        size=1.4,
        z=0.3,
        log_income=0.3,
        log_history=0.35,
        dti=0.0,
        log_loans=0.15,
        log_volatility=-0.15,
        small_txn=-0.4,
        id_unverified=-1.0,
        network=-0.3,
        log_inquiries=-0.3,
        offline=-0.5,
        industry=(0.10, 0.16, 0.20, 0.14, 0.06, 0.08, 0.04, 0.22),
        region=(0.40, 0.12, 0.14, 0.14, 0.14, 0.06),
    ),
    "consumer-finance": _KindProfile(
        size=1.0,
        z=-0.3,
        log_income=-0.1,
        log_history=-0.2,
        dti=0.1,
        log_loans=0.2,
        log_volatility=0.15,
        small_txn=0.7,
        id_unverified=0.2,
        network=0.2,
        log_inquiries=0.5,
        offline=-0.2,
        industry=(0.30, 0.06, 0.10, 0.06, 0.22, 0.14, 0.04, 0.08),
        region=(0.30, 0.14, 0.18, 0.14, 0.16, 0.08),
    ),
    "micro-lender": _KindProfile(
        size=0.6,
        z=-0.1,
        log_income=-0.35,
        log_history=-0.4,
        dti=0.1,
        log_loans=-0.2,
        log_volatility=0.2,
        small_txn=0.4,
        id_unverified=0.6,
        network=0.3,
        log_inquiries=0.2,
        offline=1.4,
        industry=(0.28, 0.04, 0.04, 0.03, 0.10, 0.08, 0.38, 0.05),
        region=(0.05, 0.25, 0.12, 0.10, 0.10, 0.38),
    ),
}

# Per-institution shift scales (standard deviations at h = 1), on top of the kind shift.
_INST_Z_SD = 0.25
_INST_INCOME_SD = 0.2
_INST_INQUIRY_SD = 0.3
# Dirichlet concentration alpha0 = c / h**2 (capped so h -> 0 stays numerically tame).
_INDUSTRY_CONCENTRATION = 6.0
_REGION_CONCENTRATION = 4.0
_MAX_CONCENTRATION = 1e6


PROTECTED = ("sex", "age_band")
AGE_BANDS = ("18-29", "30-49", "50+")


def synthetic_schema() -> Schema:
    """The schema of every synthetic institution frame."""
    num = FeatureSpec(type="numeric")
    cat = FeatureSpec(type="categorical")
    features: dict[str, FeatureSpec] = {
        "bureau_score": num,
        "months_since_delinquency": FeatureSpec(type="numeric", missing="impute"),
        "credit_history_years": num,
        "monthly_income": FeatureSpec(type="numeric", transform="log1p", missing="impute"),
        "debt_to_income": num,
        "existing_loans": num,
        "spend_volatility": num,
        "small_txn_share": num,
        "id_verified": cat,
        "network_risk": num,
        "industry": cat,
        "region": cat,
        "recent_lender_inquiries": num,
        "offline_activity_share": num,
        **bureau.FEATURES,
    }
    return Schema(
        label=LABEL,
        positive=1,
        id=ID_COLUMN,
        time=bureau.TIME_COLUMN,
        protected=PROTECTED,
        features=features,
    )


def protected_attributes(rng: np.random.Generator, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`sex` independent of everything; `age_band` tied to creditworthiness (module doc)."""
    n = len(z)
    sex = np.where(rng.random(n) < 0.5, "female", "male")
    u = -0.9 * z + rng.normal(0.0, 0.8, n)
    age_band = np.where(u > 0.7, AGE_BANDS[0], np.where(u < -0.5, AGE_BANDS[2], AGE_BANDS[1]))
    return sex, age_band


def _check_federation(n_institutions: int) -> None:
    if n_institutions < 1:
        raise ValueError(f"n_institutions must be at least 1, got {n_institutions}")


def _check_args(n_institutions: int, rows: int, heterogeneity: float) -> None:
    _check_federation(n_institutions)
    if rows < MIN_ROWS:
        raise ValueError(f"rows must be at least {MIN_ROWS}, got {rows}")
    # Written so NaN fails too.
    if not 0.0 <= heterogeneity <= 1.0:
        raise ValueError(f"heterogeneity must be in [0, 1], got {heterogeneity}")


def _kind(index: int) -> str:
    return INSTITUTION_KINDS[index % len(INSTITUTION_KINDS)]


def _institution_id(index: int, n_institutions: int) -> str:
    width = max(2, len(str(n_institutions - 1)))
    return f"{_kind(index)}-{index:0{width}d}"


def institution_ids(n_institutions: int) -> list[str]:
    """Deterministic ids: bank-00, consumer-finance-01, micro-lender-02, bank-03, ..."""
    _check_federation(n_institutions)
    return [_institution_id(i, n_institutions) for i in range(n_institutions)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _mix(
    rng: np.random.Generator,
    base: np.ndarray,
    kind_mix: tuple[float, ...],
    h: float,
    concentration: float,
) -> np.ndarray:
    # Blend the shared mix towards the kind's, then scatter institutions around it; at h = 0
    # the mix is exactly the shared one (IID).
    blend: np.ndarray = (1.0 - h) * base + h * np.asarray(kind_mix)
    target: np.ndarray = blend / blend.sum()
    if h == 0.0:
        return target
    alpha0 = min(concentration / h**2, _MAX_CONCENTRATION)
    mix: np.ndarray = rng.dirichlet(alpha0 * target)
    # Renormalise: rng.choice rejects probabilities whose sum drifts from 1.
    out: np.ndarray = mix / mix.sum()
    return out


def generate_institution(
    index: int, n_institutions: int, *, rows: int, heterogeneity: float, seed: int
) -> pd.DataFrame:
    """The raw frame of institution `index` (id, schema features, `defaulted` in {0, 1}).

    Depends only on its arguments, never on other institutions' draws.
    """
    _check_args(n_institutions, rows, heterogeneity)
    if not 0 <= index < n_institutions:
        raise ValueError(f"index must be in [0, {n_institutions}), got {index}")
    h = float(heterogeneity)
    kind = _KINDS[_kind(index)]
    # Separate streams: the institution's profile and its rows, so changing one never reshuffles
    # the other.
    prof = np.random.default_rng([seed, index, 0])
    rng = np.random.default_rng([seed, index, 1])

    n = max(MIN_ROWS, round(rows * kind.size * prof.uniform(0.85, 1.15)))
    inst_z, inst_income, inst_inquiries = prof.standard_normal(3)
    industry_mix = _mix(prof, _BASE_INDUSTRY, kind.industry, h, _INDUSTRY_CONCENTRATION)
    region_mix = _mix(prof, _BASE_REGION, kind.region, h, _REGION_CONCENTRATION)

    z = rng.normal(h * (kind.z + _INST_Z_SD * inst_z), 1.0, n)

    bureau_score = np.clip(np.rint(690.0 + 55.0 * z + 25.0 * rng.standard_normal(n)), 300, 850)
    history = np.clip(
        np.exp(rng.normal(np.log(6.0) + 0.2 * z + h * kind.log_history, 0.6)), 0.1, 50.0
    )
    ever_delinquent = rng.random(n) < _sigmoid(-1.0 - 1.1 * z)
    months = np.clip(np.floor(rng.exponential(30.0 * np.exp(0.4 * z))) + 1.0, 1.0, 120.0)
    months_since_delinquency = np.where(ever_delinquent, months, np.nan)
    income = np.exp(
        rng.normal(8.1 + 0.25 * z + h * (kind.log_income + _INST_INCOME_SD * inst_income), 0.55)
    )
    dti = np.clip(rng.gamma(4.0, 0.09 * np.exp(-0.15 * z + h * kind.dti)), 0.0, 2.0)
    existing_loans = rng.poisson(np.exp(np.log(1.5) - 0.1 * z + h * kind.log_loans))
    volatility = np.exp(rng.normal(np.log(0.3) - 0.15 * z + h * kind.log_volatility, 0.45))
    small_txn = _sigmoid(rng.normal(-0.8 - 0.2 * z + h * kind.small_txn, 0.9))
    id_verified = rng.random(n) >= _sigmoid(-2.8 - 0.3 * z + h * kind.id_unverified)
    network = _sigmoid(rng.normal(-1.3 - 0.35 * z + h * kind.network, 0.8))
    industry = rng.choice(len(INDUSTRIES), size=n, p=industry_mix)
    region = rng.choice(len(REGIONS), size=n, p=region_mix)
    inquiries = rng.poisson(
        np.exp(
            np.log(0.9) - 0.35 * z + h * (kind.log_inquiries + _INST_INQUIRY_SD * inst_inquiries)
        )
    )
    offline = _sigmoid(rng.normal(-1.2 - 0.1 * z + h * kind.offline, 1.0))
    # Its own stream, so the columns above are drawn as they always were.
    extract = bureau.draw(np.random.default_rng([seed, index, 2]), z, h, _kind(index))
    income, dti = bureau.publish_capacity(
        np.round(income, 0), np.round(dti, 3), extract.pop("income_missing")
    )
    month = extract.pop(bureau.TIME_COLUMN)
    sex, age_band = protected_attributes(np.random.default_rng([seed, index, 3]), z)

    # Publish rounded values (as a lender's file would hold) and draw the labels from exactly
    # those, so the truth is a function of what a model sees.
    numeric: dict[str, np.ndarray] = {
        "bureau_score": bureau_score,
        "months_since_delinquency": months_since_delinquency,
        "credit_history_years": np.round(history, 1),
        "monthly_income": income,
        "debt_to_income": dti,
        "existing_loans": existing_loans.astype(np.float64),
        "spend_volatility": np.round(volatility, 3),
        "small_txn_share": np.round(small_txn, 3),
        "network_risk": np.round(network, 3),
        "recent_lender_inquiries": inquiries.astype(np.float64),
        "offline_activity_share": np.round(offline, 3),
        **extract,
    }
    pd_true = _probability(
        **numeric,
        unverified=(~id_verified).astype(np.float64),
        industry_code=industry,
        region_code=region,
    )
    defaulted = (rng.random(n) < pd_true).astype(np.int64)

    inst_id = _institution_id(index, n_institutions)
    counts = ("bureau_score", "existing_loans", "recent_lender_inquiries")
    columns: dict[str, object] = {
        ID_COLUMN: np.char.add(f"{inst_id}-", np.char.zfill(np.arange(n).astype(str), 6)),
        bureau.TIME_COLUMN: month,
        **{k: v.astype(np.int64) if k in counts else v for k, v in numeric.items()},
        "id_verified": np.where(id_verified, "yes", "no"),
        "industry": np.asarray(INDUSTRIES)[industry],
        "region": np.asarray(REGIONS)[region],
        LABEL: defaulted,
        "sex": sex,
        "age_band": age_band,
    }
    order = [ID_COLUMN, bureau.TIME_COLUMN, *synthetic_schema().features, *PROTECTED, LABEL]
    return pd.DataFrame({k: columns[k] for k in order})


def generate(
    n_institutions: int, *, rows: int, heterogeneity: float, seed: int
) -> dict[str, pd.DataFrame]:
    """Every institution's frame, keyed by id, in index order."""
    _check_args(n_institutions, rows, heterogeneity)
    return {
        _institution_id(i, n_institutions): generate_institution(
            i, n_institutions, rows=rows, heterogeneity=heterogeneity, seed=seed
        )
        for i in range(n_institutions)
    }


def _codes(frame: pd.DataFrame, column: str, categories: tuple[str, ...]) -> np.ndarray:
    # -1: not one of the categories
    codes: np.ndarray = pd.Index(categories).get_indexer(pd.Index(frame[column]))
    if (codes < 0).any():
        unknown = sorted({str(v) for v in frame.loc[codes < 0, column].unique()})
        raise ValueError(f"column {column!r} has unknown or missing categories: {unknown}")
    return codes


_INDUSTRY_EFFECTS = np.array([INDUSTRY_EFFECT[k] for k in INDUSTRIES])
_REGION_EFFECTS = np.array([REGION_EFFECT[k] for k in REGIONS])
_AGRICULTURE = INDUSTRIES.index("agriculture")
_INTERIOR = REGIONS.index("interior")


def _probability(
    *,
    bureau_score: np.ndarray,
    months_since_delinquency: np.ndarray,
    credit_history_years: np.ndarray,
    monthly_income: np.ndarray,
    debt_to_income: np.ndarray,
    existing_loans: np.ndarray,
    spend_volatility: np.ndarray,
    small_txn_share: np.ndarray,
    unverified: np.ndarray,
    network_risk: np.ndarray,
    industry_code: np.ndarray,
    region_code: np.ndarray,
    recent_lender_inquiries: np.ndarray,
    offline_activity_share: np.ndarray,
    revolving_utilization: np.ndarray,
    delinquencies_24m: np.ndarray,
    open_trades: np.ndarray,
) -> np.ndarray:
    # The one ground-truth formula; arrays so the generator skips a pandas round trip.
    s = (bureau_score - 690.0) / 60.0
    msd = months_since_delinquency
    history = credit_history_years
    vol = spend_volatility
    known = ~np.isnan(monthly_income)
    dti = np.where(known, debt_to_income, 0.0)  # without an income the ratio means nothing
    capacity = np.where(
        known,
        -0.3 * (np.log(np.maximum(np.nan_to_num(monthly_income), 1.0)) - 8.1)
        + 0.25 * dti
        + 4.0 * np.maximum(dti - 0.4, 0.0) * vol / 0.3,
        bureau.MISSING_INCOME_EFFECT,
    )
    logit = (
        INTERCEPT
        - 0.36 * s
        + 1.2 * np.maximum(-1.0 - s, 0.0)
        + np.where(np.isnan(msd), 0.0, 0.1 + 1.3 * np.exp(-np.nan_to_num(msd) / 9.0))
        - 0.15 * np.log1p(history)
        + capacity
        + 0.08 * existing_loans
        + 0.8 * (vol - 0.3)
        + 0.55 * small_txn_share
        + 0.5 * unverified
        + 1.1 * network_risk
        + 0.25 * np.log1p(recent_lender_inquiries)
        + 0.8 * (recent_lender_inquiries >= 3)
        + 1.6 * offline_activity_share * np.exp(-history / 5.0)
        + 0.7 * ((industry_code == _AGRICULTURE) & (region_code == _INTERIOR))
        + _INDUSTRY_EFFECTS[industry_code]
        + _REGION_EFFECTS[region_code]
        + bureau.logit(revolving_utilization, delinquencies_24m, open_trades)
    )
    return _sigmoid(logit)


def true_default_probability(frame: pd.DataFrame) -> np.ndarray:
    """Ground-truth probability of default for each row (formula in the module docstring).

    Raises `ValueError` for a missing feature column or an unknown industry/region.
    """
    missing = [c for c in synthetic_schema().features if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks synthetic feature columns: {missing}")

    def col(name: str) -> np.ndarray:
        out: np.ndarray = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    verified = _codes(frame, "id_verified", ("yes", "no"))
    return _probability(
        bureau_score=col("bureau_score"),
        months_since_delinquency=col("months_since_delinquency"),
        credit_history_years=col("credit_history_years"),
        monthly_income=col("monthly_income"),
        debt_to_income=col("debt_to_income"),
        existing_loans=col("existing_loans"),
        spend_volatility=col("spend_volatility"),
        small_txn_share=col("small_txn_share"),
        unverified=(verified == 1).astype(np.float64),
        network_risk=col("network_risk"),
        industry_code=_codes(frame, "industry", INDUSTRIES),
        region_code=_codes(frame, "region", REGIONS),
        recent_lender_inquiries=col("recent_lender_inquiries"),
        offline_activity_share=col("offline_activity_share"),
        revolving_utilization=col("revolving_utilization"),
        delinquencies_24m=col("delinquencies_24m"),
        open_trades=col("open_trades"),
    )
