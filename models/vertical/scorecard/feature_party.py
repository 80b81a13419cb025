"""The feature party (a platform) of the vertical scorecard: its own fine bins, unsupervised,
of its aligned training rows, and its side of the exchange.

It sends the label party label-free aggregates of its own columns (rows per fine bin, joint
fine-bin counts of each pair of its features) and sums the label party's ciphertexts per its
fine bins; it never decrypts anything, and never learns the coarse classing, the WOE or the
weights: they stay at the label party. Its bin edges and levels never leave it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jointcredit.models.binning import BinningSpec, NumericBins
from jointcredit.models.vertical.cipher import PublicKey
from jointcredit.models.vertical.scorecard import checks
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)


class ScorecardFeatureParty:
    def __init__(
        self,
        frame: pd.DataFrame,
        bins: BinningSpec,
        key: PublicKey,
        *,
        min_rows: int = checks.MIN_CELL_ROWS,
        pair_min_rows: int = 0,
    ) -> None:
        """`frame`: its aligned training rows in the label party's order; `bins`: its fine
        bins of them (`party_bins.party_bins`); `key`: the label party's public key. A fine
        bin of fewer than `min_rows` rows (at least `checks.MIN_CELL_ROWS`; none aside) is
        refused: the label party would learn its applicants' every other bin. A pair-table
        cell of fewer than `pair_min_rows` (0: not checked; else at least
        `checks.MIN_CELL_ROWS`) is refused too, the platform's choice: the tables are its own
        label-free co-distribution, and at the shipped data's fine bins most pairs have a
        cell of 1-4 rows (docs/PRIVACY.md, "Vertical scorecard: what each party learns")."""
        self.bins, self._key = bins, key
        self.codes = bins.codes(frame).astype(np.int64)
        min_rows = checks.min_cell_rows(min_rows)
        for j, f in enumerate(bins.features):
            checks.check_cells(np.bincount(self.codes[:, j], minlength=f.n_bins), f.name, min_rows)
        names = [f.name for f in bins.features]
        self._pairs = self._pair_tables()
        pairs = ((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
        pair_min = checks.min_cell_rows(pair_min_rows) if pair_min_rows > 0 else 0
        for (a, b), table in zip(pairs, self._pairs, strict=True):
            checks.check_cells(table, f"pair table ({a}, {b})", pair_min,
                               f"coarser fine bins of {a!r} or {b!r}")  # fmt: skip

    def columns(self) -> FineColumns:
        feats = self.bins.features
        return FineColumns(
            names=tuple(f.name for f in feats),
            categorical=tuple(not isinstance(f, NumericBins) for f in feats),
            regular=tuple(f.regular for f in feats),
            special=tuple(len(f.special) if isinstance(f, NumericBins) else 0 for f in feats),
            rows=tuple(
                np.bincount(self.codes[:, j], minlength=f.n_bins).astype(np.int64)
                for j, f in enumerate(feats)
            ),
        )

    def pairs(self) -> PairCounts:
        return PairCounts(self._pairs)

    def _pair_tables(self) -> tuple[np.ndarray, ...]:
        n_bins = [f.n_bins for f in self.bins.features]
        tables = []
        for j in range(len(n_bins)):
            for k in range(j + 1, len(n_bins)):
                joint = self.codes[:, j] * n_bins[k] + self.codes[:, k]
                counts = np.bincount(joint, minlength=n_bins[j] * n_bins[k])
                tables.append(counts.reshape(n_bins[j], n_bins[k]).astype(np.int64))
        return tuple(tables)

    def tables(self, message: EncryptedSlots) -> EncryptedTables:
        """Each ciphertext column summed over the rows of each of its fine bins."""
        if message.public_key != self._key.to_bytes():
            raise ValueError("slots encrypted under another key than the label party's")
        n = len(self.codes)
        if message.rows != n or message.columns < 1:
            raise ValueError(f"slots of {message.rows} rows for {n} aligned training rows")
        values = self._key.load(message.ciphertexts)
        if len(values) != n * message.columns:
            raise ValueError(f"{len(values)} ciphertexts, {n * message.columns} announced")
        buckets = max((f.n_bins for f in self.bins.features), default=1)
        everyone = [np.ones(n, dtype=bool)]
        out = []
        for q in range(message.columns):
            column = values.take(np.arange(q * n, (q + 1) * n))
            (sums,) = self._key.bucket_sums(column, everyone, self.codes, buckets)
            out.append(sums.to_bytes())
        return EncryptedTables(tuple(out), buckets)
