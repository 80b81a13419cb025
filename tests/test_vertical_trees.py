"""Vertical SecureBoost-style trees: the label party and its feature parties grow exactly the
central engine's trees on the joined rows (lossless), the feature parties send ciphertexts
only, the label party keeps no threshold of their features, and a wrong key, an altered
ciphertext or a feature party summing other rows fails loudly."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
from vertical_helpers import sub_layout

from jointcredit.models.trees import BinLayout, Tree, TreeEnsemble, TreeParams
from jointcredit.models.trees import train as central_train
from jointcredit.models.trees.tree import LEAF
from jointcredit.models.vertical import packing
from jointcredit.models.vertical.feature_party import FeatureParty
from jointcredit.models.vertical.label_party import (
    InconsistentHistograms,
    joined_layout,
    train,
)
from jointcredit.models.vertical.messages import (
    EncryptedGradients,
    EncryptedHistograms,
    HistogramQuery,
)
from jointcredit.models.vertical.model import LABEL_PARTY, VerticalEnsemble
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.simulations.vertical_codes import VerticalCodes, vertical_codes

PARAMS = TreeParams(n_trees=4, max_depth=3, learning_rate=0.3)


@pytest.fixture(scope="module", params=["ou", "paillier"])
def key(request: pytest.FixtureRequest) -> HeuSecretKey:
    """Every test runs under each scheme the trees offer: lossless whichever is chosen."""
    return HeuSecretKey(request.param)


@pytest.fixture(scope="module")
def data() -> VerticalCodes:
    return vertical_codes(2000, 3, 4, bins=8, seed=1)


def _parties(data: VerticalCodes, key: HeuSecretKey, groups: list[list[int]]) -> list[FeatureParty]:
    """The feature columns split among feature parties 1, 2, ... by `groups`."""
    pub = public_key(key.public.to_bytes())
    return [
        FeatureParty(i + 1, data.feature.codes[:, g], sub_layout(data.feature.layout, g), pub)
        for i, g in enumerate(groups)
    ]


def _joined_trees(model: VerticalEnsemble, parties: list[FeatureParty], n_own: int) -> list[Tree]:
    """The vertical trees with every split put back from its owner's table (what no party
    holds alone), in the central engine's form."""
    starts, s = {}, n_own
    for p in parties:
        starts[p.party], s = s, s + p.layout.n_features
    out = []
    for t in model.trees:
        feature = np.where(t.owner == LEAF, LEAF, t.split).astype(np.int32)
        threshold, default_left = t.threshold.copy(), t.default_left.copy()
        special_left, category_left = t.special_left.copy(), t.category_left.copy()
        for p in parties:
            table = p.table
            for n in np.flatnonzero(t.owner == p.party):
                k = int(t.split[n])
                feature[n] = starts[p.party] + table.feature[k]
                threshold[n] = table.threshold[k]
                default_left[n] = table.default_left[k]
                special_left[n] = table.special_left[k]
                width = min(category_left.shape[1], len(table.category_left[k]))
                category_left[n, :width] = table.category_left[k][:width]
        out.append(Tree(feature, threshold, default_left, t.left, t.right, t.value, t.cover,
                        special_left, category_left))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def one_party(
    data: VerticalCodes, key: HeuSecretKey
) -> tuple[list[FeatureParty], VerticalEnsemble]:
    parties = _parties(data, key, [[0, 1, 2, 3]])
    return parties, train(data.label.codes, data.y, data.label.layout, parties, PARAMS, key)


@pytest.mark.parametrize("groups", [[[0, 1, 2, 3]], [[0, 3], [1, 2]]], ids=["one", "two"])
def test_vertical_trees_equal_the_central_engine_on_the_joined_rows(
    data: VerticalCodes,
    key: HeuSecretKey,
    one_party: tuple[list[FeatureParty], VerticalEnsemble],
    groups: list[list[int]],
) -> None:
    params = PARAMS if len(groups) == 1 else replace(PARAMS, n_trees=2)
    if len(groups) == 1:
        parties, model = one_party
    else:
        parties = _parties(data, key, groups)
        model = train(data.label.codes, data.y, data.label.layout, parties, params, key)
    joined_codes = np.hstack([data.label.codes] + [p.codes for p in parties])
    joined = joined_layout(data.label.layout, [p.layout for p in parties])
    central = central_train(joined_codes, data.y, joined, params)

    owners = np.concatenate([t.owner for t in model.trees])
    assert {LABEL_PARTY, *(p.party for p in parties)} <= set(owners.tolist())  # all split
    rebuilt = _joined_trees(model, parties, data.label.layout.n_features)
    for mine, theirs in zip(rebuilt, central.trees, strict=True):
        for name in ("feature", "threshold", "default_left", "special_left", "left", "right"):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), name)
        width = theirs.category_left.shape[1]
        np.testing.assert_array_equal(mine.category_left[:, :width], theirs.category_left)
        np.testing.assert_allclose(mine.value, theirs.value, rtol=0, atol=1e-9)
        np.testing.assert_allclose(mine.cover, theirs.cover, rtol=1e-12)
    # The splits exercised: a party's special and missing sides and a category set.
    remote = [(t, n) for t in rebuilt for n in range(t.n_nodes) if t.feature[n] >= 3]
    assert any(t.threshold[n] == -2 for t, n in remote)
    assert any(t.special_left[n] or t.default_left[n] for t, n in remote)

    sides = {p.party: p.table.sides(p.codes) for p in parties}
    assert np.array_equal(
        np.stack(
            [t.leaves(data.label.codes, np.asarray(model.missing), sides) for t in model.trees]
        ),
        np.stack([t.route(joined_codes, np.asarray(joined.missing)) for t in central.trees]),
    )
    np.testing.assert_allclose(
        model.margin(data.label.codes, sides), central.margin(joined_codes), rtol=0, atol=1e-9
    )
    assert isinstance(central, TreeEnsemble)


