"""Every decline and every model-driven referral carries its principal reasons, also when no
feature pushed the applicant toward default (the reasons are pushes against the portfolio
average, and under a cut-off above the average applicant's score an applicant better than
average on every feature is still declined): the profile's own risk first, then the features
that lowered the risk least, each with its toward-approval text, in English and Chinese, on
the single and the batch path, for trees and for the logistic scorecard."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import pytest
from service_helpers import signed_artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import ScoringModel, load_artifact
from jointcredit.service.applicants import typical
from jointcredit.service.decide import Decider
from jointcredit.service.languages import GENERIC_REASON, PROFILE_REASON, PROFILE_REASON_CODE
from jointcredit.service.policy import DEFAULT_POLICY, Policy
from jointcredit.trust.store import load_store


@pytest.fixture(scope="module", params=["gbdt", "logreg"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp(f"unreasoned-{request.param}")
    return load_artifact(signed_artifact(root, kind=request.param), load_store(root / "trust.json"))


def _policy(approve: int, decline: int) -> Policy:
    """The shipped policy without its rules (the cut-offs decide) and with these cut-offs."""
    return Policy.model_validate({**tomllib.loads(DEFAULT_POLICY.read_text()), "rules": [],
                                  "cutoffs": {"approve": approve, "decline": decline}})  # fmt: skip


def _better_than_average(model: ScoringModel, decider: Decider) -> dict[str, Any]:
    """An applicant no feature of which pushes toward default. Trees: the portfolio-average
    applicant itself (their reference: every push is 0). The logistic scorecard's pushes are
    one per feature: each feature takes the value, among real loans', whose push is the
    largest at or below 0 (an applicant a little better than average, not the best)."""
    applicant = typical(model.spec, model.card.data_schema.features)
    if model.bins is not None:
        return applicant
    loans = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(400)
    for name in decider.features:
        j = decider.features.index(name)
        candidates = {v for v in loans[name] if not (isinstance(v, float) and math.isnan(v))}

        def push(value: object, name: str = name, j: int = j) -> float:
            _, contrib = decider.kernel(model.inputs_record({**applicant, name: value}))
            return float(contrib[0][j])

        pushes = {v: push(v) for v in sorted(candidates, key=str)}
        applicant[name] = max((v for v in pushes if pushes[v] <= 0), key=pushes.__getitem__)
    return applicant


@pytest.mark.parametrize("outcome", ["decline", "refer"])
def test_a_decline_or_referral_with_no_push_toward_default_still_says_why(
    model: ScoringModel, outcome: str
) -> None:
    probe = Decider(model, _policy(950, 350))
    applicant = _better_than_average(model, probe)
    _, contrib = probe.kernel(model.inputs_record(applicant))
    assert max(contrib[0]) <= 0  # nothing pushes toward default
    average = typical(model.spec, model.card.data_schema.features)
    score = probe.decide_one(applicant, {}, None).score[0]
    assert score >= probe.decide_one(average, {}, None).score[0]
    # Cut-offs above this applicant's score (so above the portfolio average's too).
    cut = (score + 1, score + 1) if outcome == "decline" else (score + 10, score - 10)
    decider = Decider(model, _policy(*cut))
    helped = sorted((c, f) for c, f in zip(contrib[0], decider.features, strict=True) if c < 0)
    for lang in ("en", "zh"):
        one = decider.decide_one(applicant, {}, None, lang)
        batch = decider.decide([average, applicant], [{}, {}], [None, None], lang)
        assert one.decision == [outcome] and batch.decision[1] == outcome
        reasons = one.reasons(0)
        assert reasons == batch.reasons(1)
        assert 1 <= len(reasons) <= decider.max_reasons
        first, *least = reasons
        assert first["code"] == PROFILE_REASON_CODE and first["direction"] == "toward_default"
        assert first["text"] == PROFILE_REASON[lang][1 if least else 0]
        # The features that lowered the risk least, least first; each says it lowered it.
        want = [f for _, f in sorted(helped, reverse=True)][: decider.max_reasons - 1]
        assert [r["feature"] for r in least] == want
        for r in least:
            assert r["kind"] == "model" and r["direction"] == "toward_approval"
            assert r["contribution"] is not None and r["contribution"] <= 0
            assert r["text"] == decider.reasons.text(r["feature"], applicant[r["feature"]],
                                                     False, lang)  # fmt: skip
            assert GENERIC_REASON[lang][0].split("{value}")[-1] not in r["text"]
        # Told again in the other language, from codes, features and directions alone.
        other = "zh" if lang == "en" else "en"
        retold = decider.retell(reasons, applicant, other)
        again = decider.decide_one(applicant, {}, None, other).reasons(0)
        assert [r["text"] for r in retold] == [r["text"] for r in again]
    if model.bins is not None:
        assert not least  # trees: the average applicant pushed nothing either way


def test_an_approval_or_a_decline_with_pushes_toward_default_is_unchanged(
    model: ScoringModel,
) -> None:
    """The fallback is only for what had no reason: an approval keeps its own reasons, and a
    decline with pushes toward default is explained by them."""
    loans = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(50)
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in loans.to_dict(orient="records")]  # fmt: skip
    approving, declining = Decider(model, _policy(350, 350)), Decider(model, _policy(950, 950))
    for applicant in rows:
        _, contrib = approving.kernel(model.inputs_record(applicant))
        for decider in (approving, declining):
            reasons = decider.decide_one(applicant, {}, None).reasons(0)
            assert all(r["code"] != PROFILE_REASON_CODE for r in reasons) == (
                decider is approving or max(contrib[0]) > 0
            )


def test_the_policy_words_the_profile_reason(model: ScoringModel) -> None:
    """A lender's own wording (and code) of the profile reason, in both languages, on the
    single and batch paths and when told again; English alone is reported as untranslated."""
    own = {"code": "LENDER_PROFILE", "text": "Profile above our risk appetite",
           "followed_text": "Profile above our risk appetite; details that helped least:",
           "text_zh": "资料整体风险超出本行偏好",
           "followed_text_zh": "资料整体风险超出本行偏好；帮助最小的资料："}  # fmt: skip
    probe = Decider(model, _policy(950, 350))
    applicant = _better_than_average(model, probe)
    base = {**tomllib.loads(DEFAULT_POLICY.read_text()), "rules": [], "profile_risk": own,
            "cutoffs": {"approve": 950, "decline": 950}}  # fmt: skip
    decider = Decider(model, Policy.model_validate(base))
    for lang, suffix in (("en", ""), ("zh", "_zh")):
        first, *least = decider.decide_one(applicant, {}, None, lang).reasons(0)
        assert first["code"] == "LENDER_PROFILE"
        assert first["text"] == own[("followed_text" if least else "text") + suffix]
        batch = decider.decide([applicant], [{}], [None], lang).reasons(0)
        assert batch[0] == first
        other = "zh" if lang == "en" else "en"
        assert (
            decider.retell([first, *least], applicant, other)[0]["text"]
            == own[("followed_text" if least else "text") + ("_zh" if other == "zh" else "")]
        )
    english_only = Policy.model_validate(
        {**base, "profile_risk": {"text": "Profile above our risk appetite"}}
    )
    assert "profile_risk.text_zh" in english_only.missing_chinese()
    assert "profile_risk.followed_text_zh" not in english_only.missing_chinese()
