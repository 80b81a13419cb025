"""The vertical scorecard's artifact: the label party's part (points table, its own coarse
bins and WOE, the feature party's merge maps and WOE by code, weights, calibration) signed by
the label party's key, and the feature party's part (its fine bins' edges and levels and the
same merge maps, so it answers coarse codes: an empty split table,
`artifact.write_feature_part` as the trees') signed by its own. The label party keeps its copy
of the maps for the points table's record and to check the feature party's against; it scores
the coarse codes the feature party answers and never maps a fine code.

Layout::

    OUT/model/
        scorecard.json           `ScorecardCard`: which party holds which features, each
                                 feature party's part digest, training settings, metrics
        points.json              `ScorecardModel` (canonical JSON)
        reference.json           stability monitoring's reference: the aligned test rows'
                                 scores and the label party's attributes (`artifact`)
        manifest.json/.sig
    OUT/model/parties/<party>/   the feature party's part (`artifact.load_feature_part`)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict

from jointcredit.data.schema import Schema
from jointcredit.models.artifact import ArtifactError
from jointcredit.models.binning.encoding import WoeFeature
from jointcredit.models.reference import REFERENCE, Reference
from jointcredit.models.scorecard import PointsTable
from jointcredit.models.vertical import artifact as parts
from jointcredit.models.vertical.scorecard.fit import PlatformFeature, VerticalScorecard
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.files import UnsafeFile, read_regular, replace_file
from jointcredit.trust.manifest import Verified, sign_directory
from jointcredit.trust.store import TrustStore, check_institution_id

FORMAT = "jointcredit-vertical-scorecard"
CARD = parts.SCORECARD_CARD
MODEL = "points.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MergedFeature(_Strict):
    """A feature party's feature as the label party keeps it (`fit.PlatformFeature`)."""

    woe: WoeFeature
    merge: list[int]  # fine code -> coarse code


class ScorecardModel(_Strict):
    intercept: float
    weights: list[float]  # the label party's features, then the feature party's
    calibration: str
    own: list[WoeFeature]
    platform: list[MergedFeature]
    points: PointsTable

    @classmethod
    def of(cls, m: VerticalScorecard, calibration: str) -> ScorecardModel:
        return cls(
            intercept=float(m.intercept),
            weights=[float(w) for w in m.weights],
            calibration=calibration,
            own=list(m.own),
            platform=[MergedFeature(woe=p.woe, merge=p.merge.tolist()) for p in m.platform],
            points=m.points,
        )

    def scorecard(self) -> VerticalScorecard:
        platform = tuple(
            PlatformFeature(p.woe, np.asarray(p.merge, dtype=np.int64)) for p in self.platform
        )
        return VerticalScorecard(
            self.intercept, np.asarray(self.weights), tuple(self.own), platform, self.points
        )


class ScorecardCard(_Strict):
    format: str = FORMAT
    version: int = 1
    label_party: str
    data_schema: Schema  # the label party's label and own features only
    holders: dict[str, list[str]]  # party -> the features whose attributes it holds
    parties: dict[str, parts.PartyEntry]
    training: dict[str, Any]
    metrics: dict[str, Any]
    model_sha256: str
    created_at: str
    reference_sha256: str | None = None  # none in parts written before it was kept


@dataclass(frozen=True)
class VerticalScorecardModel:
    card: ScorecardCard
    model: VerticalScorecard
    verified: Verified
    parties: dict[str, parts.FeaturePart]

    def predict_pd(self, frames: Mapping[str, pd.DataFrame]) -> np.ndarray:
        """PD of aligned rows given every party's raw frame (same rows, same order): each
        feature party's coarse codes from its own part, as it answers them."""
        own = self.model.own_codes(frames[self.card.label_party])
        coarse = np.column_stack(
            [own[:, :0]] + [self.parties[n].coarse(frames[n]) for n in feature_parties(self.card)]
        )
        out: np.ndarray = 1 / (1 + np.exp(-self.model.logit(own, coarse)))
        return out


def feature_parties(card: ScorecardCard) -> list[str]:
    """The feature parties in their features' order in the points table (by index)."""
    return sorted(card.parties, key=lambda n: card.parties[n].index)


def is_scorecard(model_dir: Path) -> bool:
    return (model_dir / CARD).is_file()


