"""What a decision's reasons say, on real signed models (a logistic scorecard and an MLP on the
shipped sample): never more than the policy's `max_reasons`; each text agrees with the way its
feature pushed (toward default: why it raises the risk; toward approval: why it lowers it); an
approved applicant's reasons are the ones toward approval; and an applicant outside what the
model was trained on is referred, saying so, on the single and the batch path alike."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import signed_artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import ScoringModel, load_artifact
from jointcredit.models.preprocessing import NumericFeature
from jointcredit.service.applicants import typical
from jointcredit.service.coverage import numeric_span
from jointcredit.service.decide import Decider
from jointcredit.service.decision import DecisionTable
from jointcredit.service.languages import PROFILE_REASON_CODE
from jointcredit.service.policy import DEFAULT_POLICY, Policy, show_value
from jointcredit.trust.store import load_store

RAISES, LOWERS = "more risk than average", "less risk than average"


@pytest.fixture(scope="module", params=["logreg", "mlp"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp(f"reasons-{request.param}")
    return load_artifact(signed_artifact(root, kind=request.param), load_store(root / "trust.json"))


@pytest.fixture(scope="module")
def loans() -> list[dict[str, Any]]:
    x = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(300)
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in x.to_dict(orient="records")
    ]


def _default(**changes: Any) -> Policy:
    return Policy.model_validate({**tomllib.loads(DEFAULT_POLICY.read_text()), **changes})


def _rendered(table: DecisionTable, k: int) -> dict[str, Any]:
    return table.render(k, decision_id="d", reference=None, model={}, policy_version="p",
                        created_at="t")  # fmt: skip


def _both(decider: Decider, apps: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    """Each applicant decided alone, then all in one batch: the single decisions followed by
    the batch's. The scorecard decides both alike to the last digit (else fail); the MLP's
    batched arithmetic may differ in the last bits, so both forms are returned to check."""
    batch = decider.decide_columns(
        {f: [a[f] for a, _ in apps] for f in decider.features},
        {c: [ctx.get(c) for _, ctx in apps] for c in decider.policy.context},
        [None] * len(apps),
    )
    ones = [_rendered(decider.decide_one(a, ctx, None), 0) for a, ctx in apps]
    many = [_rendered(batch, k) for k in range(len(apps))]
    if decider.model.card.architecture.kind == "logreg":
        assert ones == many
    return ones + many


CONTEXT = st.fixed_dictionaries({}, optional={
    "recent_lenders_90d": st.integers(0, 8), "transactions_30d": st.integers(0, 900),
    "median_transaction_amount": st.floats(0, 500), "online_activity_share": st.floats(0, 1),
})  # fmt: skip


@st.composite
def applications(draw: st.DrawFn, loans: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Real loans with some values redrawn (amounts, sizes, categories, missing ones) and
    random context signals: every rule and outcome, reasons in both directions."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        applicant = dict(draw(st.sampled_from(loans)))
        for name in draw(st.sets(st.sampled_from(["gross_approved", "employees", "sba_share"]))):
            applicant[name] = draw(st.floats(0, 1) if name == "sba_share" else st.floats(0, 3e5))
        if draw(st.booleans()):
            applicant["business_age"] = draw(st.sampled_from(["new", "existing", None]))
        if draw(st.booleans()):
            applicant["sector"] = draw(st.sampled_from(["23", "44", "52", "61", "72", None]))
        out.append((applicant, draw(CONTEXT)))
    return out


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_reasons_agree_with_their_direction_and_the_decision(
    model: ScoringModel, loans: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Every model reason: its direction is its contribution's sign, its text the policy's text
    for that direction (saying the value raises the risk, or lowers it, never the other);
    an approved applicant's reasons are all toward approval, anyone else's toward default; no
    decision carries more than `max_reasons`; single and batch decide alike."""
    policy = _default(max_reasons=data.draw(st.integers(1, 6)))
    decider = Decider(model, policy)
    apps = data.draw(applications(loans))
    for (applicant, _), d in zip(apps * 2, _both(decider, apps), strict=True):
        reasons = d["reasons"]
        assert len(reasons) <= policy.max_reasons, reasons
        want = "toward_approval" if d["decision"] == "approve" else "toward_default"
        if d["decision"] != "approve":
            assert reasons, d  # every decline and referral says why
            if reasons[0]["code"] == PROFILE_REASON_CODE:
                # Nothing pushed toward default: the profile's risk, then what helped least.
                want = "toward_approval"
        for r in reasons:
            if r["kind"] != "model":
                continue
            raised = r["direction"] == "toward_default"
            # Shown rounded to 4 decimals: a push too small to show may read 0.
            assert r["contribution"] >= 0 if raised else r["contribution"] <= 0, r
            assert r["direction"] == want, (d["decision"], r)
            text = policy.feature_reasons[r["feature"]]
            assert r["text"] == text.render(applicant[r["feature"]], toward_default=raised)
            assert (RAISES in r["text"]) == raised and (LOWERS in r["text"]) != raised, r
        if d["decision"] == "approve" and reasons:
            assert reasons[0]["direction"] != "toward_default", reasons


