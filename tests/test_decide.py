"""The two ways through the policy give the same decisions: row by row (`_one`, a few
applicants) and column by column (`decide_columns`, batches). A policy with every operator,
chained adjustments with score limits, refer and decline rules, on real applicants with absent
context signals, imputed features, unseen categories and both stances."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import numpy as np
import orjson
import pytest
from service_helpers import signed_artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import load_artifact
from jointcredit.service.chain import canonical
from jointcredit.service.columns import decision_ids, output_columns, row_response
from jointcredit.service.decide import FEW_ROWS, Decider
from jointcredit.service.policy import DEFAULT_POLICY, Column, Condition, Policy
from jointcredit.trust.store import load_store

RULES = """
[context.lenders]
type = "integer"
description = "recent lenders"
[context.share]
type = "number"
description = "online share"
[context.channel]
type = "string"
description = "how the application came in"

[[rules]]
code = "ADJ_STATE"
reason = "state"
action = "adjust"
points = -40
when = { state = { in = ["CA", "TX", "FL", "NY"] } }

[[rules]]
code = "ADJ_SMALL"
reason = "small loan"
action = "adjust"
points = 25
below_score = 640
when = { gross_approved = { lt = 60000 }, sector = { not_in = ["44", "45"] } }

[[rules]]
code = "ADJ_LENDERS"
reason = "lenders"
action = "adjust"
points = -15
when = { lenders = { ge = 2, le = 5 } }

[[rules]]
code = "DECLINE_MANY"
reason = "many lenders"
action = "decline"
below_score = 700
when = { lenders = { gt = 5 } }

[[rules]]
code = "DECLINE_SECTOR"
reason = "sector"
action = "decline"
when = { sector = { eq = "61" } }

[[rules]]
code = "REFER_OFFLINE"
reason = "offline"
action = "refer"
when = { share = { lt = 0.25 }, channel = { ne = "branch" } }

[[rules]]
code = "REFER_YEAR"
reason = "year"
action = "refer"
when = { approval_year = { in = [2007, "2008"] }, employees = { eq = 1 } }

