"""The joint credit limit: the rule, and what a missing exposure total does to a decision."""

from __future__ import annotations

import numpy as np
import pytest

from jointcredit.service.decision import DecisionTable
from jointcredit.service.joint import JointPolicy, JointRequest, apply_joint, joint_limit

REQUEST = JointRequest(
    applicant_id="x", annual_income=120000, monthly_debt_payments=1000,
    participating_lenders=["bank-a", "bank-b", "cf-c"],
)  # fmt: skip


def test_joint_limit_rule() -> None:
    policy = JointPolicy()
    out = joint_limit(REQUEST, pd=0.06, exposure_cents=2_000_000, declined=False, policy=policy)
    # 40 % of 10,000 a month minus 1,000 = 3,000 a month for 60 months at 9 %.
    assert out.capacity == pytest.approx(144_520.82, abs=1)
    assert out.total_limit == pytest.approx(out.capacity * 0.8, abs=0.01)
    assert out.available == pytest.approx(out.total_limit - 20_000, abs=0.01)
    assert set(out.allocations.values()) == {out.available // 3 // 100 * 100}
    declined = joint_limit(REQUEST, pd=0.06, exposure_cents=0, declined=True, policy=policy)
    assert declined.available == 0 and set(declined.allocations.values()) == {0.0}
    unknown = joint_limit(REQUEST, pd=0.06, exposure_cents=None, declined=False, policy=policy)
    assert unknown.existing_exposure is None and unknown.available == 0


def _table() -> DecisionTable:
    """Three applicants: approved, declined (by a rule), referred."""
    rules = [{"code": "NO", "action": "decline", "text": "no", "points": 0}]
    reason_table = [{"code": "NO", "text": "no", "kind": "policy", "feature": None},
                    {"code": "F_A", "text": "a high", "kind": "model", "feature": "a"}]  # fmt: skip
    shared: list[int] = []
    return DecisionTable(
        decision=["approve", "decline", "refer"], probability_of_default=[0.05, 0.2, 0.1],
        score=[700, 600, 660], policy_score=[700, 600, 660],
        stance=["normal"] * 3, reason_ids=[[1], [0, 1], [1]], reason_table=reason_table,
        features=["a"], contributions=np.array([[0.5], [0.5], [0.5]]), rules=rules,
        flag_ids=[shared, [0], shared], not_evaluated_ids=[shared, shared, shared],
        unknown_values=[{}, {}, {}], out_of_range=[{}, {}, {}],
    )  # fmt: skip


def test_without_an_exposure_total_the_application_is_referred() -> None:
    table = _table()
    rules, reason_table = table.rules, table.reason_table
    policy = JointPolicy()
    joints = [apply_joint(table, k, REQUEST, None, {"bank-b": "unreachable"}, policy)
              for k in range(3)]  # fmt: skip
    assert table.decision == ["refer", "decline", "refer"]  # a declined one stays declined
    for k in range(3):
        flag = table.policy_flags(k)[-1]
        assert flag["code"] == "EXPOSURE_UNAVAILABLE" and "bank-b: unreachable" in flag["text"]
        assert joints[k].existing_exposure is None and joints[k].available == 0
        assert set(joints[k].allocations.values()) == {0.0}
    assert [table.reasons(k)[0]["code"] for k in range(3)] == [
        "EXPOSURE_UNAVAILABLE", "NO", "EXPOSURE_UNAVAILABLE"
    ]  # fmt: skip
    assert table.reasons(0)[1]["contribution"] == 0.5  # the model reason keeps its value
    # The tables the decider shares between requests are copied, not changed.
    assert len(rules) == 1 and len(reason_table) == 2 and table.flag_ids[0] is not table.flag_ids[2]


def test_a_referral_for_exposure_keeps_the_reasons_within_the_policy() -> None:
    """The exposure reason goes first and the last reason makes room for it: a decision never
    carries more than the policy's `max_reasons`."""
    table = _table()
    table.max_reasons = 1
    apply_joint(table, 0, REQUEST, None, {"bank-b": "unreachable"}, JointPolicy())
    assert [r["code"] for r in table.reasons(0)] == ["EXPOSURE_UNAVAILABLE"]
    assert table.reasons(0)[0]["direction"] is None


def test_with_a_total_only_an_approved_application_gets_a_limit() -> None:
    table = _table()
    joints = [apply_joint(table, k, REQUEST, 2_000_000, {}, JointPolicy()) for k in range(3)]
    assert table.decision == ["approve", "decline", "refer"]
    assert joints[0].available > 0 and set(joints[0].allocations.values()) != {0.0}
    assert joints[1].available == 0 and joints[2].available == 0  # declined; not yet approved
    assert joints[2].total_limit > 0 and joints[2].existing_exposure == 20_000
    assert all(not table.policy_flags(k) or table.policy_flags(k)[-1]["code"] == "NO"
               for k in range(3))  # fmt: skip
