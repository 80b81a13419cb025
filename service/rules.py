"""The policy's rules applied to applicants: one definition for one applicant and for a batch.

A field reaches the rules as a `Value` (one applicant's, plain Python) or a `Column` (a batch's,
numpy arrays). Both offer the forms a condition compares: whether the field was sent, the value
as a number, as text. Conditions, rules and the decision order are written once below, over
either form, with the operators Python scalars and numpy arrays share (`&`, `|`, comparisons,
`*`); what the two forms do differently (clipping the score, choosing the outcome) is the `ONE`
and `MANY` backends, and a batch shares the lists of rules fired between applicants with the
same pattern (`explain_many`). Two forms because numpy's per-call overhead would dominate one
applicant and Python's per-value loop a batch; property tests check that they decide alike
(tests/test_rules.py).

The order (docs/SERVICE.md): `adjust` rules move the policy score, each seeing the score the
previous ones left; it is clipped to 350-950; an applicant outside what the model was trained
on is referred; else any matching `decline` rule declines, else any matching `refer` rule
refers, else the stance's cut-offs decide. A rule whose context field the request did not
carry is not evaluated (and does not match); nor is one whose field the model does not have,
when the policy allows that (`absent_fields`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cached_property, reduce
from typing import Any, get_args

import numpy as np

from jointcredit.service.policy import Condition, Policy, Rule, Stance

Mask = Any  # bool for one applicant, a boolean array for a batch


class Value:
    """One applicant's field."""

    __slots__ = ("is_num", "is_text", "num", "present", "text")

    def __init__(self, value: object) -> None:
        self.present = value is not None
        self.is_num = isinstance(value, _NUMBERS) and not isinstance(value, bool)
        self.is_text = self.present and not self.is_num
        self.num = float(value) if self.is_num else math.nan  # type: ignore[arg-type]
        self.text = str(value)

    def text_in(self, texts: frozenset[str]) -> bool:
        return self.text in texts

    def text_not_in(self, texts: frozenset[str]) -> bool:
        return self.text not in texts


class Column:
    """A batch's field: as numbers (NaN where not a number), as text (built only when a
    condition compares text) and where sent."""

    def __init__(self, values: Sequence[object]) -> None:
        self.values = values
        self.present = np.array([v is not None for v in values], dtype=bool)
        if set(map(type, values)) <= _PLAIN_NUMBERS:  # the usual numeric column: one C pass
            self.is_num = self.present
            self.num = np.array(values, dtype=np.float64)  # None -> NaN
        else:
            numeric = [isinstance(v, _NUMBERS) and not isinstance(v, bool) for v in values]
            self.is_num = np.array(numeric, dtype=bool)
            self.num = np.array(
                [v if m else math.nan for v, m in zip(values, numeric, strict=True)],
                dtype=np.float64,
            )
        self.is_text = self.present & ~self.is_num

    @cached_property
    def text(self) -> np.ndarray:
        out = np.empty(len(self.values), dtype=object)
        out[:] = list(map(str, self.values))
        return out

    def text_in(self, texts: frozenset[str]) -> np.ndarray:
        return np.array([t in texts for t in self.text], dtype=bool)

    def text_not_in(self, texts: frozenset[str]) -> np.ndarray:
        return np.array([t not in texts for t in self.text], dtype=bool)


_PLAIN_NUMBERS = {int, float, type(None)}
_NUMBERS = (int, float)
Field = Value | Column


def _number(value: float | int | str) -> float:
    """A condition's value as a number; NaN (equal to nothing) when it is text, so a number is
    never compared with a text value."""
    try:
        return float(value)
    except ValueError:
        return math.nan


_BOUNDS = (("lt", operator.lt), ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge))


class Check:
    """A condition, compiled: numbers compare as numbers and anything else as its text; every
    operator given must hold; an absent value matches nothing."""

    def __init__(self, cond: Condition) -> None:
        self.eq = None if cond.eq is None else (_number(cond.eq), str(cond.eq))
        self.ne = None if cond.ne is None else (_number(cond.ne), str(cond.ne))
        self.bounds = [(op, b) for name, op in _BOUNDS if (b := getattr(cond, name)) is not None]
        self.within = None if cond.in_ is None else frozenset(map(str, cond.in_))
        self.outside = None if cond.not_in is None else frozenset(map(str, cond.not_in))

    def holds(self, v: Field) -> Mask:
        ok: Mask = v.present
        if self.eq is not None:
            num, text = self.eq
            ok = ok & ((v.is_num & (v.num == num)) | (v.is_text & (v.text == text)))
        if self.ne is not None:
            num, text = self.ne
            ok = ok & ((v.is_num & (v.num != num)) | (v.is_text & (v.text != text)))
        for op, bound in self.bounds:
            ok = ok & v.is_num & op(v.num, bound)
        if self.within is not None:
            ok = ok & v.text_in(self.within)
        if self.outside is not None:
            ok = ok & v.text_not_in(self.outside)
        return ok


