"""The decider on a real signed scorecard: one applicant (`decide_one`, plain Python) and a
batch (`decide_columns`, numpy) give the same decisions, for random applicants (real loans,
perturbed: unseen and missing values, random context signals and stances) under random
policies over the model's features and context signals; and a stored columnar batch reads
back each decision as it was made."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import signed_artifact
from test_rules import rule_lists

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import ScoringModel, load_artifact
from jointcredit.service.chain import canonical
from jointcredit.service.decide import Decider
from jointcredit.service.decision import DecisionTable
from jointcredit.service.policy import DEFAULT_POLICY, Policy
from jointcredit.service.records import decision_ids, tables
from jointcredit.trust.store import load_store

CONTEXT = {
    "lenders": {"type": "integer", "description": "recent lenders"},
    "share": {"type": "number", "description": "online share"},
    "channel": {"type": "string", "description": "how the application came in"},
}
# Rule fields: model features of each kind (an imputed one among them) and the signals.
RULE_FIELDS = ["sector", "state", "urban_rural", "gross_approved", "employees",
               "business_age", "jobs_created", *CONTEXT]  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    root = tmp_path_factory.mktemp("decide")
    return load_artifact(signed_artifact(root), load_store(root / "trust.json"))


@pytest.fixture(scope="module")
def loans() -> list[dict[str, Any]]:
    x = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(400)
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in x.to_dict(orient="records")
    ]


def _policy(rules: list[dict[str, Any]], **extra: Any) -> Policy:
    base = tomllib.loads(DEFAULT_POLICY.read_text())
    return Policy.model_validate(
        {**base, "version": "test", "context": CONTEXT, "rules": rules, **extra}
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    return _policy(draw(rule_lists(RULE_FIELDS, 6)), max_reasons=draw(st.integers(1, 6)))


@st.composite
def applications(draw: st.DrawFn, loans: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        applicant = dict(draw(st.sampled_from(loans)))
        if draw(st.booleans()):
            applicant["sector"] = draw(st.sampled_from(["99", "61", "44", "zz"]))  # some unseen
        if draw(st.booleans()):
            applicant["business_age"] = None  # imputed
        if draw(st.booleans()):
            applicant["gross_approved"] = draw(st.floats(0, 5e6))
        context = {
            "lenders": draw(st.none() | st.integers(0, 12)),
            "share": draw(st.none() | st.floats(0, 1)),
            "channel": draw(st.none() | st.sampled_from(["branch", "online", "5"])),
        }
        out.append((applicant, context, draw(st.sampled_from([None, "normal", "conservative"]))))
    return out


def _render(table: DecisionTable, k: int) -> dict[str, Any]:
    return table.render(k, decision_id="d", reference=None, model={}, policy_version="p",
                        created_at="t")  # fmt: skip


def _batch(decider: Decider, apps: list[tuple[Any, Any, Any]]) -> DecisionTable:
    return decider.decide_columns(
        {f: [a[f] for a, _, _ in apps] for f in decider.features},
        {c: [ctx.get(c) for _, ctx, _ in apps] for c in decider.policy.context},
        [s for _, _, s in apps],
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_one_applicant_and_a_batch_decide_alike(
    model: ScoringModel, loans: list[dict[str, Any]], data: st.DataObject
) -> None:
    decider = Decider(model, data.draw(policies()))
    apps = data.draw(applications(loans))
    batch = _batch(decider, apps)
    for k, (applicant, context, stance) in enumerate(apps):
        assert _render(decider.decide_one(applicant, context, stance), 0) == _render(batch, k)


def test_the_default_policy_is_exercised_alike(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    """Every rule of the default policy fires and is skipped somewhere, every outcome occurs,
    unseen values and model reasons are given: equal decisions on these cover the policy."""
    base = tomllib.loads(DEFAULT_POLICY.read_text())
    decider = Decider(model, Policy.model_validate(base))
    rng = np.random.default_rng(11)
    apps = []
    for k, loan in enumerate(loans):
        applicant = {**loan, "sector": "99"} if k % 7 == 0 else loan
        context = {
            name: (int(rng.integers(0, 600)) if spec.type == "integer" else float(rng.random()))
            for name, spec in decider.policy.context.items() if rng.random() < 0.7
        }  # fmt: skip
        apps.append((applicant, context, [None, "conservative"][k % 2]))
    batch = _batch(decider, apps)
    ones = [_render(decider.decide_one(*app), 0) for app in apps]
    assert ones == [_render(batch, k) for k in range(len(apps))]
    assert {f["code"] for d in ones for f in d["policy_flags"]} == {
        r.code for r in decider.policy.rules
    }
    assert {c for d in ones for c in d["rules_not_evaluated"]} == {
        r.code for r in decider.policy.rules if set(r.when) & set(decider.policy.context)
    }
    assert {d["decision"] for d in ones} == {"approve", "decline", "refer"}
    assert any(d["unseen_values"] == {"sector": "99"} for d in ones)
    assert any(r["kind"] == "model" for d in ones for r in d["reasons"])
    assert any(d["policy_score"] != d["score"] for d in ones)


def test_adjustments_chain_in_order(model: ScoringModel, loans: list[dict[str, Any]]) -> None:
    """An adjustment that applies below a score sees the score the previous one left."""
    decider = Decider(model, _policy([
        {"code": "ADJ_DOWN", "reason": "down", "action": "adjust", "points": -60,
         "when": {"gross_approved": {"ge": 0}}},
        {"code": "ADJ_BELOW", "reason": "below", "action": "adjust", "points": 25,
         "below_score": 640, "when": {"gross_approved": {"ge": 0}}},
    ]))  # fmt: skip
    for applicant in loans[:200]:
        d = _render(decider.decide_one(applicant, {}, None), 0)
        down = d["score"] - 60
        expected = down + 25 if down < 640 else down
        assert d["policy_score"] == max(350, min(950, expected)), d
        assert ("ADJ_BELOW" in {f["code"] for f in d["policy_flags"]}) == (down < 640)


def test_one_applicant_takes_the_value_path(
    model: ScoringModel, loans: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single decision never pays numpy's per-column overhead."""
    decider = Decider(model, _policy([]))

    def fail(*_: Any) -> None:
        raise AssertionError("the column path was used for one applicant")

    monkeypatch.setattr(type(model.spec), "transform_columns", fail)
    monkeypatch.setattr(decider.rules, "many", fail)
    monkeypatch.setattr(decider.reasons, "many", fail)
    assert len(decider.decide_one(loans[0], {}, None)) == 1


