"""The label party's node in a vertical run: its PSI with each feature party, then the trees.

Training runs `jointcredit.models.vertical.label_party.train` unchanged, in a thread of the
node, with one `MessageLink` per feature party: each link call becomes a request in the label
party's reply to the coordinator, and waits for the feature party's answer, which the
coordinator relays in its next message. So the label party drives the trees as in process, and
Flower carries every exchange. Each request goes out signed by this node (its reply to the
coordinator) and reaches the feature party whole, which verifies it before acting. Every
relayed answer is checked against the feature party's own signature (its key in the trust
store, the step and message kind it was asked under, a fresh nonce), its action, and the
SHA-256 of the request it answers, which must be the one this party sent that party last,
before the link returns it: the coordinator can drop or delay an answer, never change or
forge one, nor have it answer another request.

After the trees: the feature parties' sides of the aligned test rows (the federated model's
metrics), each feature party's part written and signed by itself, then the label party's own
part (`jointcredit.models.vertical.artifact`) with their digests.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import RecordDict

from jointcredit.client import vertical_wire as wire
from jointcredit.client.vertical_fairness import held_out_fairness
from jointcredit.client.vertical_scorecard import train_scorecard
from jointcredit.data.frames import time_split
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.federation import vertical as v
from jointcredit.federation.fairness import Fairness
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.trees import TreeParams
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import (
    MODEL_DIR,
    PartyEntry,
    held_out_reference,
    write_label_part,
)
from jointcredit.models.vertical.label_party import train
from jointcredit.models.vertical.messages import (
    EncryptedGradients,
    EncryptedHistograms,
    HistogramQuery,
    PartyColumns,
    SplitDone,
    SplitOrder,
)
from jointcredit.models.vertical.party_bins import party_bins, party_schema
from jointcredit.privacy.paillier import HeuSecretKey
from jointcredit.privacy.psi import LabelPsi
from jointcredit.trust.store import TrustStore
from jointcredit.trust.updates import Expected

Arrays = dict[str, np.ndarray]


def split_rows(n: int, seed: int, test_fraction: float) -> np.ndarray:
    """Which of the label party's rows are test rows: drawn per row from the seed, so the
    baselines of a simulation pick the same ones."""
    return np.random.default_rng(seed).random(n) < test_fraction


def held_out_rows(
    frame: pd.DataFrame, schema: VerticalSchema, settings: VerticalSettings, aligned: np.ndarray
) -> np.ndarray:
    """Which `aligned` rows (positions in the label party's `frame`, in any order) are test
    rows: `split = random` draws each of the label party's rows from the seed; `split =
    time` takes the latest `test_fraction` of the aligned rows by the label party's time
    column, every training row strictly earlier (`time_split`). Either way the simulation's
    baselines pick the same rows."""
    if settings.split == "random":
        drawn = split_rows(len(frame), settings.seed, settings.test_fraction)
        chosen: np.ndarray = drawn[aligned]
        return chosen
    time = schema.base.time
    if time is None:
        raise ProtocolError(
            'split = time needs the schema\'s time column (time = "column", in the label '
            "party's file); this schema has none"
        )
    keys = frame[time].to_numpy(dtype=np.float64)[aligned]
    _, later = time_split(keys, settings.test_fraction, schema.label_party)
    test = np.zeros(len(aligned), dtype=bool)
    test[later] = True
    return test


def tree_params(s: VerticalSettings) -> TreeParams:
    return TreeParams(
        n_trees=s.trees, max_depth=s.max_depth, learning_rate=s.tree_learning_rate,
        reg_lambda=s.reg_lambda, gamma=s.min_split_loss, min_child_weight=s.min_child_weight,
    )  # fmt: skip


def own_bins(
    rows: pd.DataFrame, schema: VerticalSchema, party: str, s: VerticalSettings
) -> BinningSpec:
    """A party's bins of its aligned training rows, as every party makes its own."""
    return party_bins(
        rows, party_schema(schema, party), max_bins=s.max_bins, max_categories=s.max_categories,
        min_count=s.min_category_count,
    )  # fmt: skip


@dataclass
class _Asked:
    party: str
    action: str
    step_after: int  # the relayed answer must be newer than this step


@dataclass
class LabelSession:
    """One run's label party: its rows, secrets (PSI scalars, the Paillier secret key) and the
    training thread. Lives in its node's process only; nothing of it is ever serialized."""

    party: str
    schema: VerticalSchema
    frame: pd.DataFrame
    settings: VerticalSettings
    trust: TrustStore
    run_id: int
    signer: Any  # the label party's Ed25519 key (writes its part)
    created_at: str
    # Its protected attributes, row for row with `frame`, kept apart from it (never a
    # feature, never sent); `fairness`: their figures on the held-out rows, for `done`.
    groups: pd.DataFrame | None = None
    fairness: Fairness | None = None
    psi: dict[str, LabelPsi] = field(default_factory=dict)
    matches: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    aligned: np.ndarray | None = None  # own rows in the intersection, in a random order
    test: np.ndarray | None = None  # per aligned row
    indices: dict[str, int] = field(default_factory=dict)  # feature party -> its index
    _outbox: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    _inbox: queue.Queue[Arrays | BaseException] = field(default_factory=queue.Queue)
    _asked: _Asked | None = None
    _nonces: set[bytes] = field(default_factory=set)
    _last_step: int = -1
    _requests: dict[str, bytes] = field(default_factory=dict)  # party -> last request's digest
    _aligned: dict[str, Arrays] | None = None
    _thread: threading.Thread | None = None

    # -- PSI
    def blind(self, party: str) -> Arrays:
        if party in self.psi or party == self.party:
            raise ProtocolError(f"PSI with {party!r} already started, or with itself")
        ids = self.frame[self.schema.id].tolist()
        self.psi[party] = LabelPsi(ids)
        return {v.BLINDED: self.psi[party].blinded()}

    def intersect(self, party: str, answer: Arrays) -> None:
        psi = self.psi.get(party)
        if psi is None or party in self.matches:
            raise ProtocolError(f"no PSI under way with {party!r}")
        peer = psi.reblind(wire._get(answer, v.BLINDED, "uint8", 2))
        result, positions = psi.intersect(wire._get(answer, v.REBLINDED, "uint8", 2), peer)
        self.matches[party] = (result.rows, positions)

    def sent(self, party: str, content: RecordDict) -> RecordDict:
        """Note a request to `party` as it leaves (its digest, which the answer must carry)."""
        self._requests[party] = v.request_digest(content)
        return content

    def aligned_for(self, party: str) -> tuple[int, int, Arrays]:
        """The aligned rows' message for one feature party: the intersection's size, its
        index, its arrays (the alignment made once, at the first)."""
        if self._aligned is None:
            _, self._aligned = self.align()
        if party not in self._aligned:
            raise ProtocolError(f"{party!r} is not a feature party of this run")
        assert self.aligned is not None
        return len(self.aligned), self.indices[party], self._aligned[party]

    def align(self) -> tuple[int, dict[str, Arrays]]:
        """Own rows in every feature party's intersection, in a random order; per feature
        party, its matched positions (ascending), the order of its rows, and which are
        training rows."""
        parties = [p for p in self.schema.parties if p != self.party]
        if sorted(self.matches) != sorted(parties):
            raise ProtocolError("PSI is not done with every feature party")
        common = set(range(len(self.frame)))
        for rows, _ in self.matches.values():
            common &= set(rows.tolist())
        # A random order (fresh OS entropy, unseeded): the aligned rows' order tells no feature
        # party, nor the coordinator, the order of the shared applicants in this party's file.
        self.aligned = np.random.default_rng().permutation(np.array(sorted(common), np.int64))
        self.test = held_out_rows(self.frame, self.schema, self.settings, self.aligned)
        at = {int(r): i for i, r in enumerate(self.aligned.tolist())}
        out = {}
        for party in parties:
            rows, positions = self.matches[party]
            keep = np.array([int(r) in at for r in rows.tolist()], dtype=bool)
            pos, mine = positions[keep], rows[keep]
            by_pos = np.argsort(pos, kind="stable")
            pos, mine = pos[by_pos], mine[by_pos]
            # order[i]: which of the feature party's matched rows is aligned row i.
            order = np.empty(len(mine), dtype=np.int64)
            order[[at[int(r)] for r in mine.tolist()]] = np.arange(len(mine))
            out[party] = {
                v.POSITIONS: pos.astype(np.uint32),
                v.ORDER: order,
                v.TRAIN_ROWS: ~self.test,
            }
        self.indices = {p: i + 1 for i, p in enumerate(parties)}
        return len(self.aligned), out

    # -- training
    def start(self, columns: Mapping[str, Arrays]) -> None:
        if self.aligned is None or self.test is None or self._thread is not None:
            raise ProtocolError("training before PSI, or twice")
        links = [
            MessageLink(self, p, wire.columns_from(i, columns[p])) for p, i in self.indices.items()
        ]
        self._thread = threading.Thread(target=self._run, args=(links,), daemon=True)
        self._thread.start()

    def _run(self, links: list[MessageLink]) -> None:
        try:
            if self.settings.model == "scorecard":
                self._outbox.put(("done", train_scorecard(self, links)))
            else:
                self._outbox.put(("done", self._train(links)))
        except BaseException as exc:  # the handler re-raises it: an error reply
            self._outbox.put(("error", exc))

    def _train(self, links: list[MessageLink]) -> dict[str, float]:
        assert self.aligned is not None and self.test is not None
        s = self.settings
        rows = self.frame.iloc[self.aligned]
        own = party_schema(self.schema, self.party)
        train_rows, test_rows = rows[~self.test], rows[self.test]
        bins = own_bins(train_rows, self.schema, self.party, s)
        label = self.schema.base.label
        y = train_rows[label].to_numpy(dtype=np.float64)
        params = tree_params(s)
        codes = bins.codes(train_rows).astype(np.int64)
        ensemble = train(
            codes, y, bin_layout(bins), links, params, HeuSecretKey(),
            label_only_trees=s.label_only_trees,
        )  # fmt: skip
        sides = {link.index: link.test_sides() for link in links}
        pd_ = ensemble.predict_pd(bins.codes(test_rows).astype(np.int64), sides)
        scores = risk_metrics(test_rows[label].to_numpy(), pd_)
        metrics = {k: float(x) for k, x in scores.model_dump().items() if x is not None}
        self.fairness = held_out_fairness(
            self.groups, self.aligned[self.test], pd_, test_rows[label].to_numpy(),
            self.schema, s,
        )  # fmt: skip
        entries = {}
        for link in links:
            digest = link.write_part()
            splits = sum(int((t.owner == link.index).sum()) for t in ensemble.trees)
            entries[link.party] = PartyEntry(index=link.index, splits=splits, part_sha256=digest)
        write_label_part(
            Path(s.out_dir) / MODEL_DIR, ensemble=ensemble, bins=bins, schema=own,
            label_party=self.party, parties=entries,
            training={"trees": s.trees, "max-depth": s.max_depth, "max-bins": s.max_bins,
                      "tree-learning-rate": s.tree_learning_rate, "seed": s.seed,
                      "train-rows": len(train_rows), "test-rows": len(test_rows)},
            metrics=metrics, created_at=self.created_at, signer=self.signer, trust=self.trust,
            reference=held_out_reference(ScoreScale().score(pd_), test_rows, bins, self.party),
        )  # fmt: skip
        return {**metrics, "train-rows": float(len(train_rows)), "test-rows": len(test_rows)}

    def close(self, why: str = "idle too long") -> None:
        """The session is dropped: a training thread waiting for an answer stops."""
        self._inbox.put(ProtocolError(f"the vertical session was dropped ({why})"))

    def ask(self, party: str, action: str, arrays: Arrays, **values: str) -> Arrays:
        """From the training thread: hand a request to the coordinator, wait for the answer;
        `values`: the request's (a cross table's peer)."""
        self._outbox.put(("ask", (party, action, arrays, values)))
        answer = self._inbox.get(timeout=self.settings.timeout)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def next_request(self, step: int) -> tuple[str, Any]:
        """From the handler: what the training thread wants next (a request, or done)."""
        kind, value = self._outbox.get(timeout=self.settings.timeout)
        if kind == "error":
            raise RuntimeError(f"vertical training failed: {value}") from value
        if kind == "ask":
            party, action, _, _ = value
            self._asked = _Asked(party, action, step)
        return kind, value

    def answer(
        self, relayed: RecordDict, party: str, step: int, node: int, kind: str, action: str
    ) -> Arrays:
        """Check a relayed feature party answer end to end: its own signature over it, for
        this run, the step and node it says, the kind of message it was asked with, its
        `action`, and the digest of the request it answers: the last one sent to `party`."""
        if step <= self._last_step:
            raise ProtocolError(f"a relayed answer of step {step}, not newer than the last")
        expected = Expected(self.run_id, step, node, kind, party)
        accepted = wire.verify_relayed(relayed, expected, self.trust, self._nonces, "answer")
        request = v.request(relayed)
        if request.get(v.ACTION) != action:
            raise ProtocolError(f"{party} answered {request.get(v.ACTION)!r}, not {action!r}")
        wanted = self._requests.get(party)
        if wanted is None or request.get(v.REQUEST_SHA256) != wanted:
            raise ProtocolError(f"{party}'s answer is to another request than the one sent it")
        self._nonces.add(accepted.nonce)
        self._last_step = step
        return v.arrays(relayed)

    def deliver(self, relayed: RecordDict, party: str, step: int, node: int) -> None:
        asked = self._asked
        if asked is None or asked.party != party or step <= asked.step_after:
            raise ProtocolError(f"an answer from {party} that was not asked for")
        try:
            arrays = self.answer(relayed, party, step, node, v.SERVE, asked.action)
        except ProtocolError as exc:
            self._inbox.put(exc)  # the training thread stops with it
            raise
        self._asked = None
        self._inbox.put(arrays)


class MessageLink:
    """`FeaturePartyLink` over Flower messages: each call is a request the coordinator relays
    to the feature party, and its verified answer."""

    def __init__(self, session: LabelSession, party: str, columns: PartyColumns) -> None:
        self.session, self.party, self.index, self._columns = session, party, columns.party, columns
        self._rows = 0

    def columns(self) -> PartyColumns:
        return self._columns

    def receive_gradients(self, message: EncryptedGradients) -> None:
        self._rows = message.rows
        self.session.ask(self.party, v.GRADIENTS, wire.gradients_arrays(message))

    def histograms(self, query: HistogramQuery) -> EncryptedHistograms:
        return wire.histograms_from(
            self.session.ask(self.party, v.HISTOGRAMS, wire.query_arrays(query))
        )

    def split(self, order: SplitOrder) -> SplitDone:
        return wire.done_from(self.session.ask(self.party, v.SPLIT, wire.order_arrays(order)))

    def test_sides(self) -> np.ndarray:
        """The sides of the aligned test rows at every split this party holds."""
        assert self.session.test is not None
        sides = wire._get(self.session.ask(self.party, v.SIDES, {}), v.LEFT, "bool", 2)
        if sides.shape[0] != int(self.session.test.sum()):
            raise ProtocolError(f"{self.party}: sides for another number of test rows")
        return sides

    def write_part(self, arrays: Arrays | None = None) -> str:
        """The feature party's part written; `arrays`: what it needs besides (a scorecard's
        merge maps)."""
        answer = self.session.ask(self.party, v.WRITE_PART, arrays or {})
        digest = wire._get(answer, v.PART_SHA256, "uint8")
        text = digest.tobytes().decode("ascii", errors="replace")
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ProtocolError(f"{self.party}: not a SHA-256 of its part")
        return text
