"""From validated applications to decisions: preprocess, score, explain, apply the policy.

`Decider` holds a verified model and a policy and answers with a `DecisionTable` for one
applicant (`decide_one`) or a batch (`decide_columns`): the same steps, each defined once and
applied in the form that suits the count (models/preprocessing.py, service/rules.py,
service/reasons.py). The model runs once per request whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jointcredit.models.artifact import ScoringModel
from jointcredit.service.decision import DecisionTable
from jointcredit.service.explain import feature_columns, kernel
from jointcredit.service.policy import Policy, Stance
from jointcredit.service.reasons import ModelReasons, unseen
from jointcredit.service.rules import Column, Rules, Value


class Decider:
    def __init__(self, model: ScoringModel, policy: Policy) -> None:
        self.model = model
        self.policy = policy
        # The preprocessing's order, which is the attribution columns' order (the model card's
        # schema is canonical JSON, its keys sorted).
        self.features = [f.name for f in model.spec.features]
        self.rules = Rules(policy, self.features)
        self.kernel = kernel(model.model, model.card.architecture.kind, feature_columns(model.spec))
        self.known_levels = {
            f.name: set(f.categories) for f in model.spec.features if hasattr(f, "categories")
        }
        # Shared by every table, never changed: each rule as a flag and as a policy reason, in
        # the rules' order; model reasons come after them in a table.
        self._flags = [
            {"code": r.code, "action": r.action, "text": r.reason, "points": r.points}
            for r in self.rules.order
        ]
        self._rule_reasons = [
            {"code": r.code, "text": r.reason, "kind": "policy", "feature": None}
            for r in self.rules.order
        ]
        self.reasons = ModelReasons(self.features, policy, first_id=len(self._rule_reasons))

    def decide_one(
        self, applicant: Mapping[str, Any], context: Mapping[str, Any], stance: Stance | None
    ) -> DecisionTable:
        """One applicant: every model feature's value (None: missing, where the schema
        imputes; categories as text) and the context signals sent (absent or None: not)."""
        x = np.array([self.model.spec.transform_record(applicant)], dtype=np.float32)
        pds, contrib = self.kernel(x)
        score = int(self.model.card.score_scale.score(pds)[0])
        fields = {
            f: Value(applicant[f] if f in applicant else context.get(f)) for f in self.rules.fields
        }
        verdict = self.rules.one(fields.__getitem__, score, stance)
        model_ids, entries = self.reasons.one(applicant, contrib[0].tolist())
        pd_ = float(pds[0])
        unknown = unseen(self.known_levels, {f: [applicant[f]] for f in self.known_levels})
        return self._table(
            [verdict.outcome], [pd_ if math.isfinite(pd_) else 1.0], [score],
            [verdict.policy_score], [verdict.stance], self.rules.explain_one(verdict, model_ids),
            entries, contrib, [unknown.get(0, {})],
        )  # fmt: skip

    def decide_columns(
        self,
        features: Mapping[str, Sequence[Any]],
        context: Mapping[str, Sequence[Any]],
        stances: Sequence[Stance | None],
    ) -> DecisionTable:
        """A batch: every model feature's values (None: missing, where the schema imputes;
        categories as text), every declared context signal's (None: not sent)."""
        n = len(stances)
        x = self.model.spec.transform_columns(features)
        pds, contrib = self.kernel(x)
        scores = self.model.card.score_scale.score(pds)
        columns: dict[str, Column] = {}

        def field(name: str) -> Column:
            c = columns.get(name)
            if c is None:
                c = columns[name] = Column(features[name] if name in features else context[name])
            return c

        verdict = self.rules.many(field, scores, stances)
        model_ids, entries = self.reasons.many(features, contrib)
        unknown = unseen(self.known_levels, features)
        none: dict[str, str] = {}
        return self._table(
            verdict.outcome, np.where(np.isfinite(pds), pds, 1.0).tolist(), scores.tolist(),
            verdict.policy_score.tolist(), verdict.stance,
            self.rules.explain_many(verdict, n, model_ids), entries, contrib,
            [unknown.get(k, none) for k in range(n)],
        )  # fmt: skip

    def _table(
        self, decision: list[str], pd_: list[float], score: list[int], policy_score: list[int],
        stance: list[str], explained: tuple[list[list[int]], list[list[int]], list[list[int]]],
        entries: list[dict[str, Any]], contrib: np.ndarray, unknown: list[dict[str, str]],
    ) -> DecisionTable:  # fmt: skip
        """The table, with the tables shared by every request (the rules as flags and their
        reasons, then this request's model reasons) and contributions rounded for display."""
        reason_ids, flag_ids, unevaluated = explained
        return DecisionTable(
            decision=decision, probability_of_default=pd_, score=score,
            policy_score=policy_score, stance=stance, reason_ids=reason_ids,
            reason_table=[*self._rule_reasons, *entries], features=self.features,
            contributions=np.round(contrib, 4), rules=self._flags, flag_ids=flag_ids,
            not_evaluated_ids=unevaluated, unknown_values=unknown,
        )  # fmt: skip

    def decide(
        self,
        applicants: Sequence[Mapping[str, Any]],
        contexts: Sequence[Mapping[str, Any]],
        stances: Sequence[Stance | None],
    ) -> DecisionTable:
        """A batch given as records (the columns of `decide_columns`, row by row)."""
        return self.decide_columns(
            {f: [a[f] for a in applicants] for f in self.features},
            {c: [ctx.get(c) for ctx in contexts] for c in self.policy.context},
            stances,
        )
