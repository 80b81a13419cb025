"""The label party checks every feature party answer the coordinator relays against the
feature party's own signature: a changed payload, an answer signed by another party, one
replayed, or one relayed under another step is refused, so the coordinator can drop or delay
an answer but never alter or forge one. And the wire codecs refuse malformed payloads."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, RecordDict

from jointcredit.client import vertical_wire as wire
from jointcredit.client.vertical_feature import FeatureSession
from jointcredit.client.vertical_label import LabelSession
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.vertical.messages import HistogramQuery, SplitOrder
from jointcredit.trust import keys, store
from jointcredit.trust.updates import SIGNATURE_RECORD, Binding, fresh_nonce, sign_content

RUN, NODE = 7, 11


@pytest.fixture(scope="module")
def setup() -> tuple[LabelSession, dict[str, object]]:
    settings = VerticalSettings.model_validate({"synthetic-rows": 200})
    data = load_vertical_dataset("synthetic-vertical", rows=200)
    coordinator = keys.generate()
    trust = store.create("relay-test", coordinator)
    party_keys = {p: keys.generate() for p in ("bank", "platform")}
    for p, k in party_keys.items():
        trust = store.add_key(trust, p, k.public_key(), coordinator)
    session = LabelSession(
        "bank", data.schema, data.label_party.frame, settings, trust, RUN,
        party_keys["bank"], "2026-12-07T00:00:00+00:00",
    )  # fmt: skip
    return session, party_keys  # type: ignore[return-value]


ASKED = v.content(9, v.HISTOGRAMS, party="platform")  # the request the answers answer


def _answer(step: int, key: object, party: str = "platform", values: int = 3) -> RecordDict:
    content = v.content(
        step, v.HISTOGRAMS, {v.BUCKETS: np.arange(values, dtype=np.int64)},
        **{v.REQUEST_SHA256: v.request_digest(ASKED)},
    )  # fmt: skip
    content[protocol.IDENTITY] = protocol.identity_record(party)
    binding = Binding(RUN, step, NODE, party, v.SERVE, fresh_nonce())
    content[SIGNATURE_RECORD] = sign_content(content, binding, key)  # type: ignore[arg-type]
    return content


def test_a_relayed_answer_is_checked_end_to_end(setup: tuple[LabelSession, dict]) -> None:  # type: ignore[type-arg]
    session, party_keys = setup
    session.sent("platform", ASKED)
    good = _answer(10, party_keys["platform"])
    assert session.answer(good, "platform", 10, NODE, v.SERVE, v.HISTOGRAMS)[
        v.BUCKETS
    ].tolist() == [0, 1, 2]
    with pytest.raises(ProtocolError, match="not newer"):
        session.answer(good, "platform", 10, NODE, v.SERVE, v.HISTOGRAMS)  # the same answer again

    changed = _answer(11, party_keys["platform"])
    changed[v.PAYLOAD] = ArrayRecord({v.BUCKETS: Array(np.arange(4, dtype=np.int64))})
    with pytest.raises(ProtocolError, match="tampered"):
        session.answer(changed, "platform", 11, NODE, v.SERVE, v.HISTOGRAMS)

    forged = _answer(12, party_keys["bank"], party="platform")
    with pytest.raises(ProtocolError, match="wrong-institution"):
        session.answer(forged, "platform", 12, NODE, v.SERVE, v.HISTOGRAMS)

    moved = _answer(13, party_keys["platform"])
    with pytest.raises(ProtocolError, match="replayed"):  # signed for step 13, relayed as 14
        session.answer(moved, "platform", 14, NODE, v.SERVE, v.HISTOGRAMS)


def test_the_codecs_refuse_malformed_payloads() -> None:
    with pytest.raises(ProtocolError, match="no 'n-slots'"):
        wire.query_from({v.SLOT: np.zeros(3, np.int64)})
    with pytest.raises(ProtocolError, match="expected 1-D int64"):
        wire.query_from({v.SLOT: np.zeros(3, np.float64), v.N_SLOTS: np.array([1])})
    with pytest.raises(ProtocolError, match="one bin count"):
        wire.columns_from(
            1,
            {
                v.N_BINS: np.array([3, 4]),
                v.MISSING: np.array([2]),
                v.SPECIAL: np.array([0, 0]),
                v.CATEGORICAL: np.array([False, False]),
            },
        )
    with pytest.raises(ProtocolError, match="at most"):
        wire.columns_from(
            1,
            {
                v.N_BINS: np.array([100_000]),
                v.MISSING: np.array([99_999]),
                v.SPECIAL: np.array([0]),
                v.CATEGORICAL: np.array([False]),
            },
        )
    with pytest.raises(ProtocolError, match="ascending"):
        wire.rows_check(np.array([3, 1]), 10, "a split's rows")


# -- the label party's requests, relayed whole: a feature party acts only on what it signed

LABEL_NODE, FEATURE_NODE = 21, 22


@pytest.fixture
def parties() -> tuple[LabelSession, FeatureSession, dict[str, Ed25519PrivateKey]]:
    settings = VerticalSettings.model_validate({"synthetic-rows": 200})
    data = load_vertical_dataset("synthetic-vertical", rows=200)
    coordinator = keys.generate()
    party_keys = {p: keys.generate() for p in ("bank", "platform")}
    trust = store.create("relay-test", coordinator)
    for p, k in party_keys.items():
        trust = store.add_key(trust, p, k.public_key(), coordinator)
    party_keys["coordinator"] = coordinator
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


def _signed(
    content: RecordDict, party: str, key: Ed25519PrivateKey, kind: str, step: int, node: int,
    nonce: bytes | None = None,
) -> RecordDict:  # fmt: skip
    content[protocol.IDENTITY] = protocol.identity_record(party)
    binding = Binding(RUN, step, node, party, kind, nonce or fresh_nonce())
    content[SIGNATURE_RECORD] = sign_content(content, binding, key)
    return content


def _request(
    step: int, action: str, arrays: dict[str, np.ndarray], key: Ed25519PrivateKey,
    kind: str = v.PSI, to: str = "platform", nonce: bytes | None = None, **values: object,
) -> RecordDict:  # fmt: skip
    """A request as the label party's node signs it (its reply to the coordinator)."""
    content = v.content(step, action, arrays, party=to, **values)
    return _signed(content, "bank", key, kind, step, LABEL_NODE, nonce)


