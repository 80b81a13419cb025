"""A feature party's scorecard steps: taken only from the label party's signed request,
in a scorecard run only (and the trees' steps only in a trees run), in order (columns with the
label party's key first, once), refusing ciphertexts under another key than that one, and
merge maps that are not one valid map per its feature; the test rows answered by coarse code
only, after its part holds the maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_vertical_relay import _psi, _relay, _request

from jointcredit.client import vertical_scorecard_wire as sw
from jointcredit.client.vertical_feature import FeatureSession
from jointcredit.client.vertical_label import LabelSession
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.vertical.artifact import load_feature_part
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.scorecard.messages import EncryptedSlots
from jointcredit.privacy.paillier import HeuSecretKey
from jointcredit.trust import keys, store

RUN = 7
Parties = tuple[LabelSession, FeatureSession, dict[str, Ed25519PrivateKey]]


def _parties(model: str, out: Path | None = None) -> Parties:
    settings = VerticalSettings.model_validate(
        {"synthetic-rows": 400, "model": model, "max-bins": 8, "min-category-count": 10,
         "out-dir": str(out or "")}
    )  # fmt: skip
    data = load_vertical_dataset("synthetic-vertical", rows=400)
    coordinator = keys.generate()
    party_keys = {p: keys.generate() for p in ("bank", "platform")}
    trust = store.create("relay-test", coordinator)
    for p, k in party_keys.items():
        trust = store.add_key(trust, p, k.public_key(), coordinator)
    created = "2026-12-07T00:00:00+00:00"
    label = LabelSession(
        "bank", data.schema, data.label_party.frame, settings, trust, RUN, party_keys["bank"],
        created,
    )  # fmt: skip
    feature = FeatureSession(
        "platform", data.schema, data.parties["platform"].frame, settings, trust,
        party_keys["platform"], created, RUN,
    )  # fmt: skip
    return label, feature, party_keys


def _aligned(parties: Parties) -> None:
    label, feature, keys_ = parties
    _, arrays = _psi(label, feature, keys_)
    feature.handle(_relay(_request(3, v.PSI_ALIGN, arrays, keys_["bank"], index=1), 3), v.PSI)


def _key(secret: HeuSecretKey) -> dict[str, np.ndarray]:
    return {v.PUBLIC_KEY: np.frombuffer(secret.public.to_bytes(), np.uint8).copy()}


def test_the_scorecard_steps_in_order_from_signed_requests(tmp_path: Path) -> None:
    parties = _parties("scorecard", tmp_path)
    label, feature, keys_ = parties
    _aligned(parties)
    bank = keys_["bank"]

    def ask(step: int, action: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return feature.handle(_relay(_request(step, action, arrays, bank, v.STEP), step), v.STEP)[1]

    with pytest.raises(ProtocolError, match="before the scorecard's columns"):
        ask(4, v.SC_PAIRS, {})
    with pytest.raises(ProtocolError, match="does not do 'gradients'"):  # a trees' step
        ask(5, v.GRADIENTS, _key(HeuSecretKey()))
    with pytest.raises(ProtocolError, match="not a public key"):
        ask(6, v.SC_COLUMNS, {v.PUBLIC_KEY: np.zeros(16, np.uint8)})
    with pytest.raises(ProtocolError, match="unsigned"):  # the coordinator's own key
        feature.handle(_relay(None, 7, _key(HeuSecretKey())), v.STEP)
    secret = HeuSecretKey()
    cols = sw.columns_from(ask(8, v.SC_COLUMNS, _key(secret)))
    assert list(cols.names) == list(label.schema.parties["platform"].features)
    with pytest.raises(ProtocolError, match="asked twice"):
        ask(9, v.SC_COLUMNS, _key(secret))
    pairs = sw.pairs_from(ask(10, v.SC_PAIRS, {}), cols)
    assert len(pairs.tables) == len(cols.names) * (len(cols.names) - 1) // 2
    rows = int(cols.rows[0].sum())
    other = HeuSecretKey()
    slots = EncryptedSlots(
        other.public.to_bytes(), other.public.encrypt([1] * rows).to_bytes(), rows, 1
    )
    with pytest.raises(ProtocolError, match="another key"):
        ask(11, v.SC_TABLES, sw.slots_arrays(slots))
    assert feature.test_codes is not None and feature.bins is not None
    with pytest.raises(ProtocolError, match="before the merge maps"):
        ask(12, v.SC_TEST_CODES, {})
    # Pool each feature's regular fine bins into one attribute, specials and missing apart
    # (a map classing gives when no split of the regular bins is worth keeping).
    regular = cols.regular
    maps = [np.r_[np.zeros(r, np.int64), 1 + np.arange(f.n_bins - r)]
            for r, f in zip(regular, feature.bins.features, strict=True)]  # fmt: skip
    for step, bad in enumerate(_malformed(maps, regular), start=13):
        with pytest.raises(ProtocolError, match="'merge-maps'"):
            ask(step, v.WRITE_PART, bad)
    assert feature.merge is None and not (tmp_path / "model").exists()  # nothing kept
    ask(30, v.WRITE_PART, sw.merge_arrays(maps))
    with pytest.raises(ProtocolError, match="written twice"):
        ask(31, v.WRITE_PART, sw.merge_arrays(maps))
    k = [int(m.max()) + 1 for m in maps]
    codes = sw.codes_from(ask(32, v.SC_TEST_CODES, {}), len(feature.test_codes), k)
    np.testing.assert_array_equal(codes, coarse_codes(feature.test_codes, maps))
    assert (codes < np.array(k)).all() and (codes != feature.test_codes).any()  # not fine
    part = load_feature_part(tmp_path / "model", "platform", label.trust)
    assert all(np.array_equal(a, b) for a, b in zip(part.merge, maps, strict=True))


def _malformed(maps: list[np.ndarray], regular: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """Write-part payloads whose merge maps the platform must refuse (each names the field)."""
    good = sw.merge_arrays(maps)[v.MERGE]
    j = next(j for j, r in enumerate(regular) if r >= 2)
    n = len(maps[j])

    def changed(j: int, at: int, to: int) -> dict[str, np.ndarray]:
        out = good.copy()
        out[j, at] = to
        return {v.MERGE: out}

    return [
        {},  # no maps
        {v.MERGE: good[:-1]},  # one feature without a map
        {v.MERGE: good.astype(np.float64)},
        {v.MERGE: np.pad(good, ((0, 0), (0, 1)), constant_values=-1)},  # past every feature
        changed(0, 1, -1),  # a fine code not mapped
        changed(j, n - 1, n - 1),  # missing's coarse code past the others: one unused
        sw.merge_arrays([np.arange(len(m)) for m in maps]),  # the fine bins back: refused
        changed(0, 1, 99),  # a code outside the feature's codes
        {v.MERGE: np.zeros((good.shape[0], 4096), np.int64)},  # past any feature's bins
    ]


def test_a_trees_run_refuses_the_scorecard_steps() -> None:
    parties = _parties("gbdt")
    _, feature, keys_ = parties
    _aligned(parties)
    request = _request(4, v.SC_COLUMNS, _key(HeuSecretKey()), keys_["bank"], v.STEP)
    with pytest.raises(ProtocolError, match="does not do 'scorecard-columns'"):
        feature.handle(_relay(request, 4), v.STEP)
