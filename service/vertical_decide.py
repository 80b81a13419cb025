"""Deciding a vertical applicant at the bank: the label party's own features (coded by its
own bins) and each feature party's routing through its splits -> PD, score, policy rules and
reasons; or, when any party's routing is missing, a referral naming the party and why, with
no PD and no score (nothing is guessed).

Reasons are exact TreeSHAP (models/vertical/shapley.py) over the bank's features and one
group per feature party ("information held by <party>"), against the training population's
majority path (the label party's part of the artifact holds no reference applicant). The
policy is the horizontal service's: its rules, cut-offs, stance and texts in both languages.
Not here yet: the checks for categories and values outside the training data (they need the
horizontal artifact's preprocessing, which a vertical part does not carry).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from jointcredit.models.vertical.artifact import LabelPart
from jointcredit.models.vertical.shapley import VerticalShapley
from jointcredit.service.decision import DecisionTable, rule_tables
from jointcredit.service.languages import Language
from jointcredit.service.policy import Policy, Stance
from jointcredit.service.reasons import TOWARD_DEFAULT, ModelReasons, profile_entry
from jointcredit.service.rules import Rules, Value
from jointcredit.service.vertical_client import Problem

# A feature party's reason group, and a referral for want of its routing: codes and texts.
PARTY_REASON: dict[Language, tuple[str, str]] = {  # (toward default, toward approval)
    "en": (
        "Information held by {party} raised the estimated risk",
        "Information held by {party} lowered the estimated risk",
    ),
    "zh": ("{party}所掌握的信息使估计的违约风险上升", "{party}所掌握的信息使估计的违约风险下降"),
}
REFERRAL_CODE: dict[Problem, str] = {
    "unavailable": "VERTICAL_PARTY_UNAVAILABLE",
    "no_data": "VERTICAL_PARTY_NO_DATA",
    "no_consent": "VERTICAL_PARTY_NO_CONSENT",
}
REFERRAL: dict[Problem, dict[Language, str]] = {
    "unavailable": {
        "en": "{party}'s information could not be obtained ({why}), so the application needs "
        "a loan officer's review",
        "zh": "未能获取{party}的信息（{why}），因此申请需由信贷人员人工审核",
    },
    "no_data": {
        "en": "{party} holds no information on the applicant, so the application needs a loan "
        "officer's review",
        "zh": "{party}没有该申请人的信息，因此申请需由信贷人员人工审核",
    },
    "no_consent": {
        "en": "{party} holds no valid consent of the applicant to use its information "
        "({why}), so the application needs a loan officer's review",
        "zh": "{party}没有申请人使用其信息的有效授权（{why}），因此申请需由信贷人员人工审核",
    },
}


PARTY_PREFIX = "party:"


def party_column(party: str) -> str:
    """A feature party's reason group among the contribution columns."""
    return f"{PARTY_PREFIX}{party}"


def _template_pattern(template: str) -> re.Pattern[str]:
    """A referral's text as a pattern that reads back its `party` and `why`."""
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{party}"), "(?P<party>.+?)", 1)
    return re.compile("^" + pattern.replace(re.escape("{why}"), "(?P<why>.*)", 1) + "$")


# A referral's problem by its code, and its texts as patterns in every language.
PROBLEM_OF = {code: problem for problem, code in REFERRAL_CODE.items()}
_REFERRAL_PATTERNS = {
    problem: [_template_pattern(t) for t in texts.values()] for problem, texts in REFERRAL.items()
}


def referral_text(problem: Problem, party: str, why: str, language: Language) -> str:
    return REFERRAL[problem][language].replace("{party}", party).replace("{why}", why)


def retold_referral(problem: Problem, party: str, text: str, language: Language) -> str:
    """A referral's text in `language`, its `why` read back from the text it was given in
    (the client's own words, the same in every language); unchanged when it is not one."""
    for pattern in _REFERRAL_PATTERNS[problem]:
        found = pattern.match(text)
        if found is not None:
            return referral_text(problem, party, found.groupdict().get("why") or "", language)
    return text


class _PartyReasons(ModelReasons):
    """The model's reasons, with each feature party's group told in its own words."""

    def __init__(self, features: list[str], parties: list[str], policy: Policy) -> None:
        super().__init__([*features, *map(party_column, parties)], policy)
        self._party = {party_column(p): p for p in parties}
        for j, name in enumerate(self.features):
            if name in self._party:
                self._codes[j] = f"VERTICAL_PARTY_{self._party[name].upper()}"

    def text(
        self, name: str, value: object, toward_default: bool, language: Language = "en"
    ) -> str:
        party = self._party.get(name)
        if party is None:
            return super().text(name, value, toward_default, language)
        return PARTY_REASON[language][0 if toward_default else 1].replace("{party}", party)