def _relay(
    request: RecordDict | None, relay_step: int, arrays: dict[str, np.ndarray] | None = None
) -> RecordDict:
    """The coordinator's message to the feature party: `request` relayed, or only its own."""
    content = v.content(relay_step + 1, "any", arrays, **{
        v.RELAY_STEP: relay_step, v.RELAY_NODE: LABEL_NODE})  # fmt: skip
    if request is not None:
        v.relay(request, content, "bank")
    return content


def _psi(
    label: LabelSession, feature: FeatureSession, keys_: dict[str, Ed25519PrivateKey]
) -> tuple[int, dict[str, np.ndarray]]:
    """A genuine PSI and alignment through the sessions (as the nodes run them), up to the
    label party's signed aligned-rows request for the platform: its step and arrays."""
    blind = label.sent("platform", _request(1, v.PSI_BLIND, label.blind("platform"), keys_["bank"]))
    action, out, digest = feature.handle(_relay(blind, 1), v.PSI)
    assert action == v.PSI_REBLIND and digest == v.request_digest(blind)
    answer = _signed(
        v.content(2, action, out, **{v.REQUEST_SHA256: digest}), "platform", keys_["platform"],
        v.PSI, 2, FEATURE_NODE,
    )  # fmt: skip
    label.intersect("platform", label.answer(answer, "platform", 2, FEATURE_NODE, v.PSI, action))
    size, index, arrays = label.aligned_for("platform")
    assert size > 0 and index == 1
    return size, arrays


Parties = tuple[LabelSession, FeatureSession, dict[str, Ed25519PrivateKey]]