def test_a_platform_category_split_is_sent_as_wide_as_its_own_feature(
    data: VerticalCodes, key: HeuSecretKey
) -> None:
    """The bank's categorical feature with more categories than the platform's (as on
    sba-vertical: the bank's 51 states, the platform's sectors): a category split at the
    platform must still be accepted and equal the central engine's."""
    label = data.label
    j = label.layout.n_features - 1  # the label party's categorical column: 8 categories
    rng = np.random.default_rng(7)
    codes = label.codes.copy()
    present = codes[:, j] < 8
    codes[present, j] = codes[present, j] * 4 + rng.integers(0, 4, int(present.sum()))
    codes[~present, j] = 32
    n_bins = (*label.layout.n_bins[:j], 33)
    missing = (*label.layout.missing[:j], 32)
    layout = BinLayout(n_bins, missing, label.layout.special, label.layout.categorical)
    parties = _parties(data, key, [[0, 1, 2, 3]])
    params = replace(PARAMS, n_trees=3)
    model = train(codes, data.y, layout, parties, params, key)

    joined_codes = np.hstack([codes, parties[0].codes])
    joined = joined_layout(layout, [parties[0].layout])
    assert joined.category_width == 32 > parties[0].layout.n_bins[3]
    central = central_train(joined_codes, data.y, joined, params)
    table = parties[0].table
    assert any(t == -2 for t in table.threshold)  # the platform made a category split
    sides = {1: table.sides(parties[0].codes)}
    np.testing.assert_allclose(
        model.margin(codes, sides), central.margin(joined_codes), rtol=0, atol=1e-9
    )


class _Recording:
    """A feature party whose replies are kept (or changed by `alter`)."""

    def __init__(self, party: FeatureParty, alter: object = None) -> None:
        self.party, self.alter = party, alter
        self.replies: list[EncryptedHistograms] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.party, name)

    def histograms(self, query: HistogramQuery) -> EncryptedHistograms:
        reply = self.party.histograms(query)
        if callable(self.alter):
            reply = self.alter(reply, query)
        self.replies.append(reply)
        return reply


