"""From a validated application to a decision: score, reasons, policy.

`Decider` holds a verified model and a policy; `decide` works on a batch (one applicant is a
batch of one) so the model runs once per request whatever its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from jointcredit.models.artifact import ScoringModel
from jointcredit.service.explain import feature_columns, kernel
from jointcredit.service.policy import Policy, Rule, Stance

Outcome = Literal["approve", "decline", "refer"]


# Plain slotted dataclasses, not frozen ones: a frozen dataclass's __init__ pays
# object.__setattr__ per field, and a decision builds a dozen of these. Nothing mutates them.
@dataclass(slots=True)
class Reason:
    code: str
    text: str
    kind: Literal["policy", "model"]
    feature: str | None = None
    contribution: float | None = None  # log-odds pushed toward default (model reasons)


@dataclass(slots=True)
class Flag:
    code: str
    action: str
    text: str
    points: int = 0


@dataclass(slots=True)
class Decision:
    decision: Outcome
    probability_of_default: float
    score: int
    policy_score: int
    stance: Stance
    reasons: list[Reason]
    flags: list[Flag]
    not_evaluated: list[str]  # rules whose fields the request did not carry
    unknown_values: dict[str, str] = field(default_factory=dict)  # category not seen in training


def _matches(rule: Rule, values: dict[str, Any], policy_score: int) -> bool | None:
    """True/False, or None when a field the rule needs is absent. Plain loops: this runs for
    every rule and every applicant, and needs no generator objects."""
    when = rule.when
    for f in when:
        if f not in values:
            return None
    if rule.below_score is not None and policy_score >= rule.below_score:
        return False
    for f, cond in when.items():  # noqa: SIM110 (all() over a generator: the cost above)
        if not cond.holds(values[f]):
            return False
    return True


class Decider:
    def __init__(self, model: ScoringModel, policy: Policy) -> None:
        self.model = model
        self.policy = policy
        # The preprocessing's order, which is the attribution columns' order (the model card's
        # schema is canonical JSON, its keys sorted).
        self.features = [f.name for f in model.spec.features]
        policy.check_fields(set(self.features))
        self.kind = model.card.architecture.kind
        self.kernel = kernel(model.model, self.kind, feature_columns(model.spec))
        self.cutoffs = {s: policy.cutoffs_for(s) for s in get_args(Stance)}
        self.known_levels = {
            f.name: set(f.categories) for f in model.spec.features if hasattr(f, "categories")
        }
        self.adjust_rules = [r for r in policy.rules if r.action == "adjust"]
        self.other_rules = [r for r in policy.rules if r.action != "adjust"]

    def decide(
        self,
        applicants: list[dict[str, Any]],
        contexts: list[dict[str, Any]],
        stances: list[Stance | None],
    ) -> list[Decision]:
        x = self.model.spec.transform_rows(applicants)
        pds, contrib = self.kernel(x)
        scores = self.model.card.score_scale.score(pds)
        # Python floats from here on: iterating numpy arrays yields numpy scalars, slower in
        # every comparison and conversion the policy makes.
        rows = zip(applicants, contexts, stances, pds.tolist(), scores.tolist(), contrib.tolist(),
                   strict=True)  # fmt: skip
        return [self._one(*row) for row in rows]

    def _one(
        self,
        applicant: dict[str, Any],
        context: dict[str, Any],
        stance: Stance | None,
        pd_: float,
        score: int,
        contrib: list[float],
    ) -> Decision:
        policy = self.policy
        stance = stance or policy.stance
        values = {**applicant, **context}
        flags: list[Flag] = []
        not_evaluated: list[str] = []
        policy_score = score
        for rule in self.adjust_rules:  # first: they move what the cut-offs compare
            hit = _matches(rule, values, policy_score)
            if hit is None:
                not_evaluated.append(rule.code)
            elif hit:
                policy_score += rule.points
                flags.append(Flag(rule.code, rule.action, rule.reason, rule.points))
        policy_score = max(350, min(950, policy_score))
        for rule in self.other_rules:
            hit = _matches(rule, values, policy_score)
            if hit is None:
                not_evaluated.append(rule.code)
            elif hit:
                flags.append(Flag(rule.code, rule.action, rule.reason))
        cut = self.cutoffs[stance]
        actions = {f.action for f in flags}
        outcome: Outcome
        if "decline" in actions:
            outcome = "decline"
        elif "refer" in actions:
            outcome = "refer"
        elif policy_score >= cut.approve:
            outcome = "approve"
        elif policy_score < cut.decline:
            outcome = "decline"
        else:
            outcome = "refer"

        # The rule that decided comes first, then the model's factors (largest push toward
        # default first), then policy adjustments that moved the score.
        reasons = [Reason(f.code, f.text, "policy") for f in flags if f.action == outcome]
        ranked = sorted(
            [(c, name) for c, name in zip(contrib, self.features, strict=True) if c > 0],
            reverse=True,
        )
        for c, name in ranked[: policy.max_reasons]:
            text_for = policy.feature_reasons.get(name)
            value = applicant.get(name)
            text = (
                text_for.render(value)
                if text_for is not None
                else f"{name} = {value} raised the estimated risk"
            )
            reasons.append(Reason(f"F_{name.upper()}", text, "model", name, round(c, 4)))
        if outcome != "approve":
            reasons += [Reason(f.code, f.text, "policy") for f in flags if f.action == "adjust"]
        unknown: dict[str, str] = {}
        for name, levels in self.known_levels.items():
            value = applicant.get(name)
            if value is not None and (text := str(value)) not in levels:
                unknown[name] = text
        return Decision(
            decision=outcome,
            probability_of_default=pd_ if math.isfinite(pd_) else 1.0,
            score=score,
            policy_score=policy_score,
            stance=stance,
            reasons=reasons,
            flags=flags,
            not_evaluated=not_evaluated,
            unknown_values=unknown,
        )
