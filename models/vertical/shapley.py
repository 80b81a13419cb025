"""Exact interventional TreeSHAP of a vertical ensemble at the label party, with each feature
party as one player: its splits are a function of its columns, which the label party never
sees, only the sides its answer gives. The players are the label party's own features and one
per feature party; the values are the Shapley values of v(S) = margin(the applicant on S, the
reference elsewhere), exactly (a group's value is the group's Shapley value, not a sum over
its splits), and they add up to margin(applicant) - margin(reference).

The reference: for the label party's features the portfolio-average applicant's codes (as
for the horizontal trees); for a feature party, at each of its splits the side most training
rows took (the larger child's cover): the label party knows it from its own model, so no
feature party is asked anything for it.

How: `ReferenceShapley` over the ensemble rewritten with each feature party's nodes splitting
on one column per party (0: the reference's side, 1: the applicant's) and, so that the
applicant's side at each such node reaches the routing, one hidden column per node that no
split reads (its value is always 0); the routing of those nodes is overridden (`_left`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jointcredit.models.trees.ensemble import TreeEnsemble, sigmoid
from jointcredit.models.trees.shapley import ReferenceShapley
from jointcredit.models.trees.tree import LEAF, Tree
from jointcredit.models.vertical.model import LABEL_PARTY, VerticalEnsemble


class _Routed(ReferenceShapley):
    def __init__(
        self,
        ensemble: TreeEnsemble,
        reference: np.ndarray,
        remote: np.ndarray,
        group: np.ndarray,
        hidden: np.ndarray,
        reference_left: np.ndarray,
    ) -> None:
        # Set before the base class routes the reference through `_left`.
        self._remote, self._group, self._hidden = remote, group, hidden
        self._reference_left = reference_left
        super().__init__(ensemble, reference)

    def _left(self, codes: np.ndarray) -> np.ndarray:
        left = super()._left(codes)
        if len(self._remote):
            applicant = codes[:, self._group] == 1
            left[:, self._remote] = np.where(
                applicant, codes[:, self._hidden] == 1, self._reference_left
            )
        return left


class VerticalShapley:
    """PD and Shapley values for the label party's rows of own codes and each feature
    party's sides; columns: own features, then `parties` in order."""

    def __init__(self, model: VerticalEnsemble, reference: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.int64).reshape(-1)
        n_own = len(model.missing)
        if len(ref) != n_own:
            raise ValueError(f"a reference of {len(ref)} codes for {n_own} features")
        self.model = model
        self.parties = model.parties()
        column = {p: n_own + g for g, p in enumerate(self.parties)}
        first_hidden = n_own + len(self.parties)
        trees: list[Tree] = []
        remote, group, hidden, ref_left = [], [], [], []
        self._remote_split: list[tuple[int, int]] = []  # (party, split id) per hidden column
        flat = 0
        for t in model.trees:
            internal = t.owner != LEAF
            theirs = internal & (t.owner != LABEL_PARTY)
            feature = np.where(internal, t.split, LEAF).astype(np.int32)
            rank = np.cumsum(internal) - 1  # a node's place among the tree's internal nodes
            for n in np.flatnonzero(theirs).tolist():
                party = int(t.owner[n])
                feature[n] = column[party]
                remote.append(flat + int(rank[n]))
                group.append(column[party])
                hidden.append(first_hidden + len(self._remote_split))
                ref_left.append(bool(t.cover[t.left[n]] >= t.cover[t.right[n]]))
                self._remote_split.append((party, int(t.split[n])))
            flat += int(internal.sum())
            trees.append(
                Tree(
                    feature=feature,
                    threshold=t.threshold.copy(),
                    default_left=t.default_left.copy(),
                    left=t.left.copy(),
                    right=t.right.copy(),
                    value=t.value.copy(),
                    cover=t.cover.copy(),
                    special_left=t.special_left.copy(),
                    category_left=t.category_left.copy(),
                )
            )
        n_hidden = len(self._remote_split)
        missing = (*model.missing, *(-1,) * (len(self.parties) + n_hidden))
        self._width = first_hidden + n_hidden
        self._n_players = first_hidden
        self._reference = np.concatenate([ref, np.zeros(self._width - n_own, dtype=np.int64)])
        self._shapley = _Routed(
            TreeEnsemble(model.base_margin, missing, tuple(trees)),
            self._reference,
            np.array(remote, dtype=np.int64),
            np.array(group, dtype=np.int64),
            np.array(hidden, dtype=np.int64),
            np.array(ref_left, dtype=bool),
        )

    def __call__(
        self, codes: np.ndarray, sides: Mapping[int, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(PD per row, (rows, own features + parties) Shapley values in log-odds)."""
        codes = np.asarray(codes, dtype=np.int64)
        pd_ = sigmoid(self.model.margin(codes, sides))
        rows = np.zeros((len(codes), self._width), dtype=np.int64)
        n_own = codes.shape[1]
        rows[:, :n_own] = codes
        rows[:, n_own : self._n_players] = 1
        for k, (party, split) in enumerate(self._remote_split):
            rows[:, self._n_players + k] = sides[party][:, split]
        values = self._shapley(rows)[:, : self._n_players]
        return pd_, values

    def reference_margin(self) -> float:
        """margin(reference): what the values are pushes from."""
        row = self._reference.reshape(1, -1).copy()
        return float(self._shapley.ensemble.base_margin + self._leaf_sum(row))

    def _leaf_sum(self, row: np.ndarray) -> float:
        left = self._shapley._left(row)[0]
        total, flat = 0.0, 0
        for t in self._shapley.ensemble.trees:
            internal = np.flatnonzero(t.feature != LEAF)
            at = {int(n): flat + i for i, n in enumerate(internal.tolist())}
            node = 0
            while t.feature[node] != LEAF:
                node = int(t.left[node] if left[at[node]] else t.right[node])
            total += float(t.value[node])
            flat += len(internal)
        return total