def test_every_shipped_reason_text_says_which_way_and_of_the_value_itself() -> None:
    """The default policy has both texts for every feature it names; each is about the
    applicant's own value (it shows `{value}`) and says the direction it is given for, and
    nothing of the other (no "newer businesses default more often" given to an existing
    business)."""
    policy = _default()
    assert policy.feature_reasons
    for name, reason in policy.feature_reasons.items():
        assert reason.approval_text is not None, name
        for text, says, never in ((reason.text, RAISES, LOWERS),
                                  (reason.approval_text, LOWERS, RAISES)):  # fmt: skip
            assert "{value}" in text and says in text and never not in text, (name, text)
    age = policy.feature_reasons["business_age"]
    assert age.render("existing") == (
        "Business age (existing business): businesses of this age carry more risk than average"
    )
    assert age.render("new", toward_default=False) == (
        "Business age (new business, under 2 years): businesses of this age carry less risk "
        "than average"
    )


def test_at_most_max_reasons_whatever_fires(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    """A referral by a rule, a downward adjustment and four model reasons made five or six
    reasons under a policy of four: the rule that decided comes first, then the model's, and
    the list stops at four."""
    decider = Decider(model, _default())
    apps = [({**a, "state": "FL"}, {"online_activity_share": 0.1}) for a in loans[:80]]
    decided = _both(decider, apps)
    assert all(len(d["reasons"]) <= 4 for d in decided)
    referred = [d for d in decided if d["decision"] == "refer"]
    assert referred and all(d["reasons"][0]["code"] == "THIN_FILE_OFFLINE" for d in referred
                            if not d["unseen_values"] and not d["out_of_range"])  # fmt: skip
    assert any(len(d["reasons"]) == 4 for d in referred)
    assert all({f["code"] for f in d["policy_flags"]} >= {"THIN_FILE_OFFLINE", "REGION_HIGH_LOSS"}
               for d in referred)  # fmt: skip


def test_an_approved_applicant_gets_the_reasons_it_was_approved_for(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    decider = Decider(model, _default())
    decided = _both(decider, [(a, {}) for a in loans[:80]])
    approved = [d for d in decided if d["decision"] == "approve"]
    assert approved
    for d in approved:
        assert d["reasons"] and all(r["direction"] == "toward_approval" for r in d["reasons"])
        assert all(r["contribution"] <= 0 for r in d["reasons"])
    declined = [d for d in decided if d["decision"] == "decline"]
    assert declined and all(r["direction"] == "toward_default"
                            for d in declined for r in d["reasons"])  # fmt: skip


def _approvable(decider: Decider, loans: list[dict[str, Any]]) -> dict[str, Any]:
    """A loan the default policy approves as it is."""
    for loan in loans:
        if decider.decide_one(loan, {}, None).decision[0] == "approve":
            return loan
    raise AssertionError("no loan is approved")


def test_values_outside_the_training_data_are_referred_saying_so(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    """A sector code, a state the federation never reported and an amount beyond what
    the preprocessing represents each refer an applicant the model would approve, with one
    reason per such value first; the rest of the decision stays (score, other reasons)."""
    decider = Decider(model, _default())
    loan = _approvable(decider, loans)
    _, hi = decider.coverage.spans["gross_approved"]
    cases = {
        "sector": ({"sector": "99-unknown"}, "unseen_values", "99-unknown"),
        "state": ({"state": "ZZ"}, "unseen_values", "ZZ"),
        "gross_approved": ({"gross_approved": hi * 1.5}, "out_of_range", show_value(hi * 1.5)),
    }
    apps = [({**loan, **change}, {}) for change, _, _ in cases.values()]
    apps.append(({**loan, "state": "ZZ", "gross_approved": hi * 1.5}, {}))
    apps.append((loan, {}))
    both_ways = _both(decider, apps)
    decided = both_ways[: len(apps)]
    assert [d["decision"] for d in decided] == [d["decision"] for d in both_ways[len(apps) :]]
    for d, (name, (_, where, shown)) in zip(decided, cases.items(), strict=False):
        assert d["decision"] == "refer" and d["status"] == "under_review", d
        first = d["reasons"][0]
        assert first["code"] == "OUTSIDE_TRAINING_DATA" and first["feature"] == name, first
        assert first["kind"] == "policy" and first["direction"] is None
        # The text names the level the model read an unseen category as, never the raw value.
        named = '(the model reads it as "other")' if where == "unseen_values" else f"{shown} "
        assert d[where] == {name: shown} and f"{name} value " in first["text"]
        assert named in first["text"] and (where != "unseen_values" or shown not in first["text"])
        assert "a loan officer will review" in first["text"]
        assert len(d["reasons"]) <= 4
    assert "did not occur in the lenders' training data" in decided[0]["reasons"][0]["text"]
    assert "outside the range of values the model was built on" in decided[2]["reasons"][0]["text"]
    both = decided[3]
    assert [r["feature"] for r in both["reasons"][:2]] == ["gross_approved", "state"]
    assert both["unseen_values"] == {"state": "ZZ"} and set(both["out_of_range"]) == {
        "gross_approved"
    }
    assert decided[4]["decision"] == "approve" and not decided[4]["out_of_range"]


def test_the_training_span_is_where_the_preprocessing_stops_telling_values_apart(
    model: ScoringModel,
) -> None:
    """The artifact records no minimum or maximum: a numeric feature's span is where its
    standardised value reaches the preprocessing's clip. Just inside, the model still sees a
    different value; just outside, it sees the clip's edge, like any value further out."""
    spec, schema = model.spec, model.card.data_schema.features
    numeric = [f for f in spec.features if isinstance(f, NumericFeature)]
    for f in numeric:
        lo, hi = numeric_span(f, spec.clip)
        column = spec.output_names.index(f.name)
        for edge, step in ((hi, 1.0), (lo, -1.0)):
            nudge = abs(edge) * 1e-6 + 1e-6
            base = typical(spec, schema)
            inside = spec.transform_record({**base, f.name: edge - step * nudge})[column]
            outside = spec.transform_record({**base, f.name: edge + step * nudge})[column]
            far = spec.transform_record({**base, f.name: edge + step * 10 * (abs(edge) + 1)})
            assert abs(inside) < spec.clip and abs(outside) == spec.clip, f.name
            assert far[column] == outside, f.name
        bounded = numeric_span(f, spec.clip, schema[f.name])
        if schema[f.name].min is not None:
            assert bounded[0] >= schema[f.name].min


def test_a_batch_shares_reasons_of_both_directions(
    model: ScoringModel, loans: list[dict[str, Any]]
) -> None:
    """A batch where different applicants go different ways shares one reason table whose
    entries keep their direction."""
    decider = Decider(model, _default())
    apps = [(a, {}) for a in loans[:120]]
    table = decider.decide_columns(
        {f: [a[f] for a, _ in apps] for f in decider.features},
        {c: [None] * len(apps) for c in decider.policy.context}, [None] * len(apps),
    )  # fmt: skip
    directions = {e["direction"] for e in table.reason_table if e["kind"] == "model"}
    assert directions == {"toward_default", "toward_approval"}
    assert np.all([len(ids) <= 4 for ids in table.reason_ids])


def test_a_special_code_is_never_out_of_range() -> None:
    """Where the agreed preprocessing declares special codes of a numeric feature (e.g. 96 =
    "unknown"), those codes are encoded on their own: a code is not a number beyond the span;
    any other value beyond it is, on both paths."""
    from types import SimpleNamespace

    from jointcredit.service.coverage import Coverage
    from jointcredit.service.policy import OutsideTraining

    class Coded(NumericFeature):
        special: tuple[float, ...] = ()

    feature = Coded(name="delinquencies", mean=1.0, std=1.0, special=(96.0, 98.0))
    spec: Any = SimpleNamespace(features=[feature], clip=5.0)
    coverage = Coverage(spec, {}, OutsideTraining())
    assert coverage.spans["delinquencies"] == (-4.0, 6.0)
    values = [96, 98.0, 97, 5, None]
    unseen, beyond = coverage.many({"delinquencies": values}, len(values))
    assert [bool(b) for b in beyond] == [False, False, True, False, False]
    assert [coverage.one({"delinquencies": v})[1] for v in values] == beyond
    assert not any(unseen)