def write_label_part(
    model_dir: Path,
    *,
    model: ScorecardModel,
    schema: Schema,
    label_party: str,
    parties: Mapping[str, parts.PartyEntry],
    holders: Mapping[str, Sequence[str]],
    training: dict[str, Any],
    metrics: dict[str, Any],
    created_at: str,
    signer: Ed25519PrivateKey,
    trust: TrustStore,
    reference: Reference | None = None,
) -> ScorecardCard:
    """Write and sign the label party's part at `model_dir/` with its own key; `parties`:
    each feature party with its part's manifest digest (`artifact.write_feature_part`'s),
    `holders` its features (in the points table's order, the parties by index)."""
    check_institution_id(label_party)
    if not parties or sorted(parties) != sorted(holders):
        raise ValueError("a vertical scorecard's feature parties, each with its features")
    order = sorted(parties, key=lambda n: parties[n].index)
    if [f for n in order for f in holders[n]] != [p.woe.name for p in model.platform]:
        raise ValueError("the feature parties' features are not the points table's")
    data = canonical_json(model.model_dump(mode="json"))
    if sorted(schema.features) != sorted(f.name for f in model.own):
        raise ValueError("the schema and the points table have different own features")
    ref = parts.reference_bytes(reference, [f.name for f in model.own])
    card = ScorecardCard(
        label_party=label_party,
        data_schema=schema,
        holders={label_party: [f.name for f in model.own]} | {n: list(holders[n]) for n in order},
        parties=dict(parties),
        training=training,
        metrics=metrics,
        model_sha256=parts._sha(data),
        created_at=created_at,
        reference_sha256=None if ref is None else parts._sha(ref),
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    replace_file(model_dir / MODEL, data, mode=0o644)
    if ref is not None:
        replace_file(model_dir / REFERENCE, ref, mode=0o644)
    replace_file(model_dir / CARD, canonical_json(card.model_dump(mode="json")), mode=0o644)
    sign_directory(
        model_dir,
        [CARD, MODEL, *([REFERENCE] if ref is not None else [])],
        {
            "kind": FORMAT,
            "party": label_party,
            "parties": {n: e.part_sha256 for n, e in sorted(parties.items())},
            "training": training,
            "metrics": metrics,
            "created_at": created_at,
        },
        signer,
        trust,
        institution=label_party,
    )
    return card


@dataclass(frozen=True)
class ScorecardLabelPart:
    card: ScorecardCard
    model: VerticalScorecard
    verified: Verified
    reference: Reference | None = None  # stability monitoring's (parts older than it: none)


def load_label_part(model_dir: Path, trust: TrustStore) -> ScorecardLabelPart:
    """Verify the label party's part (signed by an active key of the label party its card
    names), then load and cross-check it."""
    try:
        claimed = ScorecardCard.model_validate_json(read_regular(model_dir / CARD)).label_party
    except (FileNotFoundError, UnsafeFile, ValueError) as exc:
        raise ArtifactError(f"{model_dir / CARD}: not a vertical scorecard card: {exc}") from exc
    verified = parts._verified(model_dir, trust, claimed, {CARD, MODEL})
    try:
        card = ScorecardCard.model_validate_json(verified.contents[CARD])
        if card.format != FORMAT or card.label_party != claimed or not card.parties:
            raise ValueError(f"a {card.format} card of {card.label_party!r}")
        parts._digest_check(model_dir, MODEL, verified.contents[MODEL], card.model_sha256)
        stored = ScorecardModel.model_validate_json(verified.contents[MODEL])
        model = stored.scorecard()
    except ValueError as exc:
        raise ArtifactError(f"{model_dir}: invalid vertical scorecard: {exc}") from exc
    own, platform = model.own, model.platform
    order = feature_parties(card)
    held = [f for n in order for f in card.holders.get(n, [])]
    if (
        len(model.weights) != len(own) + len(platform)
        or sorted(card.holders) != sorted([claimed, *order])
        or card.holders[claimed] != [f.name for f in own]
        or held != [p.name for p in platform]
    ):
        raise ArtifactError(f"{model_dir}: the card and the points table disagree")
    if sorted(f.name for f in own) != sorted(card.data_schema.features):  # its keys sorted
        raise ArtifactError(f"{model_dir}: the card's schema is not the points' own features")
    own_names = [f.name for f in own]
    reference = parts.load_reference(model_dir, verified, card.reference_sha256, own_names)
    return ScorecardLabelPart(card, model, verified, reference)


def load_vertical_scorecard(model_dir: Path, trust: TrustStore) -> VerticalScorecardModel:
    """The label party's part and the feature party's (by its own key, the digest the card
    records), each verified, then cross-checked."""
    label = load_label_part(model_dir, trust)
    card, model = label.card, label.model
    loaded, at = {}, 0
    for name in feature_parties(card):
        entry = card.parties[name]
        part = parts.load_feature_part(model_dir, name, trust, expected_sha256=entry.part_sha256)
        if part.model != "scorecard" or part.index != entry.index or len(part.table) != 0:
            where = parts.part_directory(model_dir, name)
            raise ArtifactError(f"{where}: not the part the card names")
        parts.check_label_party(model_dir, card.label_party, part)
        if part.bins.names != card.holders[name]:
            raise ArtifactError(
                f"{model_dir}: the card, the points and the parts' features disagree"
            )
        # The feature party answers through its own copy of the maps: it must be the points'.
        mine = model.platform[at : at + len(part.merge)]
        at += len(part.merge)
        for merge, p in zip(part.merge, mine, strict=True):
            if not np.array_equal(merge, p.merge) or int(merge.max()) + 1 != p.woe.bins.n_bins:
                raise ArtifactError(f"{model_dir}: {p.name}: the parts' merge maps disagree")
        loaded[name] = part
    return VerticalScorecardModel(card, model, label.verified, loaded)