[[rules]]
code = "REFER_BRANCH"
reason = "branch"
action = "refer"
when = { channel = { eq = "branch" }, jobs_created = { ne = 0 } }
"""


@pytest.fixture(scope="module")
def decider(tmp_path_factory: pytest.TempPathFactory) -> Decider:
    root = tmp_path_factory.mktemp("decide")
    model = load_artifact(signed_artifact(root), load_store(root / "trust.json"))
    base = tomllib.loads(DEFAULT_POLICY.read_text())
    own = tomllib.loads(RULES)
    policy = Policy.model_validate(
        {**base, "version": "test", "context": own["context"], "rules": own["rules"]}
    )
    return Decider(model, policy)


def _applications(decider: Decider, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                     list[Any]]:  # fmt: skip
    rng = np.random.default_rng(11)
    x = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(n)
    rows = []
    for row in x.to_dict(orient="records"):
        rows.append({
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in row.items() if k in decider.features
        })  # fmt: skip
    for k, row in enumerate(rows):
        if k % 7 == 0:
            row["sector"] = "99"  # never seen in training
        if k % 11 == 0:
            row["sector"] = "61"
        if k % 5 == 0:
            row["employees"] = 1.0
        if k % 13 == 0:
            row["business_age"] = None  # imputed
    contexts = []
    for _ in rows:
        ctx: dict[str, Any] = {}
        if rng.random() < 0.7:
            ctx["lenders"] = int(rng.integers(0, 9))
        if rng.random() < 0.6:
            ctx["share"] = float(rng.random())
        if rng.random() < 0.5:
            ctx["channel"] = str(rng.choice(["branch", "online", "broker"]))
        contexts.append(ctx)
    stances = [[None, "normal", "conservative"][int(i)] for i in rng.integers(0, 3, len(rows))]
    return rows, contexts, stances


def test_rows_and_columns_decide_alike(decider: Decider) -> None:
    rows, contexts, stances = _applications(decider, 600)
    by_row = decider._by_row(rows, contexts, stances)
    by_column = decider.decide(rows, contexts, stances)  # > FEW_ROWS: the column path
    assert len(rows) > FEW_ROWS
    for k, (a, b) in enumerate(zip(by_row, by_column, strict=True)):
        assert a == b, k
    # The policy was exercised, not bypassed: every rule fired somewhere and was skipped
    # somewhere it needs a context signal, all outcomes occur, unseen values are reported.
    fired = {f.code for d in by_row for f in d.flags}
    assert fired == {r.code for r in decider.policy.rules}
    skipped = {c for d in by_row for c in d.not_evaluated}
    assert skipped == {"ADJ_LENDERS", "DECLINE_MANY", "REFER_OFFLINE", "REFER_BRANCH"}
    assert {d.decision for d in by_row} == {"approve", "decline", "refer"}
    assert any(d.unknown_values == {"sector": "99"} for d in by_row)
    assert any(r.kind == "model" for d in by_row for r in d.reasons)
    assert any(d.policy_score != d.score for d in by_row)


def test_adjustments_chain_in_order(decider: Decider) -> None:
    """ADJ_SMALL applies below 640 *after* ADJ_STATE moved the score: both paths agree on
    applicants the first adjustment pushes under the limit."""
    rows, contexts, stances = _applications(decider, 400)
    decisions = decider.decide(rows, contexts, stances)
    chained = [
        d for d in decisions
        if {"ADJ_STATE", "ADJ_SMALL"} <= {f.code for f in d.flags} and d.score >= 640
    ]  # fmt: skip
    assert chained, "no applicant where the first adjustment enabled the second"
    for d in chained:
        assert d.score - 40 < 640


@pytest.mark.parametrize(
    "cond",
    [{"eq": 5}, {"eq": "5"}, {"eq": "abc"}, {"ne": 5}, {"ne": "x"}, {"lt": 3}, {"ge": 2.5},
     {"gt": 1, "le": 10}, {"in": [5, "x", "5.0"]}, {"not_in": ["None", 5]}],
)  # fmt: skip
def test_a_condition_reads_a_column_as_it_reads_a_value(cond: dict[str, Any]) -> None:
    c = Condition.model_validate(cond)
    mixed: list[object] = [5, 5.0, "5", "x", None, True, 2, 2.5, 11, "abc", 0, -1.5]
    numbers: list[object] = [5, 5.0, None, 2, 2.5, 11, 0, -1.5]  # the all-numeric fast path
    for values in (mixed, numbers):
        assert c.holds_column(Column(values)).tolist() == [c.holds(v) for v in values]


def test_a_single_row_takes_the_row_path(decider: Decider, monkeypatch: Any) -> None:
    rows, contexts, stances = _applications(decider, 3)

    def fail(*_: Any) -> None:
        raise AssertionError("column path used for a few rows")

    monkeypatch.setattr(decider, "decide_columns", fail)
    assert len(decider.decide(rows, contexts, stances)) == 3


def test_a_columnar_record_reads_back_each_decision(decider: Decider) -> None:
    """`row_response` on a batch record as stored (JSON) gives each applicant's decision as
    the row path gives it; a record written before reasons were ids (objects in full) reads
    back the same."""
    rows, contexts, stances = _applications(decider, 120)
    table = decider.decide_columns(
        {f: [r[f] for r in rows] for f in decider.features},
        {c: [ctx.get(c) for ctx in contexts] for c in decider.policy.context},
        stances,
    )
    out = output_columns(decision_ids("a" * 24, len(rows)), table, [None] * len(rows))
    record = {"decisions": out, "rules": table.rules, "reason_table": table.reason_table,
              "contribution_features": table.features, "model": {}, "policy_version": "p",
              "scored_at": "t"}  # fmt: skip
    stored = orjson.loads(canonical(record))
    old = {**stored, "decisions": {
        **{k: v for k, v in stored["decisions"].items()
           if k not in ("reason_ids", "contributions", "flag_ids", "not_evaluated_ids")},
        "reasons": [table.reasons(k) for k in range(len(rows))],
        "policy_flags": [table.policy_flags(k) for k in range(len(rows))],
        "rules_not_evaluated": [table.rules_not_evaluated(k) for k in range(len(rows))],
    }}  # fmt: skip
    by_row = decider._by_row(rows, contexts, stances)
    for k, d in enumerate(by_row):
        got = row_response(stored, k)
        assert got == row_response(old, k), k
        assert got["reasons"] == [
            {"code": r.code, "text": r.text, "kind": r.kind, "feature": r.feature,
             "contribution": r.contribution} for r in d.reasons
        ], k  # fmt: skip
        assert got["policy_flags"] == [
            {"code": f.code, "action": f.action, "text": f.text, "points": f.points}
            for f in d.flags
        ], k
        assert got["rules_not_evaluated"] == d.not_evaluated, k
        assert (got["decision"], got["score"]) == (d.decision, d.score), k
