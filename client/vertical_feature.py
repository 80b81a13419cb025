"""A feature party's node in a vertical run: its side of the PSI, its own bins of its aligned
rows, and its side of the trees (`jointcredit.models.vertical.feature_party.FeatureParty`),
each request answered from its own columns; at the end its part of the model, written and
signed with its own key. Its raw values, bin edges and split thresholds never leave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.client import vertical_wire as wire
from jointcredit.client.vertical_label import own_bins
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import MODEL_DIR, FeaturePart, write_feature_part
from jointcredit.models.vertical.feature_party import FeatureParty, SplitTable
from jointcredit.privacy.paillier import public_key
from jointcredit.privacy.psi import FeaturePsi
from jointcredit.trust.store import TrustStore

Arrays = dict[str, np.ndarray]


@dataclass
class FeatureSession:
    party: str
    schema: VerticalSchema
    frame: pd.DataFrame
    settings: VerticalSettings
    trust: TrustStore
    signer: Any
    created_at: str
    psi: FeaturePsi | None = None
    bins: BinningSpec | None = None
    train_codes: np.ndarray | None = None
    test_codes: np.ndarray | None = None
    index: int = 0
    trees: FeatureParty | None = None

    def reblind(self, arrays: Arrays) -> Arrays:
        if self.psi is not None:
            raise ProtocolError("PSI already under way")
        self.psi = FeaturePsi(self.frame[self.schema.id].tolist())
        peer = wire._get(arrays, v.BLINDED, "uint8", 2)
        return {v.BLINDED: self.psi.blinded(), v.REBLINDED: self.psi.reblind(peer)}

    def aligned(self, arrays: Arrays, index: int) -> Arrays:
        if self.psi is None or self.bins is not None:
            raise ProtocolError("aligning before PSI, or twice")
        rows = self.psi.aligned_rows(wire._get(arrays, v.POSITIONS, "uint32")).rows
        order = wire._get(arrays, v.ORDER, "int64")
        train = wire._get(arrays, v.TRAIN_ROWS, "bool")
        if sorted(order.tolist()) != list(range(len(rows))) or len(train) != len(rows):
            raise ProtocolError("the aligned rows' order is not a permutation of the matches")
        mine = self.frame.iloc[rows[order]]
        self.bins = own_bins(mine[train], self.schema, self.party, self.settings)
        self.train_codes = self.bins.codes(mine[train]).astype(np.int64)
        self.test_codes = self.bins.codes(mine[~train]).astype(np.int64)
        if not 0 < index < 1 << 20:
            raise ProtocolError(f"feature party index {index}")
        self.index = index
        return wire.columns_arrays(bin_layout(self.bins))

    def serve(self, action: str, arrays: Arrays) -> Arrays:
        if self.bins is None or self.train_codes is None or self.test_codes is None:
            raise ProtocolError("a training request before PSI")
        if action == v.GRADIENTS:
            message = wire.gradients_from(arrays)
            if self.trees is None:  # the label party's key, from its first message
                key = public_key(message.public_key)
                self.trees = FeatureParty(self.index, self.train_codes, bin_layout(self.bins), key)
            self.trees.receive_gradients(message)
            return {}
        if action == v.HISTOGRAMS:
            return wire.histograms_arrays(self._trees(action).histograms(wire.query_from(arrays)))
        if action == v.SPLIT:
            order = wire.order_from(arrays)
            wire.rows_check(order.rows, len(self.train_codes), "a split's rows")
            return wire.done_arrays(self._trees(action).split(order))
        # No tree asked this party anything (every tree the label party's own): no split here.
        table = self.trees.table if self.trees else SplitTable(bin_layout(self.bins).missing)
        if action == v.SIDES:
            return {v.LEFT: table.sides(self.test_codes)}
        if action == v.WRITE_PART:
            digest = write_feature_part(
                Path(self.settings.out_dir) / MODEL_DIR,
                FeaturePart(self.party, self.index, table, self.bins),
                created_at=self.created_at, signer=self.signer, trust=self.trust,
            )  # fmt: skip
            return {v.PART_SHA256: np.frombuffer(digest.encode("ascii"), dtype=np.uint8)}
        raise ProtocolError(f"unknown request {action!r}")

    def _trees(self, action: str) -> FeatureParty:
        if self.trees is None:
            raise ProtocolError(f"{action} before any gradients")
        return self.trees
