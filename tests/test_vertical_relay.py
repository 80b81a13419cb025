"""The label party checks every feature party answer the coordinator relays against the
feature party's own signature: a changed payload, an answer signed by another party, one
replayed, or one relayed under another step is refused, so the coordinator can drop or delay
an answer but never alter or forge one. And the wire codecs refuse malformed payloads."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict

from jointcredit.client import vertical_wire as wire
from jointcredit.client.vertical_label import LabelSession
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
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


def _answer(step: int, key: object, party: str = "platform", values: int = 3) -> RecordDict:
    content = v.content(step, v.HISTOGRAMS, {v.BUCKETS: np.arange(values, dtype=np.int64)})
    content[protocol.IDENTITY] = protocol.identity_record(party)
    binding = Binding(RUN, step, NODE, party, v.SERVE, fresh_nonce())
    content[SIGNATURE_RECORD] = sign_content(content, binding, key)  # type: ignore[arg-type]
    return content


def test_a_relayed_answer_is_checked_end_to_end(setup: tuple[LabelSession, dict]) -> None:  # type: ignore[type-arg]
    session, party_keys = setup
    good = _answer(10, party_keys["platform"])
    assert session.answer(good, "platform", 10, NODE, v.SERVE)[v.BUCKETS].tolist() == [0, 1, 2]
    with pytest.raises(ProtocolError, match="not newer"):
        session.answer(good, "platform", 10, NODE, v.SERVE)  # the same answer again

    changed = _answer(11, party_keys["platform"])
    changed[v.PAYLOAD] = ArrayRecord({v.BUCKETS: Array(np.arange(4, dtype=np.int64))})
    with pytest.raises(ProtocolError, match="tampered"):
        session.answer(changed, "platform", 11, NODE, v.SERVE)

    forged = _answer(12, party_keys["bank"], party="platform")
    with pytest.raises(ProtocolError, match="wrong-institution"):
        session.answer(forged, "platform", 12, NODE, v.SERVE)

    moved = _answer(13, party_keys["platform"])
    with pytest.raises(ProtocolError, match="replayed"):  # signed for step 13, relayed as 14
        session.answer(moved, "platform", 14, NODE, v.SERVE)


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
