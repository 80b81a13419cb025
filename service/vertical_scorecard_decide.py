"""Deciding a vertical scorecard's applicant at the bank: its own features by its coarse bins,
the platform's coarse codes (its answer, the scorecard's attributes) directly, to points, PD
and the 350-950 score (the bank's merge maps are not used here: the platform applies its own);
then the vertical trees' policy, rules, reasons and referrals (`vertical_decide`) unchanged.

An attribute's contribution is what it adds to the log-odds over its feature's best
attribute (the points it loses, in log-odds): the bank's attributes one by one, the
platform's as one group named by the platform, as the trees' reasons are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jointcredit.models.binning import BinningSpec
from jointcredit.models.vertical.scorecard.artifact import ScorecardLabelPart
from jointcredit.service.decision import rule_tables
from jointcredit.service.policy import Policy
from jointcredit.service.rules import Rules
from jointcredit.service.vertical_decide import VerticalDecider, _PartyReasons, party_column


class ScorecardDecider(VerticalDecider):
    def __init__(self, label: ScorecardLabelPart, policy: Policy) -> None:
        self.scorecard, self.policy = label.model, policy
        m = label.model
        self.features = [f.name for f in m.own]
        self.parties = list(label.card.parties)
        if len(self.parties) != 1:
            raise ValueError(
                "serving a vertical scorecard of more than one feature party is not built yet"
            )
        self.columns = [*self.features, *map(party_column, self.parties)]
        self._bins = BinningSpec(features=[f.bins for f in m.own])
        n_own = len(m.own)
        # Per feature, the log-odds each coarse code (attribute) adds, both parties'.
        self._own = [m.weights[a] * f.values for a, f in enumerate(m.own)]
        self._platform = [m.weights[n_own + j] * p.woe.values for j, p in enumerate(m.platform)]
        self.n_bins = tuple(p.woe.bins.n_bins for p in m.platform)  # what the platform answers
        self.scale = m.points.scale
        self.rules = Rules(policy, self.features)
        self.reasons = _PartyReasons(self.features, self.parties, policy)
        self.max_reasons = policy.max_reasons
        self._flags, self._rule_reasons = rule_tables(self.rules.order)

    def scored(
        self, applicant: Mapping[str, Any], sides: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """`sides[party]`: the platform's coarse code per feature (checked by the client)."""
        (party,) = self.parties
        codes = self._bins.codes_record(applicant)
        coarse = np.asarray(sides[party], dtype=np.int64)
        own = [t[c] for t, c in zip(self._own, codes, strict=True)]
        plat = [t[c] for t, c in zip(self._platform, coarse.tolist(), strict=True)]
        logit = self.scorecard.intercept + sum(own) + sum(plat)
        pd_ = np.array([1 / (1 + np.exp(-logit))])
        lost = [x - t.min() for x, t in zip(own, self._own, strict=True)]
        group = sum((x - t.min() for x, t in zip(plat, self._platform, strict=True)), 0.0)
        return pd_, np.array([[*lost, group]], dtype=np.float64)
