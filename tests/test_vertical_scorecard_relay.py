"""A feature party's scorecard steps: taken only from the label party's signed request,
in a scorecard run only (and the trees' steps only in a trees run), in order (columns with the
label party's key first, once), refusing ciphertexts under another key than that one, and
merge maps that are not one valid map per its feature; the test rows answered by coarse code
only, after its part holds the maps."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_vertical_relay import _psi, _relay, _request
from vertical_helpers import deployed_node_config, hello_request

from jointcredit.client import vertical_app
from jointcredit.client import vertical_scorecard_wire as sw
from jointcredit.client.vertical_feature import FeatureSession
from jointcredit.client.vertical_label import LabelSession, own_bins
from jointcredit.client.vertical_scorecard import ScorecardMessageLink, classing
from jointcredit.data.vertical_datasets import load_vertical_dataset, write_vertical_directory
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.vertical.artifact import load_feature_part
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.scorecard.central import central_scorecard
from jointcredit.models.vertical.scorecard.label_party import train
from jointcredit.models.vertical.scorecard.messages import EncryptedSlots
from jointcredit.privacy.paillier import HeuSecretKey
from jointcredit.trust import keys, store
from jointcredit.trust.keyset import create_key_set

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

    with pytest.raises(ProtocolError, match="'scorecard-tables' before 'scorecard-columns'"):
        ask(4, v.SC_TABLES, {})
    with pytest.raises(ProtocolError, match="does not do 'gradients'"):  # a trees' step
        ask(5, v.GRADIENTS, _key(HeuSecretKey()))
    with pytest.raises(ProtocolError, match="not a public key"):
        ask(6, v.SC_COLUMNS, {v.PUBLIC_KEY: np.zeros(16, np.uint8)})
    with pytest.raises(ProtocolError, match="unsigned"):  # the coordinator's own key
        feature.handle(_relay(None, 7, _key(HeuSecretKey())), v.STEP)
    secret = HeuSecretKey()
    cols = sw.columns_from(ask(8, v.SC_COLUMNS, _key(secret)))
    assert list(cols.names) == list(label.schema.parties["platform"].features)
    with pytest.raises(ProtocolError, match="'scorecard-columns' repeated"):
        ask(9, v.SC_COLUMNS, _key(secret))
    # Pool each feature's regular fine bins into one attribute, specials and missing apart
    # (a map classing gives when no split of the regular bins is worth keeping).
    regular = cols.regular
    assert feature.test_codes is not None and feature.bins is not None
    maps = [np.r_[np.zeros(r, np.int64), 1 + np.arange(f.n_bins - r)]
            for r, f in zip(regular, feature.bins.features, strict=True)]  # fmt: skip
    with pytest.raises(ProtocolError, match="'scorecard-coarse' before 'scorecard-tables'"):
        ask(10, v.SC_COARSE, sw.merge_arrays(maps))
    rows = int(cols.rows[0].sum())
    other = HeuSecretKey()
    slots = EncryptedSlots(
        other.public.to_bytes(), other.public.encrypt([1] * rows).to_bytes(), rows, 1
    )
    with pytest.raises(ProtocolError, match="another key"):
        ask(11, v.SC_TABLES, sw.slots_arrays(slots))
    slots = EncryptedSlots(
        secret.public.to_bytes(), secret.public.encrypt([1] * rows).to_bytes(), rows, 1
    )
    assert sw.tables_from(ask(12, v.SC_TABLES, sw.slots_arrays(slots))).columns
    for step, early in ((13, v.SC_TEST_CODES), (14, v.WRITE_PART)):
        with pytest.raises(ProtocolError, match=f"'{early}' before 'scorecard-coarse'"):
            ask(step, early, sw.merge_arrays(maps) if early == v.WRITE_PART else {})
    for step, bad in enumerate(_malformed(maps, regular), start=15):
        with pytest.raises(ProtocolError, match="'merge-maps'"):
            ask(step, v.SC_COARSE, bad)
    assert feature.scorecard is not None and feature.scorecard.merge is None  # nothing kept
    k = [int(m.max()) + 1 for m in maps]
    pairs = sw.pairs_from(ask(30, v.SC_COARSE, sw.merge_arrays(maps)), k)
    assert [t.shape for t in pairs.tables] == [(a, b) for a, b in combinations(k, 2)]
    with pytest.raises(ProtocolError, match="'scorecard-coarse' repeated"):
        ask(31, v.SC_COARSE, sw.merge_arrays(maps))
    with pytest.raises(ProtocolError, match="not the merge maps of the 'scorecard-coarse' step"):
        ask(32, v.WRITE_PART, _split(maps, regular))  # valid maps, but other ones
    for step, bad in enumerate(_malformed(maps, regular), start=33):
        with pytest.raises(ProtocolError, match="'merge-maps'"):
            ask(step, v.WRITE_PART, bad)
    assert feature.merge is None and not (tmp_path / "model").exists()  # nothing written
    ask(50, v.WRITE_PART, sw.merge_arrays(maps))
    with pytest.raises(ProtocolError, match="'write-part' repeated"):
        ask(51, v.WRITE_PART, sw.merge_arrays(maps))
    codes = sw.codes_from(ask(52, v.SC_TEST_CODES, {}), len(feature.test_codes), k)
    np.testing.assert_array_equal(codes, coarse_codes(feature.test_codes, maps))
    assert (codes < np.array(k)).all() and (codes != feature.test_codes).any()  # not fine
    with pytest.raises(ProtocolError, match="'scorecard-test-codes' repeated"):
        ask(53, v.SC_TEST_CODES, {})
    part = load_feature_part(tmp_path / "model", "platform", label.trust)
    assert all(np.array_equal(a, b) for a, b in zip(part.merge, maps, strict=True))


def _split(maps: list[np.ndarray], regular: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Other merge maps, valid ones: a numeric feature's regular fine bins in two halves."""
    other = [m.copy() for m in maps]
    j = next(j for j, r in enumerate(regular) if r >= 4)
    r = regular[j]
    other[j] = np.r_[np.zeros(r // 2, np.int64), np.ones(r - r // 2, np.int64), maps[j][r:] + 1]
    return sw.merge_arrays(other)


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


def test_a_deployed_platform_takes_its_pair_floor_from_its_node_config(tmp_path: Path) -> None:
    """`pair-min-rows` in a platform's node config reaches its scorecard party, floored at 5;
    a value that is not a whole number is refused naming the key."""
    data = write_vertical_directory("synthetic-vertical", tmp_path / "data", rows=200)
    kit = tmp_path / "kit"
    create_key_set(kit, ["bank", "platform"], federation="pair-floor")
    node = deployed_node_config(
        kit, "platform", data / "platform" / "platform.parquet", data / "schema.toml"
    )
    run = {"layout": "vertical", "parties": 2, "synthetic-rows": 200, "model": "scorecard"}

    def hello(node: dict[str, object]) -> vertical_app.Request:
        return hello_request(RUN, 9, run, node)

    with pytest.raises(ProtocolError, match="pair-min-rows"):
        vertical_app.handle(hello({**node, protocol.PAIR_MIN_ROWS: "many"}))
    with pytest.raises(ProtocolError, match="pair-min-rows"):  # past any run's rows
        vertical_app.handle(hello({**node, protocol.PAIR_MIN_ROWS: 10**7}))
    vertical_app.handle(hello({**node, protocol.PAIR_MIN_ROWS: 2}))
    try:
        (key,) = vertical_app.sessions()
        session = vertical_app._SESSIONS[key]
        assert isinstance(session, FeatureSession) and session.pair_min_rows == 2
    finally:
        vertical_app.drop((RUN, 9))
    # ...which its scorecard party floors at 5 (`ScorecardFeatureParty`, as the in-process one).
    parties = _parties("scorecard")
    _, feature, keys_ = parties
    feature.pair_min_rows = 2
    _aligned(parties)
    request = _request(4, v.SC_COLUMNS, _key(HeuSecretKey()), keys_["bank"], v.STEP)
    feature.handle(_relay(request, 4), v.STEP)
    assert feature.scorecard is not None and feature.scorecard.pair_min_rows == 5


def test_a_fit_through_the_signed_steps_sends_no_fine_pair_table(tmp_path: Path) -> None:
    """The bank's whole fit over the wire codecs and the platform's signed-request handler:
    every answer the platform sends is recorded; the only pair tables among them are of the
    coarse codes' shape (the old protocol sent every fine x fine table with the columns),
    and the fit still equals the joined rows' one."""
    parties = _parties("scorecard", tmp_path)
    label, feature, keys_ = parties
    _aligned(parties)
    answers: list[tuple[str, dict[str, np.ndarray]]] = []

    class Asker:
        step = 10

        def ask(
            self, party: str, action: str, arrays: dict[str, np.ndarray]
        ) -> dict[str, np.ndarray]:
            self.step += 2
            request = _request(self.step, action, arrays, keys_["bank"], v.STEP, to=party)
            answers.append((action, feature.handle(_relay(request, self.step), v.STEP)[1]))
            return answers[-1][1]

    secret = HeuSecretKey()
    node = SimpleNamespace(session=Asker(), party="platform", index=1)
    link = ScorecardMessageLink(node, secret.public.to_bytes())  # type: ignore[arg-type]
    assert label.aligned is not None and label.test is not None and feature.bins is not None
    rows = label.frame.iloc[label.aligned][~label.test].reset_index(drop=True)
    bins = own_bins(rows, label.schema, "bank", label.settings)
    y = rows[label.schema.base.label].to_numpy()
    how = classing(label.settings)
    model = train(rows, y, bins, label.schema.base, [link], secret, classing=how)
    assert feature.train_frame is not None
    central = central_scorecard(
        (rows, bins),
        (feature.train_frame, feature.bins),
        y,
        label.schema.base,
        classing=how,
    )
    np.testing.assert_allclose(model.weights, central.weights, rtol=0, atol=1e-9)
    assert [a for a, _ in answers] == [v.SC_COLUMNS, v.SC_TABLES, v.SC_COARSE]
    with_pairs = [(a, out) for a, out in answers if v.PAIRS in out]
    assert [a for a, _ in with_pairs] == [v.SC_COARSE]
    k = [f.woe.bins.n_bins for f in model.platform]
    fine = [f.n_bins for f in feature.bins.features]
    assert with_pairs[0][1][v.PAIRS].size == sum(a * b for a, b in combinations(k, 2))
    assert sum(a * b for a, b in combinations(k, 2)) < sum(a * b for a, b in combinations(fine, 2))
