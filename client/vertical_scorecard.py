"""The vertical scorecard over the same Flower exchange as the trees (`client.vertical_label`):
the label party's side runs `models.vertical.scorecard.label_party.train` unchanged in its
training thread, with a `ScorecardMessageLink` whose every call is a request the coordinator
relays whole to the feature party and whose answer is verified as the trees' are
(`LabelSession.answer`: the feature party's signature, step, action, the request's digest).

Then the feature party's part (its fine bins and the merge maps the label party sends it), the
federated model's metrics on the aligned test rows (the feature party's coarse codes of them,
through those maps, each checked within its feature's coarse bins) and the label party's part
(`models.vertical.scorecard.artifact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jointcredit.client import vertical_scorecard_wire as sw
from jointcredit.client.vertical_fairness import held_out_fairness
from jointcredit.federation import vertical as v
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.binning.table import Classing
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.vertical.artifact import MODEL_DIR, PartyEntry, held_out_reference
from jointcredit.models.vertical.merge_maps import MIN_BIN_SHARE, n_coarse
from jointcredit.models.vertical.party_bins import party_schema
from jointcredit.models.vertical.scorecard import artifact
from jointcredit.models.vertical.scorecard.label_party import train
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)
from jointcredit.privacy.paillier import HeuSecretKey

if TYPE_CHECKING:
    from jointcredit.client.vertical_label import LabelSession, MessageLink


def classing(s: VerticalSettings) -> Classing:
    """The scorecard's classing: fine bins as many as `max-bins` (the parties' fine bins)."""
    return Classing(fine_bins=s.max_bins, min_bin_share=MIN_BIN_SHARE)


class ScorecardMessageLink:
    """`ScorecardLink` over Flower messages, to one feature party."""

    def __init__(self, link: MessageLink, public_key: bytes) -> None:
        self.session, self.party, self.index = link.session, link.party, link.index
        self._key = public_key
        self.names: tuple[str, ...] = ()  # its features, as its columns named them

    def columns(self) -> FineColumns:
        key = {v.PUBLIC_KEY: np.frombuffer(self._key, dtype=np.uint8).copy()}
        cols = sw.columns_from(self.session.ask(self.party, v.SC_COLUMNS, key))
        self.names = cols.names
        return cols

    def tables(self, message: EncryptedSlots) -> EncryptedTables:
        return sw.tables_from(self.session.ask(self.party, v.SC_TABLES, sw.slots_arrays(message)))

    def coarse(self, maps: Sequence[np.ndarray]) -> PairCounts:
        answer = self.session.ask(self.party, v.SC_COARSE, sw.merge_arrays(maps))
        return sw.pairs_from(answer, n_coarse(maps))

    def cross(self, peer: ScorecardMessageLink) -> EncryptedTables:
        """`peer`'s encrypted coarse codes summed by this party: the coordinator relays the
        request to the peer and its answer to this party, never through this node."""
        answer = self.session.ask(self.party, v.SC_CROSS, {}, **{v.PEER: peer.party})
        return sw.tables_from(answer)

    def test_codes(self, rows: int, n_coarse: Sequence[int]) -> np.ndarray:
        """The feature party's coarse codes of the aligned test rows (after its part)."""
        return sw.codes_from(self.session.ask(self.party, v.SC_TEST_CODES, {}), rows, n_coarse)


def train_scorecard(session: LabelSession, links: list[MessageLink]) -> dict[str, float]:
    """The label party's scorecard run: fit, evaluate on the aligned test rows, write the
    parts; returns the metrics its `done` reply carries."""
    from jointcredit.client.vertical_label import own_bins

    assert session.aligned is not None and session.test is not None
    s = session.settings
    rows = session.frame.iloc[session.aligned]
    train_rows = rows[~session.test].reset_index(drop=True)
    test_rows = rows[session.test].reset_index(drop=True)
    fine = own_bins(train_rows, session.schema, session.party, s)
    label = session.schema.base.label
    key = HeuSecretKey()
    scorecard_links = [ScorecardMessageLink(link, key.public.to_bytes()) for link in links]
    model = train(
        train_rows, train_rows[label].to_numpy(), fine, session.schema.base, scorecard_links,
        key, classing=classing(s),
    )  # fmt: skip
    entries, held, at = {}, [], 0
    for link, sc in zip(links, scorecard_links, strict=True):
        mine = model.platform[at : at + len(sc.names)]
        at += len(sc.names)
        # Each feature party keeps its merge maps (its coarse step's, sent again: the signed
        # request names what its part holds) in its part, then answers coarse codes by them.
        digest = link.write_part(sw.merge_arrays([p.merge for p in mine]))
        entries[link.party] = PartyEntry(index=link.index, splits=0, part_sha256=digest)
        n_coarse = [p.woe.bins.n_bins for p in mine]
        held.append(sc.test_codes(len(test_rows), n_coarse))
    coarse = np.column_stack(held) if held else np.zeros((len(test_rows), 0), np.int64)
    logit = model.logit(model.own_codes(test_rows), coarse)
    pd_ = 1 / (1 + np.exp(-logit))
    scores = risk_metrics(test_rows[label].to_numpy(), pd_)
    session.fairness = held_out_fairness(
        session.groups, session.aligned[session.test], pd_, test_rows[label].to_numpy(),
        session.schema, s,
    )  # fmt: skip
    attributes = BinningSpec(features=[f.bins for f in model.own])
    score = model.points.scale.score(pd_)
    reference = held_out_reference(score, test_rows, attributes, session.party)
    metrics = {k: float(x) for k, x in scores.model_dump().items() if x is not None}
    artifact.write_label_part(
        Path(s.out_dir) / MODEL_DIR,
        model=artifact.ScorecardModel.of(model, "lda"),
        schema=party_schema(session.schema, session.party),
        label_party=session.party,
        parties=entries,
        holders={sc.party: list(sc.names) for sc in scorecard_links},
        training={"model": "scorecard", "max-bins": s.max_bins, "min-bin-share": MIN_BIN_SHARE,
                  "calibration": "lda", "seed": s.seed, "train-rows": len(train_rows),
                  "test-rows": len(test_rows)},
        metrics=metrics, created_at=session.created_at, signer=session.signer,
        trust=session.trust, reference=reference,
    )  # fmt: skip
    return {**metrics, "train-rows": float(len(train_rows)), "test-rows": len(test_rows)}
