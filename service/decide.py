"""From validated applications to decisions: preprocess, score, explain, apply the policy.

`Decider` holds a verified model and a policy and answers with a `DecisionTable` for one
applicant (`decide_one`) or a batch (`decide_columns`): the same steps, each defined once and
applied in the form that suits the count (models/preprocessing.py, service/coverage.py,
service/rules.py, service/reasons.py). The model runs once per request whatever its size.

An applicant's reasons, at most the policy's `max_reasons` of every kind together: why it was
referred for values outside the model's training data, the rules that decided, the model's
reasons in the decision's direction (as many as there is room for), the adjustments that pushed
the same way.

Texts come in the language the request asked for, when the policy has it
(`Policy.answers_in`); codes, features and directions never depend on it, so a decision can
be told again in the other language from what the audit log keeps (`retell`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jointcredit.models.artifact import ScoringModel
from jointcredit.service.applicants import typical
from jointcredit.service.coverage import Coverage, Found
from jointcredit.service.decision import DecisionTable, rule_tables
from jointcredit.service.explain import model_kernel
from jointcredit.service.languages import Language
from jointcredit.service.policy import Policy, Stance
from jointcredit.service.reasons import (
    TOWARD_DEFAULT,
    ModelReasons,
    profile_entry,
)
from jointcredit.service.rules import Column, Explained, Rules, Value


class Decider:
    def __init__(self, model: ScoringModel, policy: Policy) -> None:
        self.model = model
        self.policy = policy
        # The preprocessing's order, which is the attribution columns' order (the model card's
        # schema is canonical JSON, its keys sorted).
        self.features = [f.name for f in model.spec.features]
        self.rules = Rules(policy, self.features)
        schema = model.card.data_schema.features
        self.kernel = model_kernel(model, typical(model.spec, schema))
        self.coverage = Coverage(
            model.spec, schema, policy.outside_training, bins=model.bins, spans=model.spans
        )
        # A request's other reasons come after the rules' own.
        self._flags, self._rule_reasons = rule_tables(self.rules.order)
        self.reasons = ModelReasons(self.features, policy, self.coverage.level)
        self.max_reasons = policy.max_reasons

    def decide_one(
        self, applicant: Mapping[str, Any], context: Mapping[str, Any], stance: Stance | None,
        language: Language | None = None,
    ) -> DecisionTable:  # fmt: skip
        """One applicant: every model feature's value (None: missing, where the schema
        imputes; categories as text) and the context signals sent (absent or None: not);
        texts in `language` when the policy has it (else English)."""
        lang = self.policy.answers_in(language)
        pds, contrib = self.kernel(self.model.inputs_record(applicant))
        score = int(self.model.card.score_scale.score(pds)[0])
        unseen, beyond = self.coverage.one(applicant)
        fields = {
            f: Value(applicant[f] if f in applicant else context.get(f)) for f in self.rules.fields
        }
        verdict = self.rules.one(fields.__getitem__, score, stance, bool(unseen or beyond))
        explained = self.rules.explain_one(verdict)
        first = len(self.rules.order)
        outside_ids, outside = self.coverage.explain([unseen], [beyond], first, lang)
        front = outside_ids[0] + explained.lead[0]
        model_ids, entries = self.reasons.one(
            applicant, contrib[0].tolist(), first_id=first + len(outside),
            toward_default=verdict.outcome != "approve", room=self.max_reasons - len(front),
            language=lang,
        )  # fmt: skip
        reason_ids = [(front + model_ids + explained.tail[0])[: self.max_reasons]]
        entries += self._fallback(
            reason_ids, verdict.outcome == "approve", [applicant], contrib,
            first + len(outside) + len(entries), lang,
        )  # fmt: skip
        pd_ = float(pds[0])
        return self._table(
            [verdict.outcome], [pd_ if math.isfinite(pd_) else 1.0], [score],
            [verdict.policy_score], [verdict.stance], reason_ids, explained,
            [*outside, *entries], contrib, [unseen], [beyond], lang,
        )  # fmt: skip

    def decide_columns(
        self,
        features: Mapping[str, Sequence[Any]],
        context: Mapping[str, Sequence[Any]],
        stances: Sequence[Stance | None],
        language: Language | None = None,
    ) -> DecisionTable:
        """A batch: every model feature's values (None: missing, where the schema imputes;
        categories as text), every declared context signal's (None: not sent)."""
        lang = self.policy.answers_in(language)
        n = len(stances)
        pds, contrib = self.kernel(self.model.inputs_columns(features))
        scores = self.model.card.score_scale.score(pds)
        unseen, beyond = self.coverage.many(features, n)
        outside = np.array([bool(u or b) for u, b in zip(unseen, beyond, strict=True)])
        columns: dict[str, Column] = {}

        def field(name: str) -> Column:
            c = columns.get(name)
            if c is None:
                c = columns[name] = Column(features[name] if name in features else context[name])
            return c

        verdict = self.rules.many(field, scores, stances, outside)
        explained = self.rules.explain_many(verdict, n)
        first = len(self.rules.order)
        outside_ids, outside_entries = self.coverage.explain(unseen, beyond, first, lang)
        fronts = [o + lead if o else lead
                  for o, lead in zip(outside_ids, explained.lead, strict=True)]  # fmt: skip
        model_ids, entries = self.reasons.many(
            features, contrib, first_id=first + len(outside_entries),
            toward_default=np.array([d != "approve" for d in verdict.outcome], dtype=bool),
            room=self.max_reasons - np.array([len(f) for f in fronts], dtype=np.int64),
            language=lang,
        )  # fmt: skip
        most, tails = self.max_reasons, explained.tail
        reason_ids = [m if not f and not t else (f + m + t)[:most]
                      for f, m, t in zip(fronts, model_ids, tails, strict=True)]  # fmt: skip
        unreasoned = [k for k, d in enumerate(verdict.outcome)
                      if d != "approve" and not reason_ids[k]]  # fmt: skip
        entries += self._fallback(
            reason_ids, False, [{f: features[f][k] for f in self.features} for k in unreasoned],
            contrib[unreasoned], first + len(outside_entries) + len(entries), lang, unreasoned,
        )  # fmt: skip
        return self._table(
            verdict.outcome, np.where(np.isfinite(pds), pds, 1.0).tolist(), scores.tolist(),
            verdict.policy_score.tolist(), verdict.stance, reason_ids, explained,
            [*outside_entries, *entries], contrib, unseen, beyond, lang,
        )  # fmt: skip

    def _fallback(
        self, reason_ids: list[list[int]], approved: bool, applicants: list[Mapping[str, Any]],
        contrib: np.ndarray, first_id: int, language: Language, rows: list[int] | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Every decline and referral gets its principal reasons: for the `rows` (default: the
        first) left without any, `ModelReasons.fallback`'s, their ids set in `reason_ids`; the
        new table entries."""
        entries: list[dict[str, Any]] = []
        if approved:
            return entries
        for k, applicant, pushes in zip(
            [0] if rows is None else rows, applicants, contrib, strict=True
        ):
            if reason_ids[k]:
                continue
            ids, extra = self.reasons.fallback(
                applicant, pushes.tolist(), first_id=first_id + len(entries),
                room=self.max_reasons, language=language,
            )  # fmt: skip
            reason_ids[k] = ids
            entries += extra
        return entries

    def _table(
        self, decision: list[str], pd_: list[float], score: list[int], policy_score: list[int],
        stance: list[str], reason_ids: list[list[int]], explained: Explained,
        entries: list[dict[str, Any]], contrib: np.ndarray, unseen: list[Found],
        beyond: list[Found], language: Language,
    ) -> DecisionTable:  # fmt: skip
        """The table, with the tables shared by every request (the rules as flags and their
        reasons, then this request's other reasons) and contributions rounded for display."""
        return DecisionTable(
            decision=decision, probability_of_default=pd_, score=score,
            policy_score=policy_score, stance=stance, reason_ids=reason_ids,
            reason_table=[*self._rule_reasons[language], *entries], features=self.features,
            contributions=np.round(contrib, 4), rules=self._flags[language],
            flag_ids=explained.flags, not_evaluated_ids=explained.unevaluated,
            unknown_values=unseen, out_of_range=beyond, max_reasons=self.max_reasons,
            language=language,
        )  # fmt: skip

    def decide(
        self,
        applicants: Sequence[Mapping[str, Any]],
        contexts: Sequence[Mapping[str, Any]],
        stances: Sequence[Stance | None],
        language: Language | None = None,
    ) -> DecisionTable:
        """A batch given as records (the columns of `decide_columns`, row by row)."""
        return self.decide_columns(
            {f: [a[f] for a in applicants] for f in self.features},
            {c: [ctx.get(c) for ctx in contexts] for c in self.policy.context},
            stances,
            language,
        )

    def retell(
        self, reasons: Sequence[Mapping[str, Any]], applicant: Mapping[str, Any],
        language: Language,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """A decision's reasons (as a response or the audit log gives them) with their texts
        in `language`, from what does not depend on it: each reason's code, feature and
        direction, and the applicant's values. Reasons the decider does not write (a joint
        limit's referral) are kept as they are."""
        lang = self.policy.answers_in(language)
        rules = {r["code"]: r["text"] for r in self._rule_reasons[lang]}
        out = []
        for r in reasons:
            text, feature = r["text"], r["feature"]
            if r["kind"] == "model":
                toward_default = r["direction"] == TOWARD_DEFAULT
                text = self.reasons.text(feature, applicant[feature], toward_default, lang)
            elif r["code"] == self.policy.profile_risk.code and r["feature"] is None:
                followed = any(other["kind"] == "model" for other in reasons)
                text = profile_entry(self.policy, followed, lang)["text"]
            elif r["code"] == self.policy.outside_training.code and feature is not None:
                unseen, beyond = self.coverage.one({**applicant})
                value = unseen.get(feature, beyond.get(feature))
                if value is not None:
                    text = self.coverage.entry(feature, value, feature in unseen, lang)["text"]
            else:
                text = rules.get(r["code"], text)
            out.append({**r, "text": text})
        return out