class VerticalDecider:
    def __init__(self, label: LabelPart, policy: Policy) -> None:
        self.label, self.policy = label, policy
        self.features = list(label.card.features)
        name = {e.index: p for p, e in label.card.parties.items()}
        self.parties = [name[i] for i in label.ensemble.parties()]
        self.index = {p: e.index for p, e in label.card.parties.items()}
        self.columns = [*self.features, *map(party_column, self.parties)]
        for p in self.parties:  # every split id a party's answer must cover
            index, count = self.index[p], label.card.parties[p].splits
            used = [t.split[t.owner == index] for t in label.ensemble.trees]
            if any(len(u) and int(u.max()) >= count for u in used):
                raise ValueError(f"the trees name a split of {p} beyond its {count} splits")
        self.explain = VerticalShapley(label.ensemble)
        self.scale = label.card.score_scale
        self.rules = Rules(policy, self.features)
        self.reasons = _PartyReasons(self.features, self.parties, policy)
        self.max_reasons = policy.max_reasons
        self._flags, self._rule_reasons = rule_tables(self.rules.order)

    def decide_one(
        self, applicant: Mapping[str, Any], context: Mapping[str, Any], stance: Stance | None,
        language: Language | None, sides: Mapping[str, np.ndarray],
    ) -> DecisionTable:  # fmt: skip
        """One applicant with every feature party's routing (`sides[party]`, one per split)."""
        lang = self.policy.answers_in(language)
        pds, contrib = self.scored(applicant, sides)
        score = int(self.scale.score(pds)[0])
        fields = {
            f: Value(applicant[f] if f in applicant else context.get(f)) for f in self.rules.fields
        }
        verdict = self.rules.one(fields.__getitem__, score, stance)
        explained = self.rules.explain_one(verdict)
        first = len(self.rules.order)
        front = explained.lead[0]
        values = {**applicant, **dict.fromkeys(map(party_column, self.parties))}
        toward_default = verdict.outcome != "approve"
        model_ids, entries = self.reasons.one(
            values, contrib[0].tolist(), first_id=first, toward_default=toward_default,
            room=self.max_reasons - len(front), language=lang,
        )  # fmt: skip
        ids = (front + model_ids + explained.tail[0])[: self.max_reasons]
        if verdict.outcome != "approve" and not ids:
            more, extra = self.reasons.fallback(
                values, contrib[0].tolist(), first_id=first + len(entries),
                room=self.max_reasons, language=lang,
            )  # fmt: skip
            ids, entries = more, entries + extra
        return DecisionTable(
            decision=[verdict.outcome], probability_of_default=[float(pds[0])], score=[score],
            policy_score=[int(verdict.policy_score)], stance=[verdict.stance], reason_ids=[ids],
            reason_table=[*self._rule_reasons[lang], *entries], features=self.columns,
            contributions=np.round(contrib, 4), rules=self._flags[lang],
            flag_ids=explained.flags, not_evaluated_ids=explained.unevaluated,
            unknown_values=[{}], out_of_range=[{}], max_reasons=self.max_reasons, language=lang,
        )  # fmt: skip

    def scored(
        self, applicant: Mapping[str, Any], sides: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(PD, contributions per column in log-odds) of one applicant as one row each."""
        codes = np.array([self.label.bins.codes_record(applicant)], dtype=np.int64)
        by_index = {self.index[p]: np.asarray(s, dtype=bool)[None, :] for p, s in sides.items()}
        pds, contrib = self.explain(codes, by_index)
        return np.asarray(pds), np.asarray(contrib)

    def unscored(
        self, stance: Stance | None, language: Language | None,
        problems: Mapping[str, tuple[Problem, str]],
    ) -> DecisionTable:  # fmt: skip
        """A referral for want of some party's routing: no PD, no score, no rule evaluated;
        a flag and a first reason per party, naming it and why."""
        lang = self.policy.answers_in(language)
        rules = list(self._flags[lang])
        flags, reasons = [], []
        for party, (problem, why) in sorted(problems.items()):
            text = referral_text(problem, party, why, lang)
            flags.append(len(rules))
            rules.append({"code": REFERRAL_CODE[problem], "action": "refer", "text": text,
                          "points": 0})  # fmt: skip
            # The party also by name in `feature`: machine-readable, whatever the language.
            reasons.append({"code": REFERRAL_CODE[problem], "text": text, "kind": "policy",
                            "feature": party_column(party), "direction": None})  # fmt: skip
        first = len(self._rule_reasons[lang])
        ids = list(range(first, first + len(reasons)))[: self.max_reasons]
        none = cast(Any, [None])  # rendered as null: not scored
        return DecisionTable(
            decision=["refer"], probability_of_default=none, score=none, policy_score=none,
            stance=[stance or self.rules.stance], reason_ids=[ids],
            reason_table=[*self._rule_reasons[lang], *reasons], features=self.columns,
            contributions=np.zeros((1, len(self.columns))), rules=rules, flag_ids=[flags],
            not_evaluated_ids=[list(range(len(self.rules.order)))], unknown_values=[{}],
            out_of_range=[{}], max_reasons=self.max_reasons, language=lang,
        )  # fmt: skip

    def retell(
        self, reasons: Sequence[Mapping[str, Any]], applicant: Mapping[str, Any],
        language: Language,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """A decision's reasons with their texts in `language`, as `Decider.retell` does it:
        from each reason's code, feature and direction and the bank's features as audited; a
        party's group by the party, a referral for want of its routing by its problem, the
        party and the why its text gave. Reasons this decider does not write (a joint limit's
        or consent's referral) are kept as they are."""
        lang = self.policy.answers_in(language)
        rules = {r["code"]: r["text"] for r in self._rule_reasons[lang]}
        out = []
        for r in reasons:
            text, feature, code = r["text"], r["feature"], r["code"]
            if r["kind"] == "model":
                toward_default = r["direction"] == TOWARD_DEFAULT
                text = self.reasons.text(feature, applicant.get(feature), toward_default, lang)
            elif code in PROBLEM_OF and feature is not None:
                party = feature.removeprefix(PARTY_PREFIX)
                text = retold_referral(PROBLEM_OF[code], party, text, lang)
            elif code == self.policy.profile_risk.code and feature is None:
                followed = any(other["kind"] == "model" for other in reasons)
                text = profile_entry(self.policy, followed, lang)["text"]
            else:
                text = rules.get(code, text)
            out.append({**r, "text": text})
        return out
