"""The policy's rules and the model's reasons each have one definition, applied to one
applicant in plain Python and to a batch in numpy (service/rules.py, service/reasons.py). For
random policies, applicants and contributions both forms give the same answers."""

from __future__ import annotations

import math
from dataclasses import astuple
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcredit.service.policy import Condition, Policy
from jointcredit.service.reasons import ModelReasons
from jointcredit.service.rules import Check, Column, Rules, Value

FEATURES = ["amount", "sector", "year"]
CONTEXT = {"lenders": "integer", "share": "number", "channel": "string"}

# Values of every kind a field can hold: numbers, text (also numeric text), booleans, absent.
texts = st.sampled_from(["a", "b", "5", "5.0", "2007", "None", "True", ""])
numbers = st.integers(-10, 2010) | st.floats(-10, 2010, allow_nan=False) | st.just(math.nan)
values = st.none() | st.booleans() | numbers | texts
operands = st.integers(-10, 2010) | st.floats(-10, 2010, allow_nan=False) | texts


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    ops: dict[str, Any] = {}
    for op in draw(st.sets(st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in"]),
                           min_size=1, max_size=3)):  # fmt: skip
        if op in ("eq", "ne"):
            ops[op] = draw(operands)
        elif op in ("in", "not_in"):
            ops[op] = draw(st.lists(operands, min_size=1, max_size=4))
        else:
            ops[op] = draw(st.floats(-10, 2010, allow_nan=False))
    return Condition.model_validate(ops)


@settings(max_examples=400, deadline=None)
@given(conditions(), st.lists(values, min_size=1, max_size=12))
def test_a_condition_reads_a_column_as_it_reads_a_value(cond: Condition, vals: list[Any]) -> None:
    test = Check(cond)
    assert test.holds(Column(vals)).tolist() == [bool(test.holds(Value(v))) for v in vals]
    numeric = [v for v in vals if v is None or type(v) in (int, float)]  # the fast path
    if numeric:
        assert test.holds(Column(numeric)).tolist() == [bool(test.holds(Value(v))) for v in numeric]


@st.composite
def rule_lists(draw: st.DrawFn, fields: list[str], most: int = 7) -> list[dict[str, Any]]:
    """Rules of every action over random subsets of `fields`, with random conditions."""
    rules = []
    for k in range(draw(st.integers(0, most))):
        action = draw(st.sampled_from(["adjust", "decline", "refer"]))
        names = draw(st.sets(st.sampled_from(fields), min_size=1, max_size=3))
        rules.append({
            "code": f"R{k}", "reason": f"rule {k}", "action": action,
            "when": {f: draw(conditions()).model_dump(by_alias=True, exclude_none=True)
                     for f in sorted(names)},
            "points": draw(st.integers(-80, 80).filter(bool)) if action == "adjust" else 0,
            "below_score": draw(st.none() | st.integers(350, 950)),
        })  # fmt: skip
    return rules


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    rules = draw(rule_lists([*FEATURES, *CONTEXT]))
    approve = draw(st.integers(350, 950))
    return Policy.model_validate({
        "version": "random", "stance": draw(st.sampled_from(["normal", "conservative"])),
        "cutoffs": {"approve": approve, "decline": draw(st.integers(350, approve))},
        "stances": {"conservative": {"shift": draw(st.integers(-200, 200))}},
        "context": {name: {"type": kind, "description": name} for name, kind in CONTEXT.items()},
        "rules": rules,
    })  # fmt: skip


def _field_value(draw: st.DrawFn, name: str) -> Any:
    if name in CONTEXT:  # a signal: often not sent
        kind = CONTEXT[name]
        sent = {"integer": st.integers(0, 10), "number": st.floats(0, 1), "string": texts}[kind]
        return draw(st.none() | sent)
    return draw(values)


Applicant = tuple[dict[str, Any], int, Any, bool]  # fields, score, stance, outside training


@st.composite
def applicants(draw: st.DrawFn) -> list[Applicant]:
    n = draw(st.integers(1, 25))
    stance = st.sampled_from([None, "normal", "conservative"])
    return [
        ({f: _field_value(draw, f) for f in [*FEATURES, *CONTEXT]}, draw(st.integers(350, 950)),
         draw(stance), draw(st.booleans()))
        for _ in range(n)
    ]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(policies(), applicants())
