"""Exact interventional TreeSHAP of a vertical ensemble at the label party, with each feature
party as one player: its splits are a function of its columns, which the label party never
sees, only the sides its answer gives. The players are the label party's own features and one
per feature party; the values are the Shapley values of v(S) = margin(the applicant on S, the
reference elsewhere), exactly (a party's value is the group's Shapley value, not a sum over
its splits), and they add up to margin(applicant) - margin(reference).

The reference: at each node, the side the reference takes. For the label party's nodes it is
the side of a reference applicant's codes when one is given; for a feature party's nodes (and
the label party's without a reference applicant) the side most training rows took (the
larger child's cover): the label party knows it from its own model, so no feature party is
asked anything for it.

How: `ReferenceShapley` over the ensemble rewritten so that every node splits on its player's
column (1: the applicant's side, 0: the reference's), with the node's routing overridden
(`_left`): the applicant's side from its codes (the label party's nodes) or from one hidden
column per feature-party node holding the side the party answered; no split reads a hidden
or code column, so they get no value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.ensemble import TreeEnsemble, sigmoid
from jointcredit.models.trees.shapley import ReferenceShapley
from jointcredit.models.trees.tree import LEAF, Tree, goes_left, in_category
from jointcredit.models.vertical.model import LABEL_PARTY, VerticalEnsemble


class _Routed(ReferenceShapley):
    """Columns: players, then the label party's codes, then one side per remote node."""

    def __init__(self, ensemble: TreeEnsemble, routing: _Routing) -> None:
        self._r = routing  # set before the base class routes the reference through `_left`
        super().__init__(ensemble, np.zeros(ensemble.n_features, dtype=np.int64))

    def _left(self, codes: np.ndarray) -> np.ndarray:
        r = self._r
        applicant = np.zeros((len(codes), len(r.player)), dtype=bool)
        if len(r.own):
            code = codes[:, r.code_column[r.own]]
            nodes = np.broadcast_to(np.arange(len(r.own)), code.shape)
            applicant[:, r.own] = goes_left(
                code, r.missing[r.own], r.threshold[r.own], r.default_left[r.own],
                r.special_left[r.own], in_category(r.category_left, nodes, code),
            )  # fmt: skip
        if len(r.remote):
            applicant[:, r.remote] = codes[:, r.hidden] == 1
        out: np.ndarray = np.where(codes[:, r.player] == 1, applicant, r.reference_left)
        return out


@dataclass(frozen=True)
class _Routing:
    """Per internal node of the ensemble (in `ReferenceShapley`'s flat order): its player's
    column, the reference's side, and what routes the applicant (the label party's nodes:
    their split on its code column; remote nodes: their hidden column)."""

    player: np.ndarray
    reference_left: np.ndarray
    code_column: np.ndarray
    missing: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    special_left: np.ndarray
    category_left: np.ndarray  # the label party's nodes' sets, (own nodes, width)
    own: np.ndarray  # which nodes are the label party's
    remote: np.ndarray
    hidden: np.ndarray  # each remote node's hidden column


