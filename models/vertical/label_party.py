"""The label party (the bank) grows vertical trees with the central engine's own grower and
split finder (`jointcredit.models.trees`), over its own features and every feature party's.

Per tree it encrypts each aligned row's packed (gradient, hessian, 1) once and sends it to
every feature party; a feature party returns its bin sums several to a ciphertext where the
scheme gains by it (`cipher.PublicKey.sums_per_ciphertext`), so one decryption reads several.
Per level the grower asks for the smaller child's histograms (it derives each sibling as
parent - child itself, after decryption); the label party builds its own features'
histograms in plaintext, sends each feature party the instance space (which row is in which
requested node), decrypts the encrypted bin sums it gets back, checks every feature's
bins add up to the node's totals it already knows, and lays them beside its own in the joined
layout (its features first, then each feature party's in order). The winning party of each
split is told its local feature and bin and returns a split id and the node's left rows.
Equal histograms give equal splits: the result is the central engine's ensemble on the
joined rows (the lossless tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from jointcredit.models.trees import histogram
from jointcredit.models.trees.boost import base_margin, gradients
from jointcredit.models.trees.grower import LevelRequest, TreeGrower
from jointcredit.models.trees.params import BinLayout, TreeParams
from jointcredit.models.trees.tree import LEAF, Tree, goes_left, in_category
from jointcredit.models.vertical import packing
from jointcredit.models.vertical.cipher import SecretKey
from jointcredit.models.vertical.messages import (
    EncryptedGradients,
    EncryptedHistograms,
    HistogramQuery,
    PartyColumns,
    SplitDone,
    SplitOrder,
)
from jointcredit.models.vertical.model import LABEL_PARTY, VerticalEnsemble, VerticalTree


class FeaturePartyLink(Protocol):
    """How the label party reaches one feature party (a method call now, a message later)."""

    def columns(self) -> PartyColumns: ...

    def receive_gradients(self, message: EncryptedGradients) -> None: ...

    def histograms(self, query: HistogramQuery) -> EncryptedHistograms: ...

    def split(self, order: SplitOrder) -> SplitDone: ...


class InconsistentHistograms(ValueError):
    """A feature party's bins do not add up to the node's totals: it summed other rows."""


def joined_layout(own: BinLayout, others: Sequence[BinLayout]) -> BinLayout:
    """The label party's features first, then each feature party's, in order."""
    parts = [own, *others]
    return BinLayout(
        tuple(k for p in parts for k in p.n_bins),
        tuple(m for p in parts for m in p.missing),
        tuple(p.n_special(j) for p in parts for j in range(p.n_features)),
        tuple(p.is_categorical(j) for p in parts for j in range(p.n_features)),
    )


@dataclass(frozen=True)
class _Party:
    link: FeaturePartyLink
    id: int
    layout: BinLayout
    start: int  # its first feature in the joined layout


def train(
    codes: np.ndarray,
    y: np.ndarray,
    layout: BinLayout,
    parties: Sequence[FeaturePartyLink],
    params: TreeParams,
    key: SecretKey,
    *,
    label_only_trees: int = 0,
) -> VerticalEnsemble:
    """`codes` (rows, own features) of the aligned rows, `y` their labels; each of `parties`
    holds the same rows in the same order. The first `label_only_trees` trees are grown on
    the label party's features alone, the feature parties seeing nothing of them
    (SecureBoost's reduced-leakage variant: the first tree's nodes follow the labels most
    closely)."""
    bins = histogram.flat_bins(codes, layout)
    y = np.asarray(y, dtype=np.float64)
    linked: list[_Party] = []
    start = layout.n_features
    for link in parties:
        cols = link.columns()
        if cols.party == LABEL_PARTY or cols.party in [p.id for p in linked]:
            raise ValueError(f"feature party id {cols.party} is the label party's or taken")
        linked.append(_Party(link, cols.party, cols.layout, start))
        start += cols.layout.n_features
    joined = joined_layout(layout, [p.layout for p in linked])
    base = base_margin(y.sum(), len(y))
    margin = np.full(len(y), base)
    trees = []
    if label_only_trees < 0:
        raise ValueError("label_only_trees must not be negative")
    own_params = replace(params, monotone=params.monotone[: layout.n_features])
    for i in range(params.n_trees):
        grad, hess = gradients(margin, y)
        if i < label_only_trees:
            tree, leaf = _grow(codes, bins, grad, hess, layout, layout, [], own_params, key)
        else:
            tree, leaf = _grow(codes, bins, grad, hess, layout, joined, linked, params, key)
        trees.append(tree)
        margin = margin + tree.value[leaf]
    return VerticalEnsemble(base, tuple(layout.missing), tuple(trees))


def _grow(
    codes: np.ndarray,
    bins: np.ndarray,
    grad: np.ndarray,
    hess: np.ndarray,
    layout: BinLayout,
    joined: BinLayout,
    parties: list[_Party],
    params: TreeParams,
    key: SecretKey,
) -> tuple[VerticalTree, np.ndarray]:
    fixed = packing.to_fixed(grad, hess)
    if parties:
        message = EncryptedGradients(
            key.public.to_bytes(), key.public.encrypt(packing.pack(fixed)).to_bytes(), len(grad)
        )
        for p in parties:
            p.link.receive_gradients(message)
    grower = TreeGrower(joined, params)
    node = np.zeros(len(grad), dtype=np.int64)
    owner: dict[int, tuple[int, int]] = {}  # node -> (party, split id) of feature parties
    while (request := grower.request()) is not None:
        slot = np.full(request.tree.n_nodes, histogram.UNUSED, dtype=np.int64)
        slot[request.build] = np.arange(len(request.build))
        row_slot = slot[node]
        own = histogram.build(bins, grad, hess, row_slot, len(request.build), layout.total_bins)
        parts = [own] + [_decrypted(p, row_slot, len(request.build), fixed, key) for p in parties]
        grower.receive(np.concatenate(parts, axis=1))
        _route(request, grower.tree(), node, codes, layout, parties, owner)
    return _vertical(grower.tree(), layout.n_features, parties, owner), node


def _decrypted(
    party: _Party, row_slot: np.ndarray, n_slots: int, fixed: packing.Fixed, key: SecretKey
) -> np.ndarray:
    """The party's histograms of the requested nodes, (n_slots, its total bins, 2)."""
    reply = party.link.histograms(HistogramQuery(row_slot, n_slots))
    lay = party.layout
    if len(reply.nodes) != n_slots or reply.buckets < max(lay.n_bins, default=0):
        raise InconsistentHistograms(f"feature party {party.id}: histograms of another shape")
    positions = np.concatenate(
        [j * reply.buckets + np.arange(k) for j, k in enumerate(lay.n_bins)]
    ).astype(np.int64)
    n_sums = reply.buckets * lay.n_features
    per = key.public.sums_per_ciphertext(packing.PACKED_BITS)
    out = np.zeros((n_slots, lay.total_bins, 2))
    for s, data in enumerate(reply.nodes):
        cipher = key.public.load(data)
        if len(cipher) != -(-n_sums // per):
            raise InconsistentHistograms(f"feature party {party.id}: a node of another size")
        # Only the ciphertexts holding a bin of the layout (sum j * buckets + k sits in
        # ciphertext (j * buckets + k) mod their count); the rest stand in as zero.
        plain = [0] * len(cipher)
        needed = np.unique(positions % len(cipher))
        for q, v in zip(needed.tolist(), key.decrypt(cipher.take(needed)), strict=True):
            plain[q] = v
        sums = packing.split_slots(plain, per, n_sums)
        g, h, c = packing.unpack([sums[i] for i in positions.tolist()])
        totals = fixed.totals(np.flatnonzero(row_slot == s))
        ends = (lay.offsets + lay.n_bins).tolist()
        for j, (a, b) in enumerate(zip(lay.offsets.tolist(), ends, strict=True)):
            if (int(g[a:b].sum()), int(h[a:b].sum()), int(c[a:b].sum())) != totals:
                raise InconsistentHistograms(
                    f"feature party {party.id}: feature {j}'s bins do not add up to the node"
                )
        out[s] = packing.to_float(g, h, c)
    return out


def _route(
    request: LevelRequest,
    tree: Tree,
    node: np.ndarray,
    codes: np.ndarray,
    layout: BinLayout,
    parties: list[_Party],
    owner: dict[int, tuple[int, int]],
) -> None:
    """Move the rows of every node split at this level to its children, in place; a feature
    party's split is carried out by that party."""
    before = request.tree
    split = [
        n
        for n in np.flatnonzero(tree.feature != LEAF).tolist()
        if n >= before.n_nodes or before.feature[n] == LEAF
    ]
    missing = np.asarray(layout.missing)
    for n in split:
        rows = np.flatnonzero(node == n)
        f = int(tree.feature[n])
        if f < layout.n_features:
            c = codes[rows, f]
            at = np.full(len(rows), n)
            left = goes_left(
                c,
                missing[f],
                tree.threshold[at],
                tree.default_left[at],
                tree.special_left[at],
                in_category(tree.category_left, at, c),
            )
        else:
            p = next(p for p in reversed(parties) if f >= p.start)
            done = p.link.split(
                SplitOrder(
                    feature=f - p.start,
                    threshold=int(tree.threshold[n]),
                    default_left=bool(tree.default_left[n]),
                    special_left=int(tree.special_left[n]),
                    # As wide as that feature's own codes: the joined width is the widest
                    # categorical of any party, which the feature party's bounds refuse.
                    category_left=tree.category_left[n][: p.layout.n_bins[f - p.start]].copy(),
                    rows=rows,
                )
            )
            left = np.asarray(done.left, dtype=bool)
            if left.shape != rows.shape:
                raise ValueError(f"feature party {p.id}: a side for each row of the node")
            owner[n] = (p.id, int(done.split_id))
        node[rows] = np.where(left, tree.left[n], tree.right[n])


def _vertical(
    tree: Tree, n_own: int, parties: list[_Party], owner: dict[int, tuple[int, int]]
) -> VerticalTree:
    """The grown tree as the label party keeps it: other parties' splits by id only."""
    internal = tree.feature != LEAF
    remote = internal & (tree.feature >= n_own)
    who = np.where(internal, LABEL_PARTY, LEAF).astype(np.int32)
    split = np.where(internal, tree.feature, 0).astype(np.int32)
    for n, (party, split_id) in owner.items():
        who[n], split[n] = party, split_id
    return VerticalTree(
        owner=who,
        split=split,
        threshold=np.where(remote, 0, tree.threshold).astype(np.int32),
        default_left=tree.default_left & ~remote,
        special_left=np.where(remote, 0, tree.special_left).astype(np.int64),
        category_left=tree.category_left & ~remote[:, None],
        left=tree.left.copy(),
        right=tree.right.copy(),
        value=tree.value.copy(),
        cover=tree.cover.copy(),
    )