def test_feature_party_replies_are_ciphertexts_only(data: VerticalCodes, key: HeuSecretKey) -> None:
    link = _Recording(_parties(data, key, [[0, 1, 2, 3]])[0])
    params = replace(PARAMS, n_trees=1, max_depth=2)
    train(data.label.codes, data.y, data.label.layout, [link], params, key)
    assert link.replies
    other = HeuSecretKey(key.scheme)
    margin = np.full(len(data.y), np.log(data.y.mean() / (1 - data.y.mean())))
    g = 1 / (1 + np.exp(-margin)) - data.y
    for reply in link.replies:
        assert set(vars(reply)) == {"nodes", "buckets"}
        for blob in reply.nodes:
            assert isinstance(blob, bytes)
            # No plaintext sum in it: the root's gradient sum per bin of the first feature.
            for k in range(link.party.layout.n_bins[0]):
                total = float(g[link.party.codes[:, 0] == k].sum())
                assert struct.pack("<d", total) not in blob
            cipher = key.public.load(blob)
            per = key.public.sums_per_ciphertext(packing.PACKED_BITS)
            assert per == {"ou": 1, "paillier": 9}[key.scheme]  # bin sums per ciphertext
            assert len(cipher) == -(-reply.buckets * link.party.layout.n_features // per)
            with pytest.raises(packing.NotAHistogram):  # another key reads nothing
                packing.split_slots(other.decrypt(cipher), per, len(cipher) * per)


def test_label_party_model_holds_no_threshold_of_the_platform(
    one_party: tuple[list[FeatureParty], VerticalEnsemble],
) -> None:
    (party,), model = one_party
    ids = []
    for t in model.trees:
        remote = t.owner == party.party
        assert not np.any(t.threshold[remote]) and not np.any(t.default_left[remote])
        assert not np.any(t.special_left[remote]) and not np.any(t.category_left[remote])
        ids += t.split[remote].tolist()
    # Only split ids, numbered in the order the party made them, resolve in its own table.
    assert sorted(ids) == list(range(len(party.table))) and ids


def _flip(reply: EncryptedHistograms, query: HistogramQuery) -> EncryptedHistograms:
    blob = bytearray(reply.nodes[0])
    blob[100] ^= 0x5A  # inside the first ciphertext: feature 0's code 0, always decrypted
    return EncryptedHistograms((bytes(blob), *reply.nodes[1:]), reply.buckets)


def test_altered_replies_wrong_keys_and_other_rows_fail_loudly(
    data: VerticalCodes, key: HeuSecretKey
) -> None:
    params = replace(PARAMS, n_trees=1, max_depth=2)
    (party,) = _parties(data, key, [[0, 1, 2, 3]])
    with pytest.raises(ValueError):  # NotAHistogram, or no ciphertext array at all
        train(data.label.codes, data.y, data.label.layout, [_Recording(party, _flip)], params, key)

    # A feature party holding another key than the one the gradients came under.
    stranger = FeatureParty(1, party.codes, party.layout, HeuSecretKey(key.scheme).public)
    with pytest.raises(ValueError, match="another key"):
        train(data.label.codes, data.y, data.label.layout, [stranger], params, key)

    # A feature party that ignores the instance space and sums every row into each node.
    (lazy,) = _parties(data, key, [[0, 1, 2, 3]])
    honest = lazy.histograms

    def every_row(query: HistogramQuery) -> EncryptedHistograms:
        slot = np.where(query.slot >= 0, query.slot, 0)
        return honest(HistogramQuery(slot, query.n_slots))

    lazy.histograms = every_row
    params2 = replace(params, max_depth=3)
    with pytest.raises(InconsistentHistograms, match="do not add up"):
        train(data.label.codes, data.y, data.label.layout, [lazy], params2, key)


def test_packing_sums_exactly_and_refuses_what_no_sum_can_be() -> None:
    rng = np.random.default_rng(0)
    g = np.concatenate([rng.uniform(-1, 1, 500), [-1.0, 1.0, 1e-300, -1e-17]])
    h = np.concatenate([rng.uniform(0, 0.25, 500), [0.0, 0.25, 1e-16, 1e-16]])
    fixed = packing.to_fixed(g, h)
    total = sum(packing.pack(fixed))
    gs, hs, cs = packing.unpack([total])
    assert (int(gs[0]), int(hs[0]), int(cs[0])) == fixed.totals(np.arange(len(g)))
    np.testing.assert_allclose(packing.to_float(gs, hs, cs)[0], [g.sum(), h.sum()], atol=1e-13)
    with pytest.raises(packing.NotAHistogram):
        packing.unpack([1 << packing.PACKED_BITS])
    with pytest.raises(packing.NotAHistogram):  # a hessian sum above its count allows
        packing.unpack([(1 << (packing.FRACTION_BITS + packing.COUNT_BITS + 1)) | 1])
    with pytest.raises(ValueError):
        packing.to_fixed(np.array([1.5]), np.array([0.1]))


@pytest.mark.parametrize("n", [1, 2, 7, 9, 10, 20])
def test_sums_side_by_side_decrypt_to_each_sum(key: HeuSecretKey, n: int) -> None:
    """Several bin sums in one plaintext, whatever the count's remainder: each comes back."""
    rng = np.random.default_rng(n)
    values = [int(v) for v in rng.integers(0, 1 << 62, n)]
    values[-1] = (1 << packing.PACKED_BITS) - 1  # the widest a sum can be
    # OU's 682-bit plaintexts hold 3 (it does not pay there, but must work), Paillier's 9.
    per = {"ou": 3, "paillier": 9}[key.scheme]
    packed = key.public.side_by_side(key.public.encrypt(values), packing.PACKED_BITS, per)
    assert len(packed) == -(-n // per)
    assert packing.split_slots(key.decrypt(packed), per, n) == values
    with pytest.raises(ValueError, match="do not fit"):
        key.public.side_by_side(packed, packing.PACKED_BITS, per + 1)


def test_split_slots_refuses_what_side_by_side_sums_cannot_be() -> None:
    w = packing.PACKED_BITS
    assert packing.split_slots([5 | (7 << w), 6], 2, 3) == [5, 6, 7]
    with pytest.raises(packing.NotAHistogram):  # wider than two sums
        packing.split_slots([1 << (2 * w), 0], 2, 3)
    with pytest.raises(packing.NotAHistogram):  # a sum past the histogram's end
        packing.split_slots([5, 6 | (1 << w)], 2, 3)
    with pytest.raises(packing.NotAHistogram):  # a count of plaintexts for another size
        packing.split_slots([5, 6, 7], 2, 3)


def test_reduced_leakage_trees_show_the_feature_party_nothing(
    data: VerticalCodes, key: HeuSecretKey
) -> None:
    (party,) = _parties(data, key, [[0, 1, 2, 3]])
    link = _Recording(party)
    received: list[EncryptedGradients] = []
    link.receive_gradients = received.append  # type: ignore[attr-defined]
    params = replace(PARAMS, n_trees=2, max_depth=2)
    model = train(
        data.label.codes, data.y, data.label.layout, [link], params, key, label_only_trees=2
    )
    assert not received and not link.replies and len(party.table) == 0
    assert set(np.concatenate([t.owner for t in model.trees]).tolist()) == {LEAF, LABEL_PARTY}
