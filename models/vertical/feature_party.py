"""A feature party (a platform): its own columns' bin codes for the aligned rows, the split
lookup table it keeps, and its side of the exchange.

It sees ciphertexts, the instance space (which aligned rows are in each requested node) and
the local feature and bin of the splits it wins; it never decrypts anything. Its bin edges,
and so the raw thresholds of its splits, stay here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jointcredit.models.trees.histogram import UNUSED
from jointcredit.models.trees.params import BinLayout
from jointcredit.models.trees.tree import CATEGORY_SPLIT, goes_left
from jointcredit.models.vertical import packing
from jointcredit.models.vertical.cipher import Ciphertexts, PublicKey
from jointcredit.models.vertical.messages import (
    EncryptedGradients,
    EncryptedHistograms,
    HistogramQuery,
    PartyColumns,
    SplitDone,
    SplitOrder,
)


@dataclass
class SplitTable:
    """The feature party's part of the model: split id -> its local split."""

    missing: tuple[int, ...]
    feature: list[int] = field(default_factory=list)
    threshold: list[int] = field(default_factory=list)
    default_left: list[bool] = field(default_factory=list)
    special_left: list[int] = field(default_factory=list)
    category_left: list[np.ndarray] = field(default_factory=list)

    def add(self, order: SplitOrder, n_bins: tuple[int, ...] = ()) -> int:
        """Record a split; `n_bins` (each feature's codes) bounds its threshold and set."""
        if not 0 <= order.feature < len(self.missing):
            raise ValueError(f"no local feature {order.feature}")
        codes = n_bins[order.feature] if n_bins else None
        width = len(order.category_left)
        if order.threshold == CATEGORY_SPLIT:
            if not 0 < width <= (codes or width):
                raise ValueError(f"a category set of {width} codes")
        elif not -1 <= order.threshold < (codes if codes is not None else order.threshold + 1):
            raise ValueError(f"threshold {order.threshold} of local feature {order.feature}")
        self.feature.append(order.feature)
        self.threshold.append(order.threshold)
        self.default_left.append(order.default_left)
        self.special_left.append(order.special_left)
        self.category_left.append(np.asarray(order.category_left, dtype=bool))
        return len(self.feature) - 1

    def __len__(self) -> int:
        return len(self.feature)

    def sides(self, codes: np.ndarray, split_ids: np.ndarray | None = None) -> np.ndarray:
        """(rows, splits) bool: whether each row goes left at each split (all splits, or
        `split_ids`): everything the label party needs to route these rows through every
        tree, in one answer."""
        ids = np.arange(len(self)) if split_ids is None else np.asarray(split_ids, np.int64)
        out = np.zeros((len(codes), len(ids)), dtype=bool)
        missing = np.asarray(self.missing)
        for i, k in enumerate(ids.tolist()):
            f = self.feature[k]
            code = codes[:, f]
            cats = self.category_left[k]
            in_set = None
            if self.threshold[k] == CATEGORY_SPLIT:
                in_set = cats[np.clip(code, 0, len(cats) - 1)] & (code < len(cats))
            out[:, i] = goes_left(
                code,
                np.full(len(code), missing[f]),
                np.full(len(code), self.threshold[k]),
                np.full(len(code), self.default_left[k]),
                np.full(len(code), self.special_left[k], dtype=np.int64),
                in_set,
            )
        return out


class FeatureParty:
    def __init__(self, party: int, codes: np.ndarray, layout: BinLayout, key: PublicKey) -> None:
        """`key`: the label party's public key (`jointcredit.privacy.paillier.public_key`
        of the bytes it sent)."""
        layout.check_codes(codes)
        self.party, self.codes, self.layout, self._key = party, codes, layout, key
        self.table = SplitTable(tuple(layout.missing))
        self._buckets = max(layout.n_bins, default=1)
        self._gradients: Ciphertexts | None = None

    def columns(self) -> PartyColumns:
        return PartyColumns(self.party, self.layout)

    def receive_gradients(self, message: EncryptedGradients) -> None:
        if message.public_key != self._key.to_bytes():
            raise ValueError("gradients encrypted under another key than the federation's")
        values = self._key.load(message.ciphertexts)
        if len(values) != len(self.codes) or message.rows != len(self.codes):
            raise ValueError(f"{len(values)} encrypted rows for {len(self.codes)} aligned rows")
        self._gradients = values

    def histograms(self, query: HistogramQuery) -> EncryptedHistograms:
        if self._gradients is None:
            raise RuntimeError("no encrypted gradients for this tree yet")
        slot = np.asarray(query.slot)
        if slot.shape != (len(self.codes),) or slot.min(initial=0) < UNUSED:
            raise ValueError("one node slot per aligned row")
        if slot.max(initial=UNUSED) >= query.n_slots:
            raise ValueError("a row in a node slot beyond the query's")
        groups = [slot == s for s in range(query.n_slots)]
        sums = self._key.bucket_sums(self._gradients, groups, self.codes, self._buckets)
        # Several bin sums per ciphertext where the scheme gains by it: fewer decryptions for
        # the label party, which derives the same count from the same public key.
        per = self._key.sums_per_ciphertext(packing.PACKED_BITS)
        if per > 1:
            sums = [self._key.side_by_side(s, packing.PACKED_BITS, per) for s in sums]
        return EncryptedHistograms(tuple(s.to_bytes() for s in sums), self._buckets)

    def split(self, order: SplitOrder) -> SplitDone:
        split_id = self.table.add(order, self.layout.n_bins)
        rows = np.asarray(order.rows, dtype=np.int64)
        left = self.table.sides(self.codes[rows], np.array([split_id]))[:, 0]
        return SplitDone(split_id, left)
