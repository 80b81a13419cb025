"""Notices, the right to a human, and policies in two languages, over HTTP (issue 21).

`GET /v1/decisions/{id}/notice`: a declined or referred applicant's notice (at most four
principal reasons, the rules that decided first, the score and its band, what the applicant can
do, the review's status and history) in the language `?lang=` or Accept-Language picks, told
again from the audit log whatever language the decision was made in; 409 for an approval
nobody is to review, 404 for another institution's decision. `human_review_requested`: scored
as usual but under review, in the queue, closed by the reviewer; for single, batch and
columnar requests alike. A policy file with a text lacking its Chinese twin is refused at load,
and `serve` exits 2 naming it."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import Api, audit_verify, signed_artifact
from typer.testing import CliRunner

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service
from jointcredit.service.policy import PolicyError, load_policy

pytestmark = pytest.mark.integration

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("notices")
    signed_artifact(root)
    return root


@pytest.fixture(scope="module")
def apis(root: Path) -> Iterator[tuple[Api, Api]]:
    """The service as bank-a and as bank-b."""
    a = new_key(root / "keys.json", "bank-a")
    b = new_key(root / "keys.json", "bank-b")
    service = load_service(
        root / "model", root / "trust.json", api_keys=root / "keys.json",
        db_url=f"sqlite:///{root / 'audit.sqlite'}",
    )  # fmt: skip
    with TestClient(create_app(service)) as client:
        yield Api(client, a, service), Api(client, b, service)


@pytest.fixture
def api(apis: tuple[Api, Api]) -> Api:
    return apis[0]


def _notice(api: Api, decision_id: str, lang: str | None = None, **headers: str) -> Any:
    query = "" if lang is None else f"?lang={lang}"
    return api.client.get(
        f"/v1/decisions/{decision_id}/notice{query}", headers={**api.headers, **headers}
    )


def _approved(api: Api) -> dict[str, Any]:
    """An applicant the model and policy approve (a few variations of the example)."""
    ex = api.example
    for values in itertools.product(["yes", "no"], ["rural", "urban"], ["new", "existing"],
                                    ["yes", "no"], ["yes", "no"]):  # fmt: skip
        changed = dict(zip(["revolving_line", "urban_rural", "business_age", "low_doc",
                            "franchise"], values, strict=True))  # fmt: skip
        body = {**ex, "applicant": {**ex["applicant"], **changed}}
        if api.post("/v1/decisions", body).json()["decision"] == "approve":
            return body
    raise AssertionError("no variation of the example is approved")


def test_a_declined_applicants_notice_gives_the_deciding_rule_first_and_what_to_do(
    api: Api,
) -> None:
    body = {**api.example, "context": {"recent_lenders_90d": 6}}
    d = api.post("/v1/decisions", body).json()
    assert d["decision"] == "decline"
    r = _notice(api, d["decision_id"])
    assert r.status_code == 200, r.text
    n = r.json()
    assert n["language"] == "en" and n["decision"] == "decline"
    assert n["decided_by"] == ["MANY_RECENT_LENDERS"]
    reasons = n["principal_reasons"]
    assert 1 <= len(reasons) <= 4
    assert reasons[0] | {"rank": 1} == reasons[0]
    assert reasons[0]["code"] == "MANY_RECENT_LENDERS" and reasons[0]["rule"] == reasons[0]["code"]
    assert reasons[0]["decided"] and reasons[0]["text"] == d["reasons"][0]["text"]
    model = [x["contribution"] for x in reasons if x["kind"] == "model"]
    assert model == sorted(model, reverse=True) and all(c > 0 for c in model)
    score = n["score"]
    assert score["score"] == d["score"]
    assert score["band_min"] <= d["score"] <= score["band_max"]
    assert f"Your score is {d['score']}." in score["text"]
    assert {o["action"] for o in n["options"]} == {"manual_review", "correct_data"}
    assert all(d["decision_id"] in o["text"] for o in n["options"])
    assert n["human_review"] is None
    review = n["review"]
    assert review["status"] == "decided" and review["final_decision"] == "decline"
    assert not review["reviewed"] and not review["requested_by_applicant"]
    assert [h["stage"] for h in review["history"]] == ["received", "scored", "decided"]


def test_a_notice_comes_in_the_language_asked_whatever_the_decision_was_made_in(
    api: Api,
) -> None:
    body = {**api.example, "context": {"online_activity_share": 0.1}}  # referred by a rule
    en = api.post("/v1/decisions", body).json()
    zh = api.post("/v1/decisions", {**body, "language": "zh"}).json()
    assert en["decision"] == "refer"
    by_query = _notice(api, en["decision_id"], "zh-CN").json()
    by_header = _notice(api, en["decision_id"], **{"Accept-Language": "zh-CN,zh;q=0.9"}).json()
    query_wins = _notice(api, en["decision_id"], "zh-CN", **{"Accept-Language": "en"}).json()
    told_back = _notice(api, zh["decision_id"], "en").json()
    native = _notice(api, en["decision_id"]).json()
    assert by_query == by_header == query_wins
    assert by_query["language"] == "zh" and told_back["language"] == "en"
    for n in (by_query,):
        texts = [r["text"] for r in n["principal_reasons"]] + [o["text"] for o in n["options"]]
        assert all(CJK.search(t) for t in [*texts, n["score"]["text"], n["review"]["text"]])
    assert [r["text"] for r in by_query["principal_reasons"]] == [
        r["text"] for r in _notice(api, zh["decision_id"], "zh").json()["principal_reasons"]
    ]
    assert [r["text"] for r in told_back["principal_reasons"]] == [
        r["text"] for r in native["principal_reasons"]
    ]
    assert by_query["decided_by"] == ["THIN_FILE_OFFLINE"]
    assert by_query["review"]["status"] == "under_review"
    assert [h["stage"] for h in by_query["review"]["history"]][-1] == "under_review"
    for bad in ({"lang": "fr"}, {"Accept-Language": "fr"}):
        lang = bad.get("lang")
        headers = {k: v for k, v in bad.items() if k != "lang"}
        r = _notice(api, en["decision_id"], lang, **headers)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["field"] == ("query.lang" if lang else "Accept-Language")


def test_an_approval_nobody_reviews_has_no_notice_and_others_ids_are_not_found(
    apis: tuple[Api, Api],
) -> None:
    api, other = apis
    approved = api.post("/v1/decisions", _approved(api)).json()
    r = _notice(api, approved["decision_id"])
    assert r.status_code == 409
    assert "approved without review" in r.json()["detail"]
    declined = api.post("/v1/decisions", api.example).json()
    assert _notice(other, declined["decision_id"]).status_code == 404
    assert _notice(api, "0" * 32).status_code == 404
    assert api.client.get("/v1/decisions/x/notice").status_code == 401


def test_an_applicant_who_asks_for_a_person_is_never_decided_by_the_machine(api: Api) -> None:
    body = _approved(api)
    d = api.post("/v1/decisions", {**body, "human_review_requested": True}).json()
    assert d["decision"] == "approve" and d["status"] == "under_review"
    assert d["human_review_requested"] is True
    queue = api.client.get("/v1/reviews", headers=api.headers).json()["items"]
    assert d["decision_id"] in {i["decision_id"] for i in queue}
    progress = api.client.get(f"/v1/decisions/{d['decision_id']}", headers=api.headers).json()
    assert progress["status"] == "under_review" and progress["final_decision"] is None
    n = _notice(api, d["decision_id"], "zh-CN").json()
    assert n["decision"] == "approve" and CJK.search(n["human_review"])
    assert n["review"]["requested_by_applicant"] and n["review"]["status"] == "under_review"
    record = api.service.audit.entry("decision", d["decision_id"])
    assert record is not None
    payload = json.loads(record[2])
    assert payload["human_review"] == "requested by the applicant"
    assert payload["response"]["human_review_requested"] is True
    review = {"final_decision": "decline", "reviewer": "officer-1", "note": "Checked by hand."}
    closed = api.client.post(f"/v1/reviews/{d['decision_id']}", json=review, headers=api.headers)
    assert closed.status_code == 200, closed.text
    after = _notice(api, d["decision_id"]).json()["review"]
    assert after["status"] == "decided" and after["final_decision"] == "decline"
    assert after["reviewed"] and "declined" in after["text"]
    assert [h["stage"] for h in after["history"]] == [
        "received",
        "scored",
        "under_review",
        "decided",
    ]
    # Not asked: the same applicant is approved by the machine, as before.
    plain = api.post("/v1/decisions", body).json()
    assert plain["status"] == "decided" and plain["human_review_requested"] is False
    assert audit_verify(api.service.audit.url).exit_code == 0


def test_batches_and_columns_carry_the_request_for_a_person_per_applicant(api: Api) -> None:
    approved = _approved(api)
    declined = {**api.example, "context": {"recent_lenders_90d": 6}}
    rows = api.post("/v1/decisions:batch", {"applications": [
        {**approved, "human_review_requested": True}, approved, declined,
    ]}).json()["decisions"]  # fmt: skip
    assert [d["status"] for d in rows] == ["under_review", "decided", "decided"]
    assert [d["human_review_requested"] for d in rows] == [True, False, False]
    columns = {k: [v, v, api.example["applicant"][k]] for k, v in approved["applicant"].items()}
    out = api.post("/v1/decisions:columnar", {
        "columns": columns, "human_review_requested": [True, False, True], "language": "zh",
    }).json()["decisions"]  # fmt: skip
    assert out["decision"][:2] == ["approve", "approve"]
    assert out["status"] == ["under_review", "decided", "under_review"]
    assert out["human_review_requested"] == [True, False, True]
    queue = {i["decision_id"] for i in
             api.client.get("/v1/reviews", headers=api.headers).json()["items"]}  # fmt: skip
    assert rows[0]["decision_id"] in queue
    assert {out["decision_id"][0], out["decision_id"][2]} <= queue
    assert out["decision_id"][1] not in queue
    # The notices of a batch's and a columnar batch's decisions, told in the other language
    # from the features their records keep.
    for decision_id, lang in [(rows[2]["decision_id"], "zh"), (out["decision_id"][2], "en")]:
        n = _notice(api, decision_id, lang)
        assert n.status_code == 200, n.text
        assert n.json()["language"] == lang
        assert bool(CJK.search(n.json()["principal_reasons"][0]["text"])) == (lang == "zh")
    # Once reviewed, a row batch's decision's last entry is the review: its record is searched.
    review = {"final_decision": "approve", "reviewer": "officer-2", "note": "Fine."}
    reviewed = api.client.post(f"/v1/reviews/{rows[0]['decision_id']}", json=review,
                               headers=api.headers)  # fmt: skip
    assert reviewed.status_code == 200, reviewed.text
    told = _notice(api, rows[0]["decision_id"], "zh").json()
    assert told["review"]["final_decision"] == "approve" and told["review"]["reviewed"]
    assert all(CJK.search(r["text"]) for r in told["principal_reasons"])
    col = _notice(api, out["decision_id"][0]).json()
    assert col["review"]["requested_by_applicant"] and col["review"]["status"] == "under_review"
    assert _notice(api, out["decision_id"][1]).status_code == 409
    bad = api.post("/v1/decisions:columnar", {"columns": columns,
                                               "human_review_requested": [True]})  # fmt: skip
    assert bad.status_code == 422
    assert audit_verify(api.service.audit.url).exit_code == 0


ENGLISH_ONLY = (
    'version = "en-only"\nabsent_fields = "not_evaluated"\n[cutoffs]\napprove = 680\n'
    'decline = 600\n[[rules]]\ncode = "FL"\nreason = "Florida"\naction = "adjust"\n'
    'points = -5\nwhen = { state = { eq = "FL" } }\n'
    '[feature_reasons.state]\ntext = "State {value}"\ntext_zh = "州{value}"\n'
    'approval_text = "State {value}, lower"\n'
)


def test_a_policy_with_a_text_lacking_chinese_is_refused_at_load_naming_it(
    root: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(ENGLISH_ONLY, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert "rules.FL.reason_zh" in str(caught.value)
    assert "feature_reasons.state.approval_text_zh" in str(caught.value)
    from jointcredit.cli.main import app

    result = CliRunner().invoke(
        app,
        ["serve", "--model", str(root / "model"), "--trust", str(root / "trust.json"),
         "--policy", str(policy), "--api-keys", str(root / "keys.json"),
         "--db", f"sqlite:///{tmp_path / 'audit.sqlite'}", "--trust-any-coordinator"],
        env={"COLUMNS": "400"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "rules.FL.reason_zh" in result.output and "refusing to start" in result.output
    # A notice text is a pair: one without its Chinese is refused too.
    policy.write_text(
        'version = "t"\n[cutoffs]\napprove = 680\ndecline = 600\n'
        '[notice.manual_review]\ntext = "Call us"\n',
        encoding="utf-8",
    )
    with pytest.raises(PolicyError, match=r"notice\.manual_review\.text_zh: Field required"):
        load_policy(policy)


def test_decisions_give_no_reason_code_the_enumeration_lacks(api: Api) -> None:
    from jointcredit.service.reason_codes import reason_codes

    service = api.service
    known = reason_codes(service.decider.policy, service.decider.features)
    ex = api.example
    bodies = [
        ex, _approved(api), {**ex, "context": {"recent_lenders_90d": 6}},
        {**ex, "context": {"online_activity_share": 0.1}},
        {**ex, "applicant": {**ex["applicant"], "state": "ZZ"}},
        {**ex, "applicant": {**ex["applicant"], "state": "FL", "gross_approved": 5e6}},
        {**ex, "joint": {"applicant_id": "T", "annual_income": 1e5, "monthly_debt_payments": 0,
                         "participating_lenders": ["bank-a"]}},
    ]  # fmt: skip
    seen: set[str] = set()
    for body in bodies:
        for language in ("en", "zh"):
            d = api.post("/v1/decisions", {**body, "language": language}).json()
            seen |= {r["code"] for r in d["reasons"]} | {f["code"] for f in d["policy_flags"]}
            seen |= set(d["rules_not_evaluated"]) - {r.code for r in service.decider.policy.rules}
    assert seen <= set(known), sorted(seen - set(known))
    assert {"MANY_RECENT_LENDERS", "OUTSIDE_TRAINING_DATA", "EXPOSURE_UNAVAILABLE"} <= seen