def test_one_applicant_and_a_batch_are_decided_alike(
    policy: Policy, batch: list[Applicant]
) -> None:
    rules = Rules(policy, FEATURES)
    n = len(batch)
    columns = {f: Column([a[f] for a, _, _, _ in batch]) for f in [*FEATURES, *CONTEXT]}
    outside = np.array([o for _, _, _, o in batch])
    many = rules.many(columns.__getitem__, np.array([s for _, s, _, _ in batch]),
                      [st_ for _, _, st_, _ in batch], outside)  # fmt: skip
    explained = rules.explain_many(many, n)
    for k, (applicant, score, stance, out) in enumerate(batch):
        fields = {f: Value(v) for f, v in applicant.items()}
        one = rules.one(fields.__getitem__, score, stance, out)
        assert one.outcome == many.outcome[k]
        assert one.policy_score == many.policy_score[k]
        assert one.stance == many.stance[k]
        assert [bool(h) for h in one.hits] == [bool(np.broadcast_to(h, n)[k]) for h in many.hits]
        alone = rules.explain_one(one)
        for got, want in zip(astuple(alone), astuple(explained), strict=True):
            assert got[0] == want[k], k
        if out:
            assert one.outcome == "refer"
        # Adjustments are reasons only when they pushed the way the decision went.
        up = one.outcome == "approve"
        assert all((rules.order[j].points > 0) == up for j in alone.tail[0])


@settings(max_examples=50, deadline=None)
@given(policies(), applicants())
def test_a_rule_on_a_field_nobody_has_is_never_evaluated(
    policy: Policy, batch: list[Applicant]
) -> None:
    """Under `absent_fields = "not_evaluated"` a rule on a field that is neither a model
    feature nor a context signal never fires and is listed as not evaluated; the others decide
    as they would without it. Under the default ("error") such a policy is refused."""
    extra = {"code": "ELSEWHERE", "reason": "a field of another model", "action": "decline",
             "when": {"elsewhere": {"ge": 0}}}  # fmt: skip
    data = policy.model_dump(by_alias=True, exclude_none=True)
    with pytest.raises(ValueError, match="ELSEWHERE: elsewhere is neither"):
        Rules(Policy.model_validate({**data, "rules": [*data["rules"], extra]}), FEATURES)
    lenient = Policy.model_validate(
        {**data, "rules": [*data["rules"], extra], "absent_fields": "not_evaluated"}
    )
    rules, plain = Rules(lenient, FEATURES), Rules(policy, FEATURES)
    assert rules.absent == {"ELSEWHERE": ["elsewhere"]} and "elsewhere" not in rules.fields
    skipped = [r.code for r in rules.order].index("ELSEWHERE")
    n = len(batch)
    columns = {f: Column([a[f] for a, _, _, _ in batch]) for f in [*FEATURES, *CONTEXT]}
    scores = np.array([s for _, s, _, _ in batch])
    stances = [st_ for _, _, st_, _ in batch]
    many, base = (
        rules.many(columns.__getitem__, scores, stances),
        plain.many(columns.__getitem__, scores, stances),
    )
    assert many.outcome == base.outcome
    explained = rules.explain_many(many, n)
    for k in range(n):
        assert skipped in explained.unevaluated[k] and skipped not in explained.flags[k]


@st.composite
def contributions(draw: st.DrawFn) -> np.ndarray:
    n, f = draw(st.integers(1, 20)), draw(st.integers(1, 6))
    # Few distinct values: ties between features are common, as are zeros and negatives.
    cells = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0, math.nan]) | st.floats(-3, 3)
    return np.array(draw(st.lists(st.lists(cells, min_size=f, max_size=f), min_size=n,
                                  max_size=n)), dtype=np.float64)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(contributions(), st.integers(1, 10), st.data())
def test_model_reasons_rank_alike(contrib: np.ndarray, max_reasons: int, data: Any) -> None:
    """Both forms give the same reasons: the features that pushed the asked direction, the
    largest push first, no more than the room left and the policy allow, each with its
    direction's text."""
    names = data.draw(st.permutations([f"f{j}" for j in range(contrib.shape[1])]))
    policy = Policy.model_validate(
        {"version": "r", "cutoffs": {"approve": 700, "decline": 600}, "max_reasons": max_reasons}
    )
    reasons = ModelReasons(names, policy)
    n = len(contrib)
    columns = {name: [data.draw(texts) for _ in range(n)] for name in names}
    ways = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    room = np.array(data.draw(st.lists(st.integers(-1, 10), min_size=n, max_size=n)))
    ids, table = reasons.many(columns, contrib, first_id=3, toward_default=ways, room=room)
    for k in range(n):
        own_ids, own_table = reasons.one(
            {n: columns[n][k] for n in names}, contrib[k].tolist(), first_id=3,
            toward_default=bool(ways[k]), room=int(room[k]),
        )  # fmt: skip
        assert [own_table[i - 3] for i in own_ids] == [table[i - 3] for i in ids[k]], k
        entries = [table[i - 3] for i in ids[k]]
        sign = 1 if ways[k] else -1
        shown = [sign * contrib[k][names.index(e["feature"])] for e in entries]
        assert all(c > 0 for c in shown) and shown == sorted(shown, reverse=True)
        pushed = int((sign * contrib[k] > 0).sum())
        assert len(shown) == max(0, min(max_reasons, int(room[k]), pushed))
        moved = "raised" if ways[k] else "lowered"
        assert all(e["text"].endswith(f"{moved} the estimated risk") for e in entries)
        assert {e["direction"] for e in entries} <= {"toward_default" if ways[k] else
                                                     "toward_approval"}  # fmt: skip