def test_a_feature_party_refuses_a_psi_request_the_label_party_did_not_sign(
    parties: Parties,
) -> None:
    label, feature, keys_ = parties
    guesses = label.blind("platform")  # the coordinator's own blinded set, say
    with pytest.raises(ProtocolError, match="step and node"):
        feature.handle(v.content(1, v.PSI_BLIND, guesses, party="platform"), v.PSI)
    with pytest.raises(ProtocolError, match="unsigned"):
        feature.handle(_relay(None, 1, guesses), v.PSI)
    with pytest.raises(ProtocolError, match="unknown-key"):
        feature.handle(_relay(_request(1, v.PSI_BLIND, guesses, keys_["coordinator"]), 1), v.PSI)
    with pytest.raises(ProtocolError, match="wrong-institution"):
        feature.handle(_relay(_request(1, v.PSI_BLIND, guesses, keys_["platform"]), 1), v.PSI)
    genuine = _request(1, v.PSI_BLIND, label.blind("other"), keys_["bank"])
    swapped = _relay(genuine, 1)
    swapped[f"{v.RELAY_PREFIX}bank/{v.PAYLOAD}"] = ArrayRecord(
        {v.BLINDED: Array(guesses[v.BLINDED])}
    )
    with pytest.raises(ProtocolError, match="tampered"):
        feature.handle(swapped, v.PSI)
    with pytest.raises(ProtocolError, match="not this party"):  # signed, for another party
        feature.handle(_relay(_request(1, v.PSI_BLIND, guesses, keys_["bank"], to="x"), 1), v.PSI)
    with pytest.raises(ProtocolError, match="replayed"):  # signed for step 1, relayed as 2
        feature.handle(_relay(_request(1, v.PSI_BLIND, guesses, keys_["bank"]), 2), v.PSI)
    with pytest.raises(ProtocolError, match="replayed"):  # a training request as a PSI one
        feature.handle(_relay(_request(1, v.PSI_BLIND, guesses, keys_["bank"], v.STEP), 1), v.PSI)
    assert feature.psi is None  # nothing was computed for any of them


def test_a_feature_party_refuses_forged_alignment_and_training_requests(
    parties: Parties,
) -> None:
    label, feature, keys_ = parties
    _, arrays = _psi(label, feature, keys_)
    everyone = {**arrays, v.POSITIONS: np.arange(len(feature.frame), dtype=np.uint32)}
    forged = _request(3, v.PSI_ALIGN, everyone, keys_["coordinator"], index=1)
    with pytest.raises(ProtocolError, match="unknown-key"):
        feature.handle(_relay(forged, 3), v.PSI)
    genuine = _request(3, v.PSI_ALIGN, arrays, keys_["bank"], index=1)
    changed = _relay(genuine, 3)
    changed[f"{v.RELAY_PREFIX}bank/{v.PAYLOAD}"] = ArrayRecord(
        {k: Array(a) for k, a in everyone.items()}
    )
    with pytest.raises(ProtocolError, match="tampered"):
        feature.handle(changed, v.PSI)
    assert feature.bins is None
    action, _, digest = feature.handle(_relay(genuine, 3), v.PSI)
    assert action == v.PSI_ALIGNED and digest == v.request_digest(genuine)
    with pytest.raises(ProtocolError, match="not newer"):  # the same request again
        feature.handle(_relay(genuine, 3), v.PSI)

    # Training: the coordinator's own Paillier key and gradients, its own split order.
    own_key = {v.PUBLIC_KEY: np.zeros(8, np.uint8), v.CIPHERTEXTS: np.zeros(8, np.uint8),
               v.ROWS: np.array([3])}  # fmt: skip
    for forged in (
        _request(5, v.GRADIENTS, own_key, keys_["coordinator"], v.STEP),
        _request(5, v.SPLIT, wire.order_arrays(_order()), keys_["platform"], v.STEP),
    ):
        with pytest.raises(ProtocolError, match=r"unknown-key|wrong-institution"):
            feature.handle(_relay(forged, 5), v.STEP)
    with pytest.raises(ProtocolError, match="unsigned"):
        feature.handle(_relay(None, 5, wire.order_arrays(_order())), v.STEP)
    # A genuine histograms query, its slots changed in flight; a split order changed too.
    query = wire.query_arrays(HistogramQuery(np.zeros(3, np.int64), 1))
    signed_query = _request(7, v.HISTOGRAMS, query, keys_["bank"], v.STEP)
    moved = _relay(signed_query, 7)
    moved[f"{v.RELAY_PREFIX}bank/{v.PAYLOAD}"] = ArrayRecord(
        {v.SLOT: Array(np.array([0, -1, 0])), v.N_SLOTS: Array(np.array([1]))}
    )
    with pytest.raises(ProtocolError, match="tampered"):
        feature.handle(moved, v.STEP)
    order = _request(8, v.SPLIT, wire.order_arrays(_order()), keys_["bank"], v.STEP)
    rerouted = _relay(order, 8)
    rerouted[f"{v.RELAY_PREFIX}bank/{v.PAYLOAD}"] = ArrayRecord(
        {k: Array(a) for k, a in wire.order_arrays(_order(threshold=1)).items()}
    )
    with pytest.raises(ProtocolError, match="tampered"):
        feature.handle(rerouted, v.STEP)
    # The nonce set: a request signed again under a used nonce, for a newer step.
    nonce = fresh_nonce()
    feature.handle(_relay(_request(9, v.SIDES, {}, keys_["bank"], v.STEP, nonce=nonce), 9), v.STEP)
    with pytest.raises(ProtocolError, match="a replay"):
        feature.handle(
            _relay(_request(10, v.SIDES, {}, keys_["bank"], v.STEP, nonce=nonce), 10), v.STEP
        )


