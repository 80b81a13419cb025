"""Federated binning: bins agreed without pooling rows, WOE/IV on summed counts, coarse classing.

- `spec`: `BinningSpec` (per feature: numeric edges and special values, or groups of
  categorical levels) and `bin_codes`, the one definition of which bin a value falls in
  (regular bins first, then one per special value, then missing as the last code);
- `grid`: fine classing from count histograms over one agreed fine grid, added up across
  institutions (`grid_histogram`, `merge_histograms`, `fine_bins`);
- `counts`: good/bad counts per bin (`count_bins`, `add_counts`), WOE and IV (`woe_iv`);
- `classing`: coarse classing to a minimum share and, where the schema asks, monotone WOE;
- `table`: the IV table (`binning.json`) and every step on rows (`binning_from_rows`: the
  centralized twin and local-only);
- `encoding`: `WoeFeature`, the scorecard's WOE input in the agreed preprocessing.
"""

from __future__ import annotations

from jointcredit.models.binning.counts import BinCounts, add_counts, count_bins, woe_iv
from jointcredit.models.binning.grid import (
    GRID_DIGITS,
    GridHistogram,
    fine_bins,
    grid_histogram,
    merge_histograms,
)
from jointcredit.models.binning.spec import (
    OTHER,
    BinningSpec,
    CategoricalBins,
    NumericBins,
    bin_codes,
)
from jointcredit.models.binning.table import BinningTable, Classing, binning_from_rows, classify

__all__ = [
    "GRID_DIGITS",
    "OTHER",
    "BinCounts",
    "BinningSpec",
    "BinningTable",
    "CategoricalBins",
    "Classing",
    "GridHistogram",
    "NumericBins",
    "add_counts",
    "bin_codes",
    "binning_from_rows",
    "classify",
    "count_bins",
    "fine_bins",
    "grid_histogram",
    "merge_histograms",
    "woe_iv",
]
