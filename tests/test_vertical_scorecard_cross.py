"""Two feature parties' cross table, from signed requests: the label party asks one party
(`shop`) to sum another's (`pay`) coarse codes; `pay` answers its codes encrypted under the
label party's key, and `shop` takes them only relayed whole with the label party's request,
signed by `pay` and answering that very request; the decrypted sums are the two parties'
coarse x coarse tables. Out of place (before either coarse step), repeated, or with a party
outside the run, the step is refused naming it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import RecordDict
from test_vertical_relay import LABEL_NODE, RUN, _relay, _request, _signed

from jointcredit.client import vertical_scorecard_wire as sw
from jointcredit.client.vertical_feature import FeatureSession
from jointcredit.client.vertical_label import own_bins
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.data.vertical_schema import PartySpec, VerticalSchema
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.scorecard import slots
from jointcredit.models.vertical.scorecard.messages import EncryptedSlots
from jointcredit.privacy.paillier import HeuSecretKey
from jointcredit.trust import keys, store

NODES = {"pay": 31, "shop": 32}
Arrays = dict[str, np.ndarray]


class Three:
    """A bank's signing key and two feature parties' sessions on the same aligned rows."""

    def __init__(self, out: Path) -> None:
        data = load_vertical_dataset("synthetic-vertical", rows=400)
        cols = list(data.schema.parties["platform"].features)
        base = data.schema
        self.schema = VerticalSchema(
            base.base,
            {"bank": base.parties["bank"], "pay": PartySpec(features=tuple(cols[:4])),
             "shop": PartySpec(features=tuple(cols[4:]))},
        )  # fmt: skip
        settings = VerticalSettings.model_validate(
            {"synthetic-rows": 400, "model": "scorecard", "max-bins": 8,
             "min-category-count": 10, "out-dir": str(out)}
        )  # fmt: skip
        coordinator = keys.generate()
        self.keys = {p: keys.generate() for p in ("bank", "pay", "shop")}
        trust = store.create("cross-test", coordinator)
        for p, k in self.keys.items():
            trust = store.add_key(trust, p, k.public_key(), coordinator)
        frame = data.parties["platform"].frame
        train, test = frame.iloc[:320].reset_index(drop=True), frame.iloc[320:]
        self.sessions: dict[str, FeatureSession] = {}
        for index, party in enumerate(("pay", "shop"), start=1):
            s = FeatureSession(party, self.schema, frame, settings, trust, self.keys[party],
                               "2026-12-07T00:00:00+00:00", RUN)  # fmt: skip
            # As its aligned-rows step leaves it (PSI is tests/test_vertical_relay.py's).
            s.train_frame, s.index = train, index
            s.bins = own_bins(train, self.schema, party, settings)
            s.train_codes = s.bins.codes(train).astype(np.int64)
            s.test_codes = s.bins.codes(test).astype(np.int64)
            self.sessions[party] = s
        self.secret = HeuSecretKey()
        self.step = 100

    def ask(self, party: str, action: str, arrays: Arrays, **values: str) -> Arrays:
        """A signed label party request relayed to `party`; its answer's arrays."""
        request = self.request(party, action, arrays, **values)
        return self.sessions[party].handle(_relay(request, self.step), v.STEP)[1]

    def request(self, party: str, action: str, arrays: Arrays, **values: str) -> RecordDict:
        self.step += 10
        return _request(self.step, action, arrays, self.keys["bank"], v.STEP, to=party, **values)

    def maps(self, party: str) -> list[np.ndarray]:
        """Every regular fine bin one attribute, each special value and missing its own."""
        bins = self.sessions[party].bins
        assert bins is not None
        return [np.r_[np.zeros(f.regular, np.int64), 1 + np.arange(f.n_bins - f.regular)]
                for f in bins.features]  # fmt: skip

    def through_coarse(self, party: str) -> Arrays:
        """Its columns, tables and coarse steps; the coarse step's answer."""
        key = {v.PUBLIC_KEY: np.frombuffer(self.secret.public.to_bytes(), np.uint8).copy()}
        self.ask(party, v.SC_COLUMNS, key)
        rows = 320
        message = EncryptedSlots(
            self.secret.public.to_bytes(), self.secret.public.encrypt([1] * rows).to_bytes(),
            rows, 1,
        )  # fmt: skip
        self.ask(party, v.SC_TABLES, sw.slots_arrays(message))
        return self.ask(party, v.SC_COARSE, sw.merge_arrays(self.maps(party)))


def _peer_answer(
    three: Three, request: RecordDict, signer: Ed25519PrivateKey | None = None
) -> tuple[RecordDict, int]:
    """`pay`'s signed answer to the cross request (as the coordinator relays it to `pay`)."""
    step = three.step
    action, out, digest = three.sessions["pay"].handle(_relay(request, step), v.STEP)
    assert action == v.SC_CROSS_SLOTS
    answer = _signed(
        v.content(step + 1, action, out, **{v.REQUEST_SHA256: digest}), "pay",
        signer or three.keys["pay"], v.SERVE, step + 1, NODES["pay"],
    )  # fmt: skip
    return answer, step + 1