class VerticalShapley:
    """PD and Shapley values for rows of the label party's own codes and each feature party's
    sides (by its index in the trees); value columns: own features, then `parties` in order.
    `reference`: a reference applicant's own codes (None: the majority side everywhere)."""

    def __init__(self, model: VerticalEnsemble, reference: np.ndarray | None = None) -> None:
        n_own = len(model.missing)
        ref = None if reference is None else np.asarray(reference, dtype=np.int64).reshape(-1)
        if ref is not None and len(ref) != n_own:
            raise ValueError(f"a reference of {len(ref)} codes for {n_own} features")
        self.model = model
        self.parties = model.parties()
        player_of = {p: n_own + g for g, p in enumerate(self.parties)}
        self._n_players = n_own + len(self.parties)
        code_start = self._n_players
        hidden_start = code_start + n_own
        cols: dict[str, list[int]] = {k: [] for k in (
            "player", "reference_left", "code_column", "missing", "threshold", "default_left",
            "special_left", "own", "remote", "hidden")}  # fmt: skip
        categories: list[np.ndarray] = []
        self._remote_split: list[tuple[int, int]] = []  # (party, split id) per hidden column
        missing = np.asarray(model.missing, dtype=np.int64)
        width = max((t.category_left.shape[1] for t in model.trees), default=0)
        trees: list[Tree] = []
        for t in model.trees:
            feature = np.full(t.n_nodes, LEAF, dtype=np.int32)
            for n in np.flatnonzero(t.owner != LEAF).tolist():
                k = len(cols["player"])
                major = bool(t.cover[t.left[n]] >= t.cover[t.right[n]])
                f = int(t.split[n])
                cats = np.zeros(width, dtype=bool)
                if t.owner[n] == LABEL_PARTY:
                    cols["own"].append(k)
                    feature[n] = f
                    cats[: t.category_left.shape[1]] = t.category_left[n]
                    if ref is not None:
                        at = np.array([n])
                        major = bool(goes_left(
                            ref[f:f + 1], missing[f:f + 1], t.threshold[at], t.default_left[at],
                            t.special_left[at], in_category(t.category_left, at, ref[f:f + 1]),
                        )[0])  # fmt: skip
                    cols["code_column"].append(code_start + f)
                    cols["missing"].append(int(missing[f]))
                else:
                    party = int(t.owner[n])
                    feature[n] = player_of[party]
                    cols["remote"].append(k)
                    cols["hidden"].append(hidden_start + len(self._remote_split))
                    self._remote_split.append((party, f))
                    cols["code_column"].append(0)
                    cols["missing"].append(-1)
                cols["player"].append(int(feature[n]))
                cols["threshold"].append(int(t.threshold[n]))
                cols["default_left"].append(int(t.default_left[n]))
                cols["special_left"].append(int(t.special_left[n]))
                cols["reference_left"].append(int(major))
                categories.append(cats)
            trees.append(Tree(
                feature=feature, threshold=np.zeros(t.n_nodes, np.int32),
                default_left=np.zeros(t.n_nodes, bool), left=t.left.copy(), right=t.right.copy(),
                value=t.value.copy(), cover=t.cover.copy(),
                special_left=np.zeros(t.n_nodes, np.int64),
                category_left=np.zeros((t.n_nodes, 0), bool),
            ))  # fmt: skip
        arrays = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}
        for name in ("reference_left", "default_left"):
            arrays[name] = arrays[name].astype(bool)
        every = np.asarray(categories, dtype=bool).reshape(len(categories), width)
        routing = _Routing(**arrays, category_left=every[arrays["own"]])
        self._width = hidden_start + len(self._remote_split)
        self._code_start = code_start
        view = TreeEnsemble(model.base_margin, (-1,) * self._width, tuple(trees))
        self._shapley = _Routed(view, routing)
        # Per party: its hidden columns and the split id each holds the side of.
        self._hidden = {
            party: (
                np.array([hidden_start + k for k, (q, _) in enumerate(self._remote_split)
                          if q == party], dtype=np.int64),
                np.array([s for q, s in self._remote_split if q == party], dtype=np.int64),
            )
            for party in self.parties
        }  # fmt: skip
        self._reference_margin = self.reference_margin()

    def __call__(
        self, codes: np.ndarray, sides: Mapping[int, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(PD per row, (rows, own features + parties) Shapley values in log-odds)."""
        codes = np.asarray(codes, dtype=np.int64)
        rows = np.zeros((len(codes), self._width), dtype=np.int64)
        rows[:, : self._n_players] = 1
        rows[:, self._code_start : self._code_start + codes.shape[1]] = codes
        for party, (columns, splits) in self._hidden.items():
            rows[:, columns] = sides[party][:, splits]
        values = self._shapley(rows)[:, : self._n_players]
        # The values add up to margin(row) - margin(reference) (efficiency), so the margin
        # needs no second walk through the trees (tests/test_vertical_scoring.py holds the PD
        # to the ensemble's own routing).
        pd_ = sigmoid(self._reference_margin + values.sum(axis=1))
        return pd_, values

    def reference_margin(self) -> float:
        """margin(reference): the margin the values are pushes from."""
        left = self._shapley._left(np.zeros((1, self._width), dtype=np.int64))[0]
        total, flat = self.model.base_margin, 0
        for t in self._shapley.ensemble.trees:
            internal = np.flatnonzero(t.feature != LEAF)
            at = {int(n): flat + i for i, n in enumerate(internal.tolist())}
            node = 0
            while t.feature[node] != LEAF:
                node = int(t.left[node] if left[at[node]] else t.right[node])
            total += float(t.value[node])
            flat += len(internal)
        return total
