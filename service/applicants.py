"""Applicants made from a model's own agreed preprocessing, for any model: the average one
(OpenAPI's example, the start-up probes' base), the probes, and random ones for `jointcredit
score` and `decide` without `--input`.

They need nothing but the artifact: the federation's means and standard deviations (in the
model's units), category vocabularies and frequencies, missing rates, and the schema's `min` /
`max`. Random applicants draw each feature on its own (no correlations between features), so
they show what the model and the policy do, not what a real portfolio looks like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.data.schema import FeatureSpec
from jointcredit.models.binning.encoding import WoeFeature
from jointcredit.models.preprocessing import NumericFeature, PreprocessingSpec
from jointcredit.service.coverage import to_units

SPREAD = 3.0  # random numeric values stay within this many standard deviations of the mean


def _within(value: float, bounds: FeatureSpec) -> float:
    lo = bounds.min if bounds.min is not None else -math.inf
    hi = bounds.max if bounds.max is not None else math.inf
    return min(max(value, lo), hi)


def typical(spec: PreprocessingSpec, schema_features: Mapping[str, FeatureSpec]) -> dict[str, Any]:
    """The average applicant in the data's own units (an example and the probes' base)."""
    row: dict[str, Any] = {}
    for f in spec.features:
        if isinstance(f, WoeFeature):  # the binned scorecard: a value of its commonest bin
            row[f.name] = f.typical()
        elif isinstance(f, NumericFeature):
            row[f.name] = round(_within(to_units(f.mean, f.transform), schema_features[f.name]), 4)
        else:
            freqs = f.frequencies or [1.0] * len(f.levels)
            best = max(range(len(f.categories)), key=lambda i: freqs[i]) if f.categories else 0
            row[f.name] = f.categories[best] if f.categories else None
    return row


def probes(spec: PreprocessingSpec, schema_features: Mapping[str, FeatureSpec]) -> pd.DataFrame:
    """The average applicant, then one feature at a time moved: numeric features to +-2 std
    (in the model's units), categorical ones through each known level, binned ones through
    each bin."""
    base = typical(spec, schema_features)
    rows = [base]
    for f in spec.features:
        if isinstance(f, WoeFeature):
            rows.extend({**base, f.name: f.representative(c)} for c in range(f.bins.n_bins))
        elif isinstance(f, NumericFeature):
            for k in (-2.0, 2.0):
                rows.append({**base, f.name: to_units(f.mean + k * f.std, f.transform)})
        else:
            rows.extend({**base, f.name: c} for c in f.categories)
    return pd.DataFrame(rows, columns=[f.name for f in spec.features])


def sample(
    spec: PreprocessingSpec, schema_features: Mapping[str, FeatureSpec], n: int, seed: int
) -> list[dict[str, Any]]:
    """`n` random applicants (None: missing): numbers normal in the model's units within
    `SPREAD` standard deviations and the schema's bounds (log1p ones in whole units),
    categories by their federated frequencies among the known ones (uniform when the spec has
    none), missing values at the federation's missing rate where the schema imputes."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for f in spec.features:
        if isinstance(f, WoeFeature):  # a bin by its share of the training rows, then a value
            weights = np.asarray(f.rows, dtype=np.float64) + 1e-12
            codes = rng.choice(len(weights), size=n, p=weights / weights.sum()).tolist()
            columns[f.name] = [f.representative(c) for c in codes]
            continue
        if isinstance(f, NumericFeature):
            t = np.clip(rng.normal(f.mean, f.std, n), f.mean - SPREAD * f.std,
                        f.mean + SPREAD * f.std)  # fmt: skip
            bounds = schema_features[f.name]
            # Counts and amounts (log1p) in whole units, anything else to two decimals.
            digits = 0 if f.transform == "log1p" else 2
            values: list[Any] = [float(round(_within(to_units(v, f.transform), bounds), digits))
                                 for v in t.tolist()]  # fmt: skip
            missing = rng.random(n) < (f.missing_rate or 0.0) if f.impute else np.zeros(n, bool)
        else:
            known = len(f.categories)
            weights = np.asarray(f.frequencies[:known] if f.frequencies else [1.0] * known)
            if known and weights.sum() > 0:
                picks = rng.choice(known, size=n, p=weights / weights.sum()).tolist()
                values = [f.categories[i] for i in picks]
            else:  # no level made the vocabulary: a value the model never saw
                values = ["unknown"] * n
            share = f.frequencies[-1] if f.impute and f.frequencies else 0.0
            missing = rng.random(n) < share if f.impute else np.zeros(n, bool)
        columns[f.name] = [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]
    return [{name: col[k] for name, col in columns.items()} for k in range(n)]
