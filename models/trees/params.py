"""What a tree ensemble is trained on and with: the bin layout of the codes, and the boosting
parameters.

The engine sees only bin codes: a (rows, features) integer matrix where feature j's values are
0..n_bins[j]-1, laid out as `jointcredit.models.binning` lays them out: the regular bins first
(ordered: a split sends regular codes <= t left), then one bin per special value, then the
missing code, the last. A special value or missing is no magnitude: each of those bins goes to
the side the split learned for it. A categorical feature's regular bins are its categories: no
order, a split sends a learned set of them left (`jointcredit.models.trees.categorical`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_MISSING = -1
# Each split tries every assignment of a feature's special and missing bins to its two sides.
MAX_SPECIAL = 5


@dataclass(frozen=True)
class BinLayout:
    """Per feature: how many codes it has, which code means missing (`NO_MISSING`: none),
    how many special values come just before it (`special`; empty: none anywhere) and whether
    its regular codes are unordered categories (`categorical`; empty: none is)."""

    n_bins: tuple[int, ...]
    missing: tuple[int, ...]
    special: tuple[int, ...] = ()
    categorical: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.n_bins) != len(self.missing):
            raise ValueError("n_bins and missing must name the same features")
        if self.special and len(self.special) != len(self.n_bins):
            raise ValueError("special must name every feature, or none")
        for j, s in enumerate(self.special):
            if s < 0 or s > MAX_SPECIAL:
                raise ValueError(f"feature {j}: {s} special values (at most {MAX_SPECIAL})")
            if s and self.missing[j] == NO_MISSING:
                raise ValueError(f"feature {j}: special values need the missing code after them")
            if s >= self.n_bins[j] - 1:
                raise ValueError(f"feature {j}: no regular bin besides {s} special values")
        if self.categorical and len(self.categorical) != len(self.n_bins):
            raise ValueError("categorical must name every feature, or none")
        for j, c in enumerate(self.categorical):
            if c and self.n_special(j):
                raise ValueError(f"feature {j}: a categorical feature has no special values")
        for j, (k, m) in enumerate(zip(self.n_bins, self.missing, strict=True)):
            if k < 1:
                raise ValueError(f"feature {j}: {k} bins")
            if m not in (NO_MISSING, k - 1):
                raise ValueError(
                    f"feature {j}: the missing code must be the last ({k - 1}), not {m}"
                )

    @property
    def n_features(self) -> int:
        return len(self.n_bins)

    @property
    def offsets(self) -> np.ndarray:
        """Where each feature's bins start in a histogram's flat bin axis."""
        return np.concatenate([[0], np.cumsum(self.n_bins)[:-1]]).astype(np.int64)

    @property
    def total_bins(self) -> int:
        return int(sum(self.n_bins))

    def ordered_bins(self, j: int) -> int:
        """Feature j's codes that splits order: its regular bins (0 .. this - 1)."""
        return self.n_bins[j] - (self.missing[j] != NO_MISSING) - self.n_special(j)

    def n_special(self, j: int) -> int:
        return self.special[j] if self.special else 0

    def is_categorical(self, j: int) -> bool:
        return bool(self.categorical[j]) if self.categorical else False

    @property
    def category_width(self) -> int:
        """Columns of a tree's `category_left`: the most categories of any categorical
        feature (0: none is categorical)."""
        return max(
            (self.ordered_bins(j) for j in range(self.n_features) if self.is_categorical(j)),
            default=0,
        )

    def check_codes(self, codes: np.ndarray) -> None:
        if codes.ndim != 2 or codes.shape[1] != self.n_features:
            raise ValueError(f"codes of shape {codes.shape} for {self.n_features} features")
        if len(codes) and (codes.min() < 0 or np.any(codes.max(axis=0) >= self.n_bins)):
            raise ValueError("a bin code outside its feature's bins")


Monotone = tuple[int, ...]  # per feature: +1 increasing, -1 decreasing, 0 none


@dataclass(frozen=True)
class TreeParams:
    """Boosting for binary log-loss, in XGBoost's terms (`eta`, `lambda`, `gamma`,
    `min_child_weight`, `max_depth`, `monotone_constraints`), so the same numbers give XGBoost's
    trees."""

    n_trees: int = 100
    max_depth: int = 6
    learning_rate: float = 0.1
    reg_lambda: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    monotone: Monotone = ()  # empty: no feature constrained

    def __post_init__(self) -> None:
        if self.n_trees < 1 or self.max_depth < 1:
            raise ValueError("n_trees and max_depth must be at least 1")
        if self.learning_rate <= 0 or self.reg_lambda < 0 or self.gamma < 0:
            raise ValueError("learning_rate must be positive, reg_lambda and gamma not negative")
        if self.min_child_weight < 0:
            raise ValueError("min_child_weight must not be negative")
        if any(c not in (-1, 0, 1) for c in self.monotone):
            raise ValueError("monotone constraints are -1, 0 or +1 per feature")

    def constraint(self, j: int) -> int:
        return self.monotone[j] if self.monotone else 0

    @property
    def constrained(self) -> bool:
        return any(self.monotone)
