"""A feature party's node in a vertical run: its side of the PSI, its own bins of its aligned
rows, and its side of the trees (`jointcredit.models.vertical.feature_party.FeatureParty`),
each request answered from its own columns; at the end its part of the model, written and
signed with its own key. Its raw values, bin edges and split thresholds never leave it.

It acts only on the label party's own requests: each reaches it whole, as the label party
signed it (its institution key in this node's trust store; which party is the label party:
the vertical schema), relayed by the coordinator. The request is verified for this run, the
label party's step and message kind, a fresh nonce and this party as addressee before
anything is computed; its arrays (a blinded set, aligned positions, the Paillier public key,
gradients, queries, split orders) are taken only from it. Each answer carries the SHA-256 of
the request it answers (`vertical.request_digest`), for the label party to compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import RecordDict

from jointcredit.client import vertical_scorecard_wire as sw
from jointcredit.client import vertical_wire as wire
from jointcredit.client.vertical_label import own_bins
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import MODEL_DIR, FeaturePart, write_feature_part
from jointcredit.models.vertical.feature_party import FeatureParty, SplitTable
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.scorecard.feature_party import ScorecardFeatureParty
from jointcredit.privacy.paillier import public_key
from jointcredit.privacy.psi import FeaturePsi
from jointcredit.trust.store import TrustStore
from jointcredit.trust.updates import Expected

Arrays = dict[str, np.ndarray]
TREES = frozenset({v.GRADIENTS, v.HISTOGRAMS, v.SPLIT, v.SIDES, v.WRITE_PART})
# The scorecard's steps, in the one order a feature party takes them, each once.
SCORECARD = (v.SC_COLUMNS, v.SC_TABLES, v.SC_COARSE, v.WRITE_PART, v.SC_TEST_CODES)
# Each model's last request, after which the session ends: the scorecard's part (with the
# merge maps) comes before its test rows' coarse codes, which need the maps.
LAST = {"gbdt": v.WRITE_PART, "scorecard": v.SC_TEST_CODES}


# The most of the aligned rows a label party may mark as test rows (`aligned`).
MAX_TEST_SHARE = 0.6  # a run's test fraction is at most 0.5; room for a time split's whole years


@dataclass
class FeatureSession:
    party: str
    schema: VerticalSchema
    frame: pd.DataFrame
    settings: VerticalSettings
    trust: TrustStore
    signer: Any
    created_at: str
    run_id: int
    psi: FeaturePsi | None = None
    bins: BinningSpec | None = None
    train_codes: np.ndarray | None = None
    test_codes: np.ndarray | None = None
    index: int = 0
    trees: FeatureParty | None = None
    train_frame: pd.DataFrame | None = None  # its aligned training rows (the scorecard's)
    scorecard: ScorecardFeatureParty | None = None
    merge: tuple[np.ndarray, ...] | None = None  # the scorecard's, once its part holds them
    pair_min_rows: int | None = None  # node config `pair-min-rows`: its coarse pair tables' floor
    _scorecard_steps: int = 0  # how many of SCORECARD it has answered
    _crossed: set[tuple[bool, str]] = field(default_factory=set)  # (as the peer, other party)
    _nonces: set[bytes] = field(default_factory=set)
    _last_step: int = -1

    def handle(self, content: RecordDict, kind: str) -> tuple[str, Arrays, bytes]:
        """Answer the label party's request a coordinator message relays (`kind`: the message
        type the label party sent it under): the answer's action, its arrays, and the
        request's digest."""
        action, arrays, request, digest = self.label_request(content, kind)
        if kind == v.PSI and action == v.PSI_BLIND:
            return v.PSI_REBLIND, self.reblind(arrays), digest
        if kind == v.PSI and action == v.PSI_ALIGN:
            index = request.get(v.INDEX)
            if not isinstance(index, int) or isinstance(index, bool):
                raise ProtocolError("aligned rows without this party's index")
            return v.PSI_ALIGNED, self.aligned(arrays, index), digest
        if kind == v.STEP and self.settings.model == "scorecard" and action == v.SC_CROSS:
            return self.serve_cross(content, request, arrays, digest)
        if kind == v.STEP and self.settings.model == "scorecard" and action in SCORECARD:
            return action, self.serve_scorecard(action, arrays), digest
        if kind == v.STEP and self.settings.model == "gbdt" and action in TREES:
            return action, self.serve(action, arrays), digest
        raise ProtocolError(f"a feature party does not do {action!r} ({kind})")

    def label_request(self, content: RecordDict, kind: str) -> tuple[str, Arrays, Any, bytes]:
        """The label party's request relayed whole in `content`, verified end to end: its
        action, arrays, request record and digest. Anything else raises `ProtocolError`."""
        outer = v.request(content)
        try:
            step, node = int(str(outer[v.RELAY_STEP])), int(str(outer[v.RELAY_NODE]))
        except (KeyError, ValueError) as exc:
            raise ProtocolError("a request without the label party's step and node") from exc
        label = self.schema.label_party
        relayed = v.relayed(content, label)
        if step <= self._last_step:
            raise ProtocolError(f"a label party request of step {step}, not newer than the last")
        expected = Expected(self.run_id, step, node, kind, label)
        accepted = wire.verify_relayed(relayed, expected, self.trust, self._nonces, "request")
        request = v.request(relayed)
        # A cross table's peer is asked for its encrypted codes by the request for the party.
        peer = request.get(v.ACTION) == v.SC_CROSS and request.get(v.PEER) == self.party
        if request.get(v.PARTY) != self.party and not peer:
            raise ProtocolError(
                f"{label}'s request is for {request.get(v.PARTY)!r}, not this party"
            )
        self._nonces.add(accepted.nonce)
        self._last_step = step
        return str(request[v.ACTION]), v.arrays(relayed), request, v.request_digest(relayed)

    def reblind(self, arrays: Arrays) -> Arrays:
        if self.psi is not None:
            raise ProtocolError("PSI already under way")
        self.psi = FeaturePsi(self.frame[self.schema.id].tolist())
        peer = wire._get(arrays, v.BLINDED, "uint8", 2)
        return {v.BLINDED: self.psi.blinded(), v.REBLINDED: self.psi.reblind(peer)}

    def aligned(self, arrays: Arrays, index: int) -> Arrays:
        if self.psi is None or self.bins is not None:
            raise ProtocolError("aligning before PSI, or twice")
        rows = self.psi.aligned_rows(wire._get(arrays, v.POSITIONS, "uint32")).rows
        order = wire._get(arrays, v.ORDER, "int64")
        train = wire._get(arrays, v.TRAIN_ROWS, "bool")
        if sorted(order.tolist()) != list(range(len(rows))) or len(train) != len(rows):
            raise ProtocolError("the aligned rows' order is not a permutation of the matches")
        tested = float(np.mean(~train)) if len(train) else 0.0
        if tested > MAX_TEST_SHARE:
            # Test rows get their codes or sides answered one by one: a label party must not
            # call most shared applicants test rows, whatever the run's test fraction says.
            raise ProtocolError(
                f"{tested:.0%} of the aligned rows marked as test rows: a feature party "
                f"answers for at most {MAX_TEST_SHARE:.0%}"
            )
        mine = self.frame.iloc[rows[order]]
        self.train_frame = mine[train].reset_index(drop=True)
        self.bins = own_bins(self.train_frame, self.schema, self.party, self.settings)
        self.train_codes = self.bins.codes(mine[train]).astype(np.int64)
        self.test_codes = self.bins.codes(mine[~train]).astype(np.int64)
        if not 0 < index < 1 << 20:
            raise ProtocolError(f"feature party index {index}")
        self.index = index
        return wire.columns_arrays(bin_layout(self.bins))

    def serve(self, action: str, arrays: Arrays) -> Arrays:
        if self.bins is None or self.train_codes is None or self.test_codes is None:
            raise ProtocolError("a training request before PSI")
        if action == v.GRADIENTS:
            message = wire.gradients_from(arrays)
            if self.trees is None:  # the label party's key, from its first message
                key = public_key(message.public_key)
                self.trees = FeatureParty(self.index, self.train_codes, bin_layout(self.bins), key)
            self.trees.receive_gradients(message)
            return {}
        if action == v.HISTOGRAMS:
            query = wire.query_from(arrays)
            if query.n_slots > 1 << self.settings.max_depth:  # a level has at most this many
                raise ProtocolError(
                    f"{query.n_slots} node slots at depth {self.settings.max_depth}"
                )
            return wire.histograms_arrays(self._trees(action).histograms(query))
        if action == v.SPLIT:
            order = wire.order_from(arrays)
            wire.rows_check(order.rows, len(self.train_codes), "a split's rows")
            return wire.done_arrays(self._trees(action).split(order))
        # No tree asked this party anything (every tree the label party's own): no split here.
        table = self.trees.table if self.trees else SplitTable(bin_layout(self.bins).missing)
        if action == v.SIDES:
            return {v.LEFT: table.sides(self.test_codes)}
        if action == v.WRITE_PART:
            digest = write_feature_part(
                Path(self.settings.out_dir) / MODEL_DIR,
                FeaturePart(self.party, self.index, table, self.bins,
                            label_party=self.schema.label_party),
                created_at=self.created_at, signer=self.signer, trust=self.trust,
            )  # fmt: skip
            return {v.PART_SHA256: np.frombuffer(digest.encode("ascii"), dtype=np.uint8)}
        raise ProtocolError(f"unknown request {action!r}")

    def serve_scorecard(self, action: str, arrays: Arrays) -> Arrays:
        """The vertical scorecard's steps (`models.vertical.scorecard.feature_party`), each
        once and in `SCORECARD`'s order: the label party's key from its first request, its
        merge maps from the coarse step, held to in its part."""
        if self.bins is None or self.train_frame is None or self.test_codes is None:
            raise ProtocolError("a training request before PSI")
        done, at = self._scorecard_steps, SCORECARD.index(action)
        if at != done:
            why = "repeated" if at < done else f"before {SCORECARD[done]!r}"
            raise ProtocolError(f"the scorecard step {action!r} {why}: steps go {SCORECARD}")
        out = self._scorecard_step(action, arrays)
        self._scorecard_steps += 1  # only once it succeeded (a failed one ends the run)
        return out

    def serve_cross(
        self, content: RecordDict, request: Any, arrays: Arrays, digest: bytes
    ) -> tuple[str, Arrays, bytes]:
        """A cross table with another feature party, between the coarse step and write-part,
        once per (role, other party): as the request's peer, its coarse codes encrypted under
        the label party's key (for the other party, which the coordinator relays them to); as
        its addressee, the peer's answer to this very request, verified against the peer's
        own signature, summed per its coarse codes."""
        at = SCORECARD.index(v.WRITE_PART)
        if self._scorecard_steps != at or self.scorecard is None:
            raise ProtocolError(f"the scorecard step {v.SC_CROSS!r} outside its place: {SCORECARD}")
        party, peer = str(request.get(v.PARTY)), str(request.get(v.PEER))
        features = [p for p in self.schema.parties if p != self.schema.label_party]
        if party == peer or not {party, peer} <= set(features):
            raise ProtocolError(f"a cross table of {party!r} and {peer!r}")
        as_peer = peer == self.party
        other = party if as_peer else peer
        if (as_peer, other) in self._crossed:
            raise ProtocolError(f"the scorecard step {v.SC_CROSS!r} with {other!r} repeated")
        try:
            if as_peer:
                out = sw.slots_arrays(self.scorecard.cross_slots())
                action = v.SC_CROSS_SLOTS
            else:
                answer = self._peer_answer(content, peer, digest)
                out = sw.tables_arrays(self.scorecard.cross_tables(sw.slots_from(answer)))
                action = v.SC_CROSS
        except ValueError as exc:
            raise ProtocolError(f"{self.party}: {exc}") from exc
        self._crossed.add((as_peer, other))
        return action, out, digest

    def _peer_answer(self, content: RecordDict, peer: str, digest: bytes) -> Arrays:
        """`peer`'s relayed answer to the label party's request of `digest`, verified end to
        end: its signature, step and node, a fresh nonce, its action and request digest."""
        outer = v.request(content)
        try:
            step = int(str(outer[f"{v.RELAY_STEP}/{peer}"]))
            node = int(str(outer[f"{v.RELAY_NODE}/{peer}"]))
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"a cross table without {peer}'s step and node") from exc
        relayed = v.relayed(content, peer)
        expected = Expected(self.run_id, step, node, v.SERVE, peer)
        accepted = wire.verify_relayed(relayed, expected, self.trust, self._nonces, "answer")
        answer = v.request(relayed)
        if answer.get(v.ACTION) != v.SC_CROSS_SLOTS or answer.get(v.REQUEST_SHA256) != digest:
            raise ProtocolError(f"{peer}'s relayed answer is not to this cross table's request")
        self._nonces.add(accepted.nonce)
        return v.arrays(relayed)

    def _scorecard_step(self, action: str, arrays: Arrays) -> Arrays:
        assert self.bins is not None and self.train_frame is not None
        assert self.test_codes is not None
        if action == v.SC_COLUMNS:
            raw = wire._get(arrays, v.PUBLIC_KEY, "uint8").tobytes()
            try:
                key = public_key(raw)
                self.scorecard = ScorecardFeatureParty(
                    self.train_frame, self.bins, key, pair_min_rows=self.pair_min_rows
                )
            except ValueError as exc:
                raise ProtocolError(f"{self.party}: {exc}") from exc
            return sw.columns_arrays(self.scorecard.columns())
        assert self.scorecard is not None  # the columns step came first
        if action == v.SC_TABLES:
            try:
                return sw.tables_arrays(self.scorecard.tables(sw.slots_from(arrays)))
            except ValueError as exc:
                raise ProtocolError(f"{self.party}: {exc}") from exc
        if action == v.SC_COARSE:
            maps = sw.merge_from(arrays, self.bins)
            try:
                return sw.pairs_arrays(self.scorecard.coarse(maps))
            except ValueError as exc:
                raise ProtocolError(f"{self.party}: {v.MERGE!r}: {exc}") from exc
        if action == v.WRITE_PART:
            held = self.scorecard.merge
            assert held is not None  # the coarse step came first
            maps = sw.merge_from(arrays, self.bins)
            if len(maps) != len(held) or not all(map(np.array_equal, maps, held)):
                raise ProtocolError(f"{v.MERGE!r}: not the merge maps of the {v.SC_COARSE!r} step")
            self.merge = held
            empty = SplitTable(bin_layout(self.bins).missing)  # its fine bins, no split
            digest = write_feature_part(
                Path(self.settings.out_dir) / MODEL_DIR,
                FeaturePart(self.party, self.index, empty, self.bins, "scorecard", held,
                            self.schema.label_party),
                created_at=self.created_at, signer=self.signer, trust=self.trust,
            )  # fmt: skip
            return {v.PART_SHA256: np.frombuffer(digest.encode("ascii"), dtype=np.uint8)}
        assert self.merge is not None  # SC_TEST_CODES, after its part: attributes, no fine bin
        return {v.CODES: coarse_codes(self.test_codes, self.merge)}

    def _trees(self, action: str) -> FeatureParty:
        if self.trees is None:
            raise ProtocolError(f"{action} before any gradients")
        return self.trees
