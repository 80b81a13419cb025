"""The trees on the federation's agreed bins (`jointcredit.models.binning.BinningSpec`, the
same fine bins the binned scorecard classes): the bin layout the engine reads, and the fine
bins of rows held in one place (the centralized twin, local-only, tests and benchmarks).

Codes are `bin_codes`' (numeric bin i holds edges[i-1] <= v < edges[i]; then one bin per
special value; missing last), so a split "code <= t" on a numeric feature reads
"value < edges[t]" on the raw scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from jointcredit.data.schema import Schema
from jointcredit.models.binning import (
    BinningSpec,
    NumericBins,
    fine_bins,
    grid_histogram,
    merge_histograms,
)
from jointcredit.models.preprocessing import CategoricalFeature, PreprocessingSpec
from jointcredit.models.trees.params import BinLayout


def layout(bins: BinningSpec) -> BinLayout:
    """Every feature's codes, its missing code the last."""
    return BinLayout(
        tuple(f.n_bins for f in bins.features),
        tuple(f.missing_code for f in bins.features),
        tuple(len(f.special) if isinstance(f, NumericBins) else 0 for f in bins.features),
        tuple(not isinstance(f, NumericBins) for f in bins.features),
    )


def vocabularies(spec: PreprocessingSpec) -> dict[str, list[str]]:
    """The agreed vocabulary of each categorical feature: its bins' levels."""
    return {f.name: f.categories for f in spec.features if isinstance(f, CategoricalFeature)}


def bins_from_rows(
    parts: Sequence[pd.DataFrame], schema: Schema, spec: PreprocessingSpec, max_bins: int
) -> BinningSpec:
    """The fine bins the federation agrees when each of `parts` is one institution's
    training rows (their histograms add up to the pooled rows', so any split of the same rows
    gives the same bins)."""
    histogram = merge_histograms([grid_histogram(x, schema) for x in parts])
    return fine_bins(histogram, schema, vocabularies(spec), max_bins=max_bins)
