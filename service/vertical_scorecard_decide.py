"""Deciding a vertical scorecard's applicant at the bank: its own features by its coarse bins,
each platform's coarse codes (its answer, the scorecard's attributes) directly, to points, PD
and the 350-950 score (the bank's merge maps are not used here: the platform applies its own);
then the vertical trees' policy, rules, reasons and referrals (`vertical_decide`) unchanged.

An attribute's contribution is what it adds to the log-odds over its feature's best
attribute (the points it loses, in log-odds): the bank's attributes one by one, the
platform's as one group per platform, named by it, as the trees' reasons are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jointcredit.models.binning import BinningSpec
from jointcredit.models.vertical.scorecard.artifact import ScorecardLabelPart, feature_parties
from jointcredit.service.decision import rule_tables
from jointcredit.service.policy import Policy
from jointcredit.service.rules import Rules
from jointcredit.service.vertical_decide import VerticalDecider, _PartyReasons, party_column


class ScorecardDecider(VerticalDecider):
    def __init__(self, label: ScorecardLabelPart, policy: Policy) -> None:
        self.scorecard, self.policy = label.model, policy
        m = label.model
        self.features = [f.name for f in m.own]
        self.parties = feature_parties(label.card)  # their features' order in the points
        self.columns = [*self.features, *map(party_column, self.parties)]
        self._bins = BinningSpec(features=[f.bins for f in m.own])
        n_own = len(m.own)
        # Per feature, the log-odds each coarse code (attribute) adds, both parties'.
        self._own = [m.weights[a] * f.values for a, f in enumerate(m.own)]
        self._platform = [m.weights[n_own + j] * p.woe.values for j, p in enumerate(m.platform)]
        # Per feature party: where its features start in the points, and the coarse bins of
        # each (what it answers).
        self._at: dict[str, tuple[int, int]] = {}
        self.n_bins: dict[str, tuple[int, ...]] = {}
        at = 0
        for party in self.parties:
            k = len(label.card.holders[party])
            self._at[party] = (at, at + k)
            self.n_bins[party] = tuple(p.woe.bins.n_bins for p in m.platform[at : at + k])
            at += k
        self.scale = m.points.scale
        self.rules = Rules(policy, self.features)
        self.reasons = _PartyReasons(self.features, self.parties, policy)
        self.max_reasons = policy.max_reasons
        self._flags, self._rule_reasons = rule_tables(self.rules.order)

    def scored(
        self, applicant: Mapping[str, Any], sides: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """`sides[party]`: each feature party's coarse code per feature (checked by the
        client); each party's attributes one group of the reasons, named by it."""
        codes = self._bins.codes_record(applicant)
        own = [t[c] for t, c in zip(self._own, codes, strict=True)]
        logit = self.scorecard.intercept + sum(own)
        groups = []
        for party in self.parties:
            start, end = self._at[party]
            tables = self._platform[start:end]
            coarse = np.asarray(sides[party], dtype=np.int64).tolist()
            plat = [t[c] for t, c in zip(tables, coarse, strict=True)]
            logit += sum(plat)
            groups.append(sum((x - t.min() for x, t in zip(plat, tables, strict=True)), 0.0))
        pd_ = np.array([1 / (1 + np.exp(-logit))])
        lost = [x - t.min() for x, t in zip(own, self._own, strict=True)]
        return pd_, np.array([[*lost, *groups]], dtype=np.float64)
