"""The label party's part of a vertical tree ensemble.

A node split on one of the label party's own features keeps that split (feature, bin
threshold, missing and special sides, category set) as `jointcredit.models.trees.tree` does;
a node split on a feature party's feature keeps only (party, split id): the split itself
lives in that party's `SplitTable`. Scoring a row asks each feature party once for the side
of every split it holds (`SplitTable.sides`) and routes locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.ensemble import sigmoid
from jointcredit.models.trees.tree import LEAF, goes_left, in_category

LABEL_PARTY = 0


@dataclass(frozen=True)
class VerticalTree:
    """Per node: `owner` (LEAF at leaves, `LABEL_PARTY`, or a feature party's id) and
    `split` (the label party's own feature, or the owner's split id); the label party's
    splits' bins and sides (zero/False at other parties' nodes); children and leaf values."""

    owner: np.ndarray  # int32
    split: np.ndarray  # int32
    threshold: np.ndarray  # int32
    default_left: np.ndarray  # bool
    special_left: np.ndarray  # int64
    category_left: np.ndarray  # bool (nodes, width)
    left: np.ndarray  # int32
    right: np.ndarray  # int32
    value: np.ndarray  # float64
    cover: np.ndarray  # float64

    @property
    def n_nodes(self) -> int:
        return len(self.owner)

    def leaves(
        self, codes: np.ndarray, missing: np.ndarray, sides: Mapping[int, np.ndarray]
    ) -> np.ndarray:
        """The leaf of each row; `codes` the label party's own, `sides[party]` (rows,
        splits) from that party's `SplitTable.sides`."""
        node = np.zeros(len(codes), dtype=np.int64)
        active = np.arange(len(codes))
        while len(active := active[self.owner[node[active]] != LEAF]):
            at = node[active]
            owner = self.owner[at]
            go = np.zeros(len(active), dtype=bool)
            own = owner == LABEL_PARTY
            if own.any():
                a, rows = at[own], active[own]
                f = self.split[a]
                c = codes[rows, f]
                go[own] = goes_left(
                    c,
                    missing[f],
                    self.threshold[a],
                    self.default_left[a],
                    self.special_left[a],
                    in_category(self.category_left, a, c),
                )
            for party in np.unique(owner[~own]).tolist():
                mine = owner == party
                if party not in sides:
                    raise ValueError(f"no routing from feature party {party}")
                go[mine] = sides[party][active[mine], self.split[at[mine]]]
            node[active] = np.where(go, self.left[at], self.right[at])
        return node


@dataclass(frozen=True)
class VerticalEnsemble:
    base_margin: float
    missing: tuple[int, ...]  # the label party's own features' missing codes
    trees: tuple[VerticalTree, ...]

    def parties(self) -> list[int]:
        """The feature parties whose routing scoring needs."""
        owners = {int(o) for t in self.trees for o in t.owner.tolist()}
        return sorted(owners - {LEAF, LABEL_PARTY})

    def margin(self, codes: np.ndarray, sides: Mapping[int, np.ndarray]) -> np.ndarray:
        if codes.ndim != 2 or codes.shape[1] != len(self.missing):
            raise ValueError(f"codes of shape {codes.shape} for {len(self.missing)} features")
        missing = np.asarray(self.missing)
        out = np.full(len(codes), self.base_margin)
        for t in self.trees:
            out += t.value[t.leaves(codes, missing, sides)]
        return out

    def predict_pd(self, codes: np.ndarray, sides: Mapping[int, np.ndarray]) -> np.ndarray:
        return sigmoid(self.margin(codes, sides))
