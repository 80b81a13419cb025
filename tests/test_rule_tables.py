"""A policy rule's reason says which way it pushed, the same for horizontal and vertical
models: a positive adjustment toward approval, anything else toward default (the vertical
decider once called every rule's reason toward default)."""

from __future__ import annotations

from jointcredit.service.decision import rule_tables
from jointcredit.service.policy import Rule
from jointcredit.service.reasons import TOWARD_APPROVAL, TOWARD_DEFAULT


def _rule(code: str, action: str, points: int = 0) -> Rule:
    when = {"x": {"ge": 1}}
    spec = {"code": code, "reason": code.lower(), "action": action, "points": points}
    return Rule.model_validate({**spec, "when": when})


def test_rule_reasons_point_the_way_each_rule_pushes() -> None:
    rules = [_rule("UP", "adjust", 20), _rule("DOWN", "adjust", -20), _rule("NO", "decline"),
             _rule("ASK", "refer")]  # fmt: skip
    flags, reasons = rule_tables(rules)
    for lang in ("en", "zh"):
        assert [r["direction"] for r in reasons[lang]] == [
            TOWARD_APPROVAL, TOWARD_DEFAULT, TOWARD_DEFAULT, TOWARD_DEFAULT]  # fmt: skip
        assert [f["points"] for f in flags[lang]] == [20, -20, 0, 0]
