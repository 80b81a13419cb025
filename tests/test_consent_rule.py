"""What a consent that does not allow the exposure query does to a decision (service/consent.py
`refuse_exposure`), per the policy's `[consent] action`: the exposure rule is named among the
unevaluated rules and a flag says why; `refer` refers an approval with that reason first, a
decline stays a decline; `none` leaves the decision as it was."""

from __future__ import annotations

import pytest

from jointcredit.service.consent import refuse_exposure
from jointcredit.service.decision import DecisionTable
from jointcredit.service.policy_texts import ConsentTexts


def _table(decision: str) -> DecisionTable:
    reason = {"code": "F_X", "text": "x", "kind": "model", "feature": "x",
              "direction": "toward_default"}  # fmt: skip
    return DecisionTable(
        decision=[decision], probability_of_default=[0.05], score=[700], policy_score=[700],
        stance=["normal"], reason_ids=[[0]], reason_table=[reason], features=["x"],
        contributions=[[0.1]], rules=[], flag_ids=[[]], not_evaluated_ids=[[]],
        unknown_values=[{}], out_of_range=[{}], max_reasons=4, language="zh",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("action", "decision", "after", "first_reason"),
    [("refer", "approve", "refer", "CONSENT_REQUIRED"), ("refer", "decline", "decline", "F_X"),
     ("none", "approve", "approve", "F_X")],
)  # fmt: skip
def test_a_refused_consent_names_the_rule_and_says_why(
    action: str, decision: str, after: str, first_reason: str
) -> None:
    texts = ConsentTexts(action=action)  # type: ignore[arg-type]
    table = _table(decision)
    kept = refuse_exposure(table, 0, "revoked", texts)
    assert kept == {"problem": "revoked", "rule": "JOINT_EXPOSURE"}
    assert table.decision == [after]
    assert table.rules_not_evaluated(0) == ["JOINT_EXPOSURE"]
    (flag,) = table.policy_flags(0)
    assert flag["code"] == "CONSENT_REQUIRED" and flag["text"] == texts.revoked.text_zh
    assert table.reasons(0)[0]["code"] == first_reason
