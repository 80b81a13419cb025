"""The feature party (a platform) of the vertical scorecard: its own fine bins, unsupervised,
of its aligned training rows, and its side of the exchange.

It sends the label party label-free aggregates of its own columns (rows per fine bin; once the
label party's classing is done, the joint coarse-code counts of each pair of its features) and
sums the label party's ciphertexts per its fine bins; it never decrypts anything, and never
learns the WOE or the weights: they stay at the label party. Of the classing it learns the
merge maps (fine code -> coarse code), which it needs to answer coarse codes anyway, and holds
them to no finer than classing (`merge_maps.check_pooling`) before it counts anything by
them. Its bin edges and levels never leave it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from jointcredit.models.binning import BinningSpec, NumericBins
from jointcredit.models.vertical.cipher import PublicKey
from jointcredit.models.vertical.merge_maps import (
    MIN_BIN_SHARE,
    check_merge_maps,
    check_pooling,
    coarse_codes,
    n_coarse,
)
from jointcredit.models.vertical.scorecard import checks, slots
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
        pair_min_rows: int | None = None,
    ) -> None:
        """`frame`: its aligned training rows in the label party's order; `bins`: its fine
        bins of them (`party_bins.party_bins`); `key`: the label party's public key. A fine
        bin of fewer than `min_rows` rows (at least `checks.MIN_CELL_ROWS`; none aside) is
        refused: the label party would learn its applicants' every other bin. A coarse pair
        table with a non-empty cell of fewer than `pair_min_rows` rows (None: not checked;
        else at least `checks.MIN_CELL_ROWS`) is refused too, the platform's choice: the
        tables are its own label-free co-distribution (docs/PRIVACY.md, "Vertical scorecard:
        what each party learns")."""
        self.bins, self._key = bins, key
        self.codes = bins.codes(frame).astype(np.int64)
        min_rows = checks.min_cell_rows(min_rows)
        for j, f in enumerate(bins.features):
            checks.check_cells(np.bincount(self.codes[:, j], minlength=f.n_bins), f.name, min_rows)
        self.pair_min_rows = None if pair_min_rows is None else checks.min_cell_rows(pair_min_rows)
        self.merge: tuple[np.ndarray, ...] | None = None  # the label party's, once checked

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

    def tables(self, message: EncryptedSlots) -> EncryptedTables:
        """Each ciphertext column summed over the rows of each of its fine bins."""
        buckets = max((f.n_bins for f in self.bins.features), default=1)
        return self._sums(message, self.codes, buckets)

    def cross_slots(self) -> EncryptedSlots:
        """For another feature party (never the label party's node, which holds the secret
        key): per aligned training row, the one-hot of each of its features' coarse codes,
        packed as the label party's slots (`slots`; the label slot left empty) and encrypted
        under the label party's key, fresh randomness per row."""
        if self.merge is None:
            raise ValueError("its coarse codes asked for before the merge maps")
        n = len(self.codes)
        plan = slots.plan(n, n_coarse(self.merge), self._key.plaintext_bits())
        packed = slots.pack(plan, np.zeros(n, np.int64), coarse_codes(self.codes, self.merge))
        return EncryptedSlots(self._key.to_bytes(), self._key.encrypt(packed).to_bytes(), n,
                              plan.columns)  # fmt: skip

    def cross_tables(self, message: EncryptedSlots) -> EncryptedTables:
        """Another feature party's `cross_slots` summed per coarse code of each of its own
        features: the label party decrypts the two parties' coarse x coarse tables."""
        if self.merge is None:
            raise ValueError("another party's codes summed before the merge maps")
        buckets = max(n_coarse(self.merge), default=1)
        return self._sums(message, coarse_codes(self.codes, self.merge), buckets)

    def _sums(self, message: EncryptedSlots, codes: np.ndarray, buckets: int) -> EncryptedTables:
        if message.public_key != self._key.to_bytes():
            raise ValueError("slots encrypted under another key than the label party's")
        n = len(self.codes)
        if message.rows != n or message.columns < 1:
            raise ValueError(f"slots of {message.rows} rows for {n} aligned training rows")
        values = self._key.load(message.ciphertexts)
        if len(values) != n * message.columns:
            raise ValueError(f"{len(values)} ciphertexts, {n * message.columns} announced")
        everyone = [np.ones(n, dtype=bool)]
        out = []
        for q in range(message.columns):
            column = values.take(np.arange(q * n, (q + 1) * n))
            (sums,) = self._key.bucket_sums(column, everyone, codes, buckets)
            out.append(sums.to_bytes())
        return EncryptedTables(tuple(out), buckets)

    def check_maps(self, maps: Sequence[Sequence[int] | np.ndarray]) -> tuple[np.ndarray, ...]:
        """The label party's merge maps, checked: one valid map per feature
        (`check_merge_maps`) and no finer than classing against its own rows per fine bin
        (`check_pooling`); a ValueError naming the feature otherwise."""
        feats = self.bins.features
        out = check_merge_maps(maps, [f.n_bins for f in feats], self.bins.names)
        cols = self.columns()
        check_pooling(out, cols.rows, cols.regular, MIN_BIN_SHARE, cols.names, cols.categorical)
        return out

    def coarse(self, maps: Sequence[Sequence[int] | np.ndarray]) -> PairCounts:
        """Keep the label party's merge maps (checked, once) and answer the joint coarse-code
        counts of each pair of its features, each cell at least `pair_min_rows` when asked."""
        if self.merge is not None:
            raise ValueError("the merge maps were given already")
        checked = self.check_maps(maps)
        codes = coarse_codes(self.codes, checked)
        k = n_coarse(checked)
        names = self.bins.names
        tables = []
        for a, b in combinations(range(len(k)), 2):
            joint = np.bincount(codes[:, a] * k[b] + codes[:, b], minlength=k[a] * k[b])
            table = joint.reshape(k[a], k[b]).astype(np.int64)
            if self.pair_min_rows is not None:
                checks.check_pair_cells(table, names[a], names[b], self.pair_min_rows)
            tables.append(table)
        self.merge = checked  # only once every table passed
        return PairCounts(tuple(tables), self.pair_min_rows)

    def cross(self, peer: ScorecardFeatureParty) -> EncryptedTables:
        """In process, as a link (`label_party.ScorecardLink`): `peer`'s coarse codes summed
        per its own coarse codes (over Flower the peer's ciphertexts go to this party past the
        label party's node: client/vertical_scorecard)."""
        return self.cross_tables(peer.cross_slots())