def _order(threshold: int = 0) -> SplitOrder:
    return SplitOrder(0, threshold, True, 0, np.zeros(0, bool), np.arange(3, dtype=np.int64))


def test_the_label_party_takes_an_answer_only_to_the_request_it_sent(parties: Parties) -> None:
    label, feature, keys_ = parties
    blind = label.sent("platform", _request(1, v.PSI_BLIND, label.blind("platform"), keys_["bank"]))
    action, out, digest = feature.handle(_relay(blind, 1), v.PSI)

    def answer(step: int, action: str, digest: bytes) -> RecordDict:
        content = v.content(step, action, out, **{v.REQUEST_SHA256: digest})
        return _signed(content, "platform", keys_["platform"], v.PSI, step, FEATURE_NODE)

    other = v.request_digest(_request(1, v.PSI_BLIND, out, keys_["bank"]))
    with pytest.raises(ProtocolError, match="another request"):  # genuine, to another request
        label.answer(answer(2, action, other), "platform", 2, FEATURE_NODE, v.PSI, v.PSI_REBLIND)
    with pytest.raises(ProtocolError, match="another request"):  # no request digest at all
        label.answer(
            _signed(v.content(3, action, out), "platform", keys_["platform"], v.PSI, 3,
                    FEATURE_NODE),
            "platform", 3, FEATURE_NODE, v.PSI, v.PSI_REBLIND,
        )  # fmt: skip
    with pytest.raises(ProtocolError, match="not 'psi-aligned'"):  # a PSI answer as columns
        label.answer(answer(4, action, digest), "platform", 4, FEATURE_NODE, v.PSI, v.PSI_ALIGNED)
    label.answer(answer(5, action, digest), "platform", 5, FEATURE_NODE, v.PSI, v.PSI_REBLIND)


def test_a_feature_party_refuses_more_node_slots_than_a_level_has(parties: Parties) -> None:
    label, feature, keys_ = parties
    _, arrays = _psi(label, feature, keys_)
    feature.handle(_relay(_request(3, v.PSI_ALIGN, arrays, keys_["bank"], index=1), 3), v.PSI)
    rows = len(feature.train_codes)  # type: ignore[arg-type]
    huge = wire.query_arrays(HistogramQuery(np.zeros(rows, np.int64), 1 << 16))
    with pytest.raises(ProtocolError, match="65536 node slots at depth 3"):
        feature.handle(_relay(_request(5, v.HISTOGRAMS, huge, keys_["bank"], v.STEP), 5), v.STEP)


def test_the_aligned_rows_are_in_a_fresh_random_order(parties: Parties) -> None:
    """Not the bank's file order: a feature party (and the coordinator) would learn it."""
    label, feature, keys_ = parties
    _psi(label, feature, keys_)
    aligned = label.aligned
    assert aligned is not None and len(aligned) > 20
    assert not np.all(np.diff(aligned) > 0)
    assert sorted(aligned.tolist()) == sorted(set(aligned.tolist()))
