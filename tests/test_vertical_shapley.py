"""TreeSHAP of a vertical ensemble at the label party, each feature party one player: equal to
Shapley values enumerated over every coalition of the players, adding up to the margin's
distance from the reference, and zero for a party whose sides are the reference's."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from vertical_helpers import sub_layout

from jointcredit.models.trees import TreeParams
from jointcredit.models.trees.tree import LEAF, goes_left, in_category
from jointcredit.models.vertical.feature_party import FeatureParty
from jointcredit.models.vertical.label_party import train
from jointcredit.models.vertical.model import LABEL_PARTY, VerticalEnsemble
from jointcredit.models.vertical.shapley import VerticalShapley
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.simulations.vertical_codes import VerticalCodes, vertical_codes


@pytest.fixture(scope="module")
def trained() -> tuple[VerticalCodes, list[FeatureParty], VerticalEnsemble]:
    data = vertical_codes(1500, 3, 4, bins=8, seed=3)
    key = HeuSecretKey()
    pub = public_key(key.public.to_bytes())
    lay = data.feature.layout
    parties = [
        FeatureParty(1, data.feature.codes[:, [0, 3]], sub_layout(lay, [0, 3]), pub),
        FeatureParty(2, data.feature.codes[:, [1, 2]], sub_layout(lay, [1, 2]), pub),
    ]
    params = TreeParams(n_trees=5, max_depth=3, learning_rate=0.3)
    model = train(data.label.codes, data.y, data.label.layout, parties, params, key)
    assert set(model.parties()) == {1, 2}
    return data, parties, model


def _value(model: VerticalEnsemble, own: np.ndarray, sides: dict[int, np.ndarray],
           ref: np.ndarray | None, coalition: set[int]) -> float:  # fmt: skip
    """margin of the hybrid: players in `coalition` (own feature j, or a party's id as
    -party) from the applicant, the rest from the reference (a party, or every node without
    a reference applicant: the larger child)."""
    total = model.base_margin
    missing = np.asarray(model.missing)
    for t in model.trees:
        n = 0
        while t.owner[n] != LEAF:
            if t.owner[n] == LABEL_PARTY and (ref is not None or int(t.split[n]) in coalition):
                f = int(t.split[n])
                c = own[f] if f in coalition or ref is None else ref[f]
                at = np.array([n])
                code = np.array([c])
                left = bool(goes_left(code, missing[f], t.threshold[at], t.default_left[at],
                                      t.special_left[at],
                                      in_category(t.category_left, at, code))[0])  # fmt: skip
            elif t.owner[n] != LABEL_PARTY and -int(t.owner[n]) in coalition:
                left = bool(sides[int(t.owner[n])][0, int(t.split[n])])
            else:
                left = bool(t.cover[t.left[n]] >= t.cover[t.right[n]])
            n = int(t.left[n] if left else t.right[n])
        total += float(t.value[n])
    return total


@pytest.mark.parametrize("given", [True, False], ids=["reference-applicant", "majority-paths"])
def test_values_are_the_shapley_values_of_the_players(
    trained: tuple[VerticalCodes, list[FeatureParty], VerticalEnsemble], given: bool
) -> None:
    data, parties, model = trained
    ref = np.median(data.label.codes, axis=0).astype(np.int64) if given else None
    explain = VerticalShapley(model, ref)
    players = [0, 1, 2, -1, -2]
    for row in (0, 7, 42):
        own = data.label.codes[row]
        sides = {p.party: p.table.sides(p.codes[row : row + 1]) for p in parties}
        pd_, values = explain(own[None, :], sides)
        assert np.isclose(pd_[0], model.predict_pd(own[None, :], sides)[0])
        n = len(players)
        for i, player in enumerate(players):
            others = [q for q in players if q != player]
            phi = 0.0
            for size in range(n):
                for s in itertools.combinations(others, size):
                    w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                    with_i = _value(model, own, sides, ref, {*s, player})
                    phi += w * (with_i - _value(model, own, sides, ref, set(s)))
            assert values[0, i] == pytest.approx(phi, abs=1e-9)
        full = _value(model, own, sides, ref, set(players))
        assert values[0].sum() == pytest.approx(full - explain.reference_margin(), abs=1e-9)


def test_a_party_routing_like_the_reference_gets_nothing(
    trained: tuple[VerticalCodes, list[FeatureParty], VerticalEnsemble],
) -> None:
    data, parties, model = trained
    ref = data.label.codes[5]
    explain = VerticalShapley(model, ref)
    # Sides of party 1 that follow the larger child at every node it owns.
    sides = {p.party: p.table.sides(p.codes[5:6]) for p in parties}
    for t in model.trees:
        for n in np.flatnonzero(t.owner == 1).tolist():
            sides[1][0, int(t.split[n])] = t.cover[t.left[n]] >= t.cover[t.right[n]]
    _, values = explain(ref[None, :], sides)
    assert values[0, 3] == 0.0
    assert np.all(values[0, :3] == 0.0)  # own codes are the reference's
