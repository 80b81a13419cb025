"""The bank's decider of a vertical scorecard of two platforms: each platform's coarse codes
scored by its own features' points (the card says which party holds which), the PD the
points table gives, and each platform's attributes one reason group named by it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.binning.table import Classing
from jointcredit.models.vertical.artifact import PartyEntry
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.party_bins import party_bins, party_schema
from jointcredit.models.vertical.scorecard.artifact import (
    ScorecardCard,
    ScorecardLabelPart,
    ScorecardModel,
)
from jointcredit.models.vertical.scorecard.feature_party import ScorecardFeatureParty
from jointcredit.models.vertical.scorecard.label_party import train
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.service.policy import DEFAULT_POLICY, load_policy
from jointcredit.service.vertical_decide import party_column
from jointcredit.service.vertical_scorecard_decide import ScorecardDecider
from jointcredit.simulations.vertical import aligned_frames, load_data

CLASSING = Classing(fine_bins=8, min_bin_share=0.05)


def test_two_platforms_are_scored_each_by_its_own_features() -> None:
    settings = VerticalSettings.model_validate({"synthetic-rows": 2000})
    data = load_data(settings)
    frames, test = aligned_frames(data, settings)
    schema = data.schema
    bank, platform = (frames[p][~test].reset_index(drop=True) for p in ("bank", "platform"))

    def bins(party: str) -> BinningSpec:
        return party_bins(frames[party][~test], party_schema(schema, party), max_bins=8,
                          max_categories=20, min_count=5)  # fmt: skip

    plat = bins("platform").features
    held = {"pay": BinningSpec(features=plat[:4]), "shop": BinningSpec(features=plat[4:])}
    secret = HeuSecretKey()
    pk = public_key(secret.public.to_bytes())
    links = [ScorecardFeatureParty(platform, b, pk) for b in held.values()]
    y = bank[schema.base.label].to_numpy()
    model = train(bank, y, bins("bank"), schema.base, links, secret, classing=CLASSING)
    entries = {
        p: PartyEntry(index=i, splits=0, part_sha256="0" * 64) for i, p in enumerate(held, 1)
    }
    card = ScorecardCard(
        label_party="bank",
        data_schema=party_schema(schema, "bank"),
        holders={"bank": [f.name for f in model.own]} | {p: b.names for p, b in held.items()},
        parties=entries,
        training={},
        metrics={},
        model_sha256="0" * 64,
        created_at="2026-12-07T00:00:00+00:00",
    )
    stored = ScorecardModel.of(model, "lda").scorecard()
    label: Any = ScorecardLabelPart(card, stored, None)  # type: ignore[arg-type]
    decider = ScorecardDecider(label, load_policy(DEFAULT_POLICY))
    assert decider.parties == ["pay", "shop"]
    assert decider.columns[-2:] == [party_column("pay"), party_column("shop")]
    assert decider.n_bins == {
        p: tuple(f.woe.bins.n_bins for f in model.platform[a:b])
        for p, (a, b) in (("pay", (0, 4)), ("shop", (4, len(plat))))
    }

    rows = frames["bank"][test].head(5)
    own = model.own_codes(rows)
    fine = {p: b.codes(frames["platform"][test].head(5)).astype(np.int64) for p, b in held.items()}
    maps = {
        "pay": [f.merge for f in model.platform[:4]],
        "shop": [f.merge for f in model.platform[4:]],
    }
    coarse = {p: coarse_codes(fine[p], maps[p]) for p in held}
    both = np.column_stack([coarse["pay"], coarse["shop"]])
    want = 1 / (1 + np.exp(-model.logit(own, both)))
    for i, (_, applicant) in enumerate(rows.iterrows()):
        pd_, contrib = decider.scored(applicant.to_dict(), {p: coarse[p][i] for p in held})
        assert pd_[0] == pytest.approx(want[i], abs=1e-12)
        assert contrib.shape == (1, len(model.own) + 2) and (contrib >= 0).all()