def _to_shop(request: RecordDict, asked: int, answer: RecordDict | None, at: int) -> RecordDict:
    """The coordinator's message to `shop`: the label party's request and `pay`'s answer."""
    content = v.content(
        at + 1, v.SC_CROSS,
        **{v.RELAY_STEP: asked, v.RELAY_NODE: LABEL_NODE, f"{v.RELAY_STEP}/pay": at,
           f"{v.RELAY_NODE}/pay": NODES["pay"]},
    )  # fmt: skip
    v.relay(request, content, "bank")
    if answer is not None:
        v.relay(answer, content, "pay")
    return content


def test_the_cross_table_from_signed_requests(tmp_path: Path) -> None:
    three = Three(tmp_path)
    with pytest.raises(ProtocolError, match="'scorecard-cross' outside its place"):
        three.ask("shop", v.SC_CROSS, {}, peer="pay")  # before its coarse step
    three.through_coarse("pay")
    three.through_coarse("shop")
    for party, peer in (("shop", "shop"), ("shop", "bank"), ("shop", "nobody")):
        with pytest.raises(ProtocolError, match="a cross table of"):
            three.ask(party, v.SC_CROSS, {}, peer=peer)

    shop, pay = three.sessions["shop"], three.sessions["pay"]

    def attempt(
        signer: Ed25519PrivateKey | None = None, other: bool = False, omit: bool = False
    ) -> tuple[str, Arrays, bytes]:
        """A cross request to shop, pay's answer (to it, or to `other` request; by
        `signer`), relayed to shop (without pay's answer: `omit`)."""
        pay._crossed.clear()  # each attempt asks pay afresh (a real run ends at a refusal)
        request = three.request("shop", v.SC_CROSS, {}, peer="pay")
        asked = three.step
        answered = three.request("shop", v.SC_CROSS, {}, peer="pay") if other else request
        answer, at = _peer_answer(three, answered, signer)
        return shop.handle(_to_shop(request, asked, None if omit else answer, at), v.STEP)

    with pytest.raises(ProtocolError, match="relayed as pay's does not verify: unsigned"):
        attempt(omit=True)
    with pytest.raises(ProtocolError, match="does not verify"):
        attempt(signer=three.keys["shop"])  # not pay's signature
    with pytest.raises(ProtocolError, match="not to this cross table's request"):
        attempt(other=True)  # pay's genuine answer, to another request
    with pytest.raises(ProtocolError, match="'scorecard-cross' with 'shop' repeated"):
        _peer_answer(three, three.request("shop", v.SC_CROSS, {}, peer="pay"))
    action, out, _ = attempt()
    assert action == v.SC_CROSS
    tables = sw.tables_from(out)

    # Decrypted, they are the two parties' coarse x coarse tables.
    pay_codes = coarse_codes(three.sessions["pay"].train_codes, three.maps("pay"))
    shop_codes = coarse_codes(shop.train_codes, three.maps("shop"))
    k_pay = [int(m.max()) + 1 for m in three.maps("pay")]
    plan = slots.plan(320, k_pay, three.secret.public.plaintext_bits())
    plain = [three.secret.decrypt(three.secret.public.load(c)) for c in tables.columns]
    sums = slots.unpack(plan, plain)
    for b in range(shop_codes.shape[1]):
        for a, k in enumerate(k_pay):
            block = sums[b * tables.buckets : (b + 1) * tables.buckets, plan.offsets[a] :][:, :k]
            want = np.zeros_like(block)
            np.add.at(want, (shop_codes[:, b], pay_codes[:, a]), 1)
            np.testing.assert_array_equal(block, want)
    assert not sums[:, slots.BAD].any()  # no label slot: pay holds none

    with pytest.raises(ProtocolError, match="'scorecard-cross' with 'pay' repeated"):
        attempt()


def test_a_cross_step_after_the_part_is_refused(tmp_path: Path) -> None:
    three = Three(tmp_path)
    for party in ("pay", "shop"):
        three.through_coarse(party)
    three.ask("pay", v.WRITE_PART, sw.merge_arrays(three.maps("pay")))
    with pytest.raises(ProtocolError, match="'scorecard-cross' outside its place"):
        three.ask("pay", v.SC_CROSS, {}, peer="shop")


def test_cross_slots_are_under_the_label_partys_key(tmp_path: Path) -> None:
    """What `pay` sends toward `shop`: ciphertexts under the bank's key, fresh per run (two
    encryptions of the same codes differ), one plaintext column set per row."""
    three = Three(tmp_path)
    three.through_coarse("pay")
    scorecard = three.sessions["pay"].scorecard
    assert scorecard is not None
    first, second = scorecard.cross_slots(), scorecard.cross_slots()
    assert first.public_key == three.secret.public.to_bytes() and first.rows == 320
    assert first.ciphertexts != second.ciphertexts
    assert replace(first, ciphertexts=b"") == replace(second, ciphertexts=b"")


def test_a_platforms_pair_floor_travels_with_its_signed_pair_tables(tmp_path: Path) -> None:
    """A platform's node-config `pair-min-rows` (floored at 5) reaches the bank in its signed
    coarse step's answer, for the bank to hold the cross tables of its codes to it; unset,
    it is announced as 0 (none)."""
    three = Three(tmp_path)
    three.sessions["pay"].pair_min_rows = 2
    for party, floor in (("pay", 5), ("shop", 0)):
        answer = three.through_coarse(party)
        np.testing.assert_array_equal(answer[v.PAIR_FLOOR], [floor])
        k = [int(m.max()) + 1 for m in three.maps(party)]
        assert sw.pairs_from(answer, k).min_rows == (floor or None)