def test_a_columnar_record_reads_back_each_decision(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    """A columnar batch's record, as stored (canonical JSON), reads back each applicant's
    decision as a single decision renders it; so does a record written before reasons, flags
    and unevaluated rules were ids (objects in full)."""
    decider = Decider(model, Policy.model_validate(tomllib.loads(DEFAULT_POLICY.read_text())))
    apps = [(a, {"online_activity_share": 0.1} if k % 3 == 0 else {}, None)
            for k, a in enumerate(loans[:120])]  # fmt: skip
    table = _batch(decider, apps)
    n = len(apps)
    out = table.columns(decision_ids("a" * 24, n), [None] * n)
    record = {"decisions": out, **tables(table), "model": {}, "policy_version": "p",
              "scored_at": "t"}  # fmt: skip
    stored = orjson.loads(canonical(record))
    old = {**stored, "decisions": {
        **{k: v for k, v in stored["decisions"].items()
           if k not in ("reason_ids", "contributions", "flag_ids", "not_evaluated_ids")},
        "reasons": [table.reasons(k) for k in range(n)],
        "policy_flags": [table.policy_flags(k) for k in range(n)],
        "rules_not_evaluated": [table.rules_not_evaluated(k) for k in range(n)],
    }}  # fmt: skip
    new_form, old_form = DecisionTable.from_record(stored), DecisionTable.from_record(old)
    for k, app in enumerate(apps):
        one = _render(decider.decide_one(*app), 0)
        assert _render(new_form, k) == one, k
        assert _render(old_form, k) == one, k
    assert {d for d in table.decision} >= {"refer", "decline"}


def test_a_rendered_decision_is_the_documented_schema(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    """`DecisionTable.render` (one applicant, with and without a joint limit) is `DecisionOut`
    field for field, and a batch's columns (with `?expand`'s extras) are `ColumnarDecisions`."""
    from jointcredit.service.joint import JointPolicy, JointRequest, apply_joint
    from jointcredit.service.schemas import ColumnarOut, DecisionOut, ModelInfo

    decider = Decider(model, Policy.model_validate(tomllib.loads(DEFAULT_POLICY.read_text())))
    info = ModelInfo(version="v" * 64, signing_key="k", kind="logreg", trained_round=2)
    model_json = info.model_dump(mode="json")
    request = JointRequest(
        applicant_id="TIN-1", annual_income=420000, monthly_debt_payments=6500,
        participating_lenders=["a", "b"],
    )  # fmt: skip
    for total in (None, 1_000_000):
        table = decider.decide_one(loans[1], {"online_activity_share": 0.9}, None)
        joint = apply_joint(table, 0, request, total, {"a": "unreachable"}, JointPolicy())
        for limit in (None, joint.model_dump(mode="json")):
            d = table.render(0, decision_id="d", reference="r", model=model_json,
                             policy_version="p", created_at="t", joint=limit)  # fmt: skip
            DecisionOut.model_validate(d, strict=True)
            assert list(d) == list(DecisionOut.model_fields)
    apps = [(a, {}, None) for a in loans[:30]]
    table = _batch(decider, apps)
    out = table.columns(decision_ids("b" * 24, 30), [None] * 30)
    out["reasons"] = [table.reasons(k) for k in range(30)]
    out["policy_flags"] = [table.policy_flags(k) for k in range(30)]
    out["rules_not_evaluated"] = [table.rules_not_evaluated(k) for k in range(30)]
    answer = orjson.loads(orjson.dumps(
        {"count": 30, "decisions": out, **tables(table), "model": model_json,
         "policy_version": "p", "created_at": "t"}, option=orjson.OPT_SERIALIZE_NUMPY,
    ))  # fmt: skip
    ColumnarOut.model_validate(answer, strict=True)