@dataclass(frozen=True)
class _Rule:
    rule: Rule
    tests: tuple[tuple[str, Check], ...]
    context: tuple[str, ...]  # fields that are context signals: not sent -> not evaluated
    absent: bool  # names a field neither the model nor the context has: never evaluated


@dataclass
class Explained:
    """Per applicant, as ids into the rules' order: the rules that decided (`lead`, reasons
    before the model's), the adjustments that pushed the way the decision went (`tail`,
    reasons after the model's), every rule that fired (`flags`) and those not evaluated.
    Lists may be shared between applicants: read them, never change them."""

    lead: list[list[int]]
    tail: list[list[int]]
    flags: list[list[int]]
    unevaluated: list[list[int]]


@dataclass
class Verdict:
    """What the policy says: per rule (adjust rules first, then the others, each in policy
    order) whether it matched and whether it could be evaluated; the policy score, stance and
    outcome. Scalars for one applicant, arrays and lists for a batch."""

    hits: list[Mask]
    evaluable: list[Mask]
    policy_score: Any
    stance: Any
    outcome: Any


class _One:
    @staticmethod
    def clip(x: int, lo: int, hi: int) -> int:
        return max(lo, min(hi, x))

    @staticmethod
    def outcome(outside: bool, declined: bool, referred: bool, approve: bool, decline: bool) -> str:
        if outside:
            return "refer"
        if declined:
            return "decline"
        if referred:
            return "refer"
        return "approve" if approve else "decline" if decline else "refer"


