"""Synthetic aligned bin codes for the vertical trees' tests and benchmark: a label party's
and a feature party's columns of the same rows, with a known default process that uses both.

Each column is a standard normal binned at its quantiles into `bins` regular bins; some
carry missing values (their own last code), some special values (a bin each just before the
missing one, with its own risk), one per party is categorical (unordered categories with
their own effects). The log-odds add every column's effect, so the feature party's columns
carry signal the label party's lack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.params import BinLayout


@dataclass(frozen=True)
class Columns:
    codes: np.ndarray  # (rows, features) int64
    layout: BinLayout
    logit: np.ndarray  # this party's part of the log-odds


@dataclass(frozen=True)
class VerticalCodes:
    label: Columns
    feature: Columns
    y: np.ndarray


def _columns(rng: np.random.Generator, n: int, p: int, bins: int, strength: float) -> Columns:
    codes = np.zeros((n, p), dtype=np.int64)
    logit = np.zeros(n)
    n_bins, missing, special, categorical = [], [], [], []
    for j in range(p):
        x = rng.standard_normal(n)
        weight = strength * rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0])
        if j == p - 1 and p > 1:  # categorical: 8 categories, their own effects
            k = 8
            code = rng.integers(0, k, n)
            logit += weight * rng.standard_normal(k)[code]
            codes[:, j] = code
            n_bins.append(k + 1)
            missing.append(k)
            special.append(0)
            categorical.append(True)
            absent = rng.random(n) < 0.03
            codes[absent, j] = k
            continue
        logit += weight * x
        edges = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
        code = np.searchsorted(edges, x, side="left")
        s = 2 if j % 3 == 0 else 0
        kind = rng.random(n)
        for i in range(s):  # special values: a bin each, a risk of its own
            hit = (kind >= i * 0.04) & (kind < (i + 1) * 0.04)
            code[hit] = bins + i
            logit[hit] += (1.5 if i == 0 else -1.0) * abs(weight)
        absent = (kind >= 0.1) & (kind < 0.1 + (0.05 if j % 2 == 0 else 0.0))
        code[absent] = bins + s
        codes[:, j] = code
        n_bins.append(bins + s + 1)
        missing.append(bins + s)
        special.append(s)
        categorical.append(False)
    layout = BinLayout(tuple(n_bins), tuple(missing), tuple(special), tuple(categorical))
    return Columns(codes, layout, logit)


def vertical_codes(
    rows: int, label_features: int, feature_features: int, bins: int = 32, seed: int = 0
) -> VerticalCodes:
    rng = np.random.default_rng(seed)
    label = _columns(rng, rows, label_features, bins, strength=0.5)
    feature = _columns(rng, rows, feature_features, bins, strength=0.6)
    logit = label.logit + feature.logit - 1.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return VerticalCodes(label, feature, y)