class _Many:
    @staticmethod
    def clip(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
        out: np.ndarray = np.clip(x, lo, hi)
        return out

    @staticmethod
    def outcome(
        outside: Mask, declined: Mask, referred: Mask, approve: Mask, decline: Mask
    ) -> list[str]:
        choices = ["refer", "decline", "refer", "approve", "decline"]
        out: list[str] = np.select(
            [outside, declined, referred, approve, decline], choices, "refer"
        ).tolist()
        return out


def _codes(masks: list[Mask], n: int) -> list[int]:
    """Which of the masks hold, per row, as the bits of one integer."""
    if not masks:
        return [0] * n
    matrix = np.stack([np.broadcast_to(m, n) for m in masks], axis=1)
    out: list[int] = (matrix @ (1 << np.arange(len(masks), dtype=np.int64))).tolist()
    return out


ONE, MANY = _One(), _Many()
Backend = _One | _Many


class Rules:
    """A policy's rules compiled for a model's features."""

    def __init__(self, policy: Policy, features: Collection[str]) -> None:
        # Rule code -> the fields it names that neither the model nor the context has.
        self.absent = policy.check_fields(set(features))
        adjust = [r for r in policy.rules if r.action == "adjust"]
        # Flags and rule ids follow this order: adjustments first, then the others.
        self.order = [*adjust, *(r for r in policy.rules if r.action != "adjust")]
        self.n_adjust = len(adjust)
        self._rules = [
            _Rule(r, tuple((f, Check(c)) for f, c in r.when.items()),
                  tuple(f for f in r.when if f not in features), r.code in self.absent)
            for r in self.order
        ]  # fmt: skip
        # Every field an evaluated rule reads, each once.
        self.fields = list(
            dict.fromkeys(f for r in self._rules if not r.absent for f in r.rule.when)
        )
        self.stance = policy.stance
        cutoffs = {s: policy.cutoffs_for(s) for s in get_args(Stance)}
        self.cutoffs = {s: (c.approve, c.decline) for s, c in cutoffs.items()}
        self._declines = [j for j, r in enumerate(self.order) if r.action == "decline"]
        self._refers = [j for j, r in enumerate(self.order) if r.action == "refer"]

    def one(
        self, field: Callable[[str], Value], score: int, stance: Stance | None,
        outside: bool = False,
    ) -> Verdict:  # fmt: skip
        """`outside`: the applicant is outside what the model was trained on (referred)."""
        chosen = stance or self.stance
        return self._apply(ONE, field, score, chosen, self.cutoffs[chosen], outside)

    def many(
        self, field: Callable[[str], Column], scores: np.ndarray, stances: Sequence[Stance | None],
        outside: np.ndarray | None = None,
    ) -> Verdict:  # fmt: skip
        chosen = [s or self.stance for s in stances]
        approve = np.array([self.cutoffs[s][0] for s in chosen])
        decline = np.array([self.cutoffs[s][1] for s in chosen])
        score = np.asarray(scores, dtype=np.int64)
        return self._apply(
            MANY, field, score, chosen, (approve, decline), False if outside is None else outside
        )

    def _apply(
        self, xp: Backend, field: Callable[[str], Any], score: Any, stance: Any,
        cutoffs: tuple[Any, Any], outside: Mask,
    ) -> Verdict:  # fmt: skip
        hits: list[Mask] = []
        evaluable: list[Mask] = []
        policy_score = score
        for j, r in enumerate(self._rules):
            if j == self.n_adjust:  # the adjustments are done
                policy_score = xp.clip(policy_score, 350, 950)
            if r.absent:
                hits.append(False)
                evaluable.append(False)
                continue
            ok: Mask = True
            for f in r.context:
                ok = ok & field(f).present
            hit = ok
            if r.rule.below_score is not None:
                hit = hit & (policy_score < r.rule.below_score)
            for f, test in r.tests:
                hit = hit & test.holds(field(f))
            if j < self.n_adjust:
                policy_score = policy_score + hit * r.rule.points
            hits.append(hit)
            evaluable.append(ok)
        if len(self._rules) == self.n_adjust:
            policy_score = xp.clip(policy_score, 350, 950)
        declined = reduce(operator.or_, [hits[j] for j in self._declines], False)
        referred = reduce(operator.or_, [hits[j] for j in self._refers], False)
        approve_at, decline_below = cutoffs
        outcome = xp.outcome(
            outside, declined, referred, policy_score >= approve_at, policy_score < decline_below
        )
        return Verdict(hits, evaluable, policy_score, stance, outcome)

    def _around(self, fired: list[int], decision: str) -> tuple[list[int], list[int]]:
        """The rule reasons before the model's (the rules that decided) and after them (the
        adjustments that pushed the way the decision went: up for an approval, down else)."""
        order = self.order
        lead = [j for j in fired if order[j].action == decision]
        up = decision == "approve"
        tail = [j for j in fired if order[j].action == "adjust" and (order[j].points > 0) == up]
        return lead, tail

    def explain_one(self, verdict: Verdict) -> Explained:
        """`explain_many` for one applicant."""
        fired = [j for j, hit in enumerate(verdict.hits) if hit]
        lead, tail = self._around(fired, verdict.outcome)
        unevaluated = [j for j, ok in enumerate(verdict.evaluable) if not ok]
        return Explained([lead], [tail], [fired], [unevaluated])

    def explain_many(self, verdict: Verdict, n: int) -> Explained:
        """Per applicant: the rules that decided and the adjustments that pushed the decision's
        way (its policy reasons), the rules that fired and those not evaluated. A batch has few
        distinct patterns of rules fired, so each pattern's lists are built once and shared
        between applicants."""
        hit_code = _codes(verdict.hits, n)
        skip_code = _codes([np.logical_not(e) for e in verdict.evaluable], n)
        rules = range(len(self.order))
        fired_by: dict[int, list[int]] = {}
        around: dict[tuple[int, str], tuple[list[int], list[int]]] = {}
        skipped_by: dict[int, list[int]] = {}
        leads: list[list[int]] = []
        tails: list[list[int]] = []
        flags: list[list[int]] = []
        unevaluated: list[list[int]] = []
        for k in range(n):
            code, decision = hit_code[k], verdict.outcome[k]
            fired = fired_by.get(code)
            if fired is None:
                fired = fired_by[code] = [j for j in rules if code >> j & 1]
            lead_tail = around.get((code, decision))
            if lead_tail is None:
                lead_tail = around[code, decision] = self._around(fired, decision)
            leads.append(lead_tail[0])
            tails.append(lead_tail[1])
            flags.append(fired)
            skip = skip_code[k]
            unchecked = skipped_by.get(skip)
            if unchecked is None:
                unchecked = skipped_by[skip] = [j for j in rules if skip >> j & 1]
            unevaluated.append(unchecked)
        return Explained(leads, tails, flags, unevaluated)
