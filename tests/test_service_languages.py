"""Reasons in English and Chinese over HTTP: a request chooses its language (`language` in the
body, else `Accept-Language`, else English); a Chinese decision has the English one's codes,
features, directions and numbers with Chinese texts, says which language it is in, and is
audited so that it can be told again in either language; an unknown language is a 422."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import Api, signed_artifact
from typer.testing import CliRunner

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.decide import Decider
from jointcredit.service.loader import StartupError, load_service

pytestmark = pytest.mark.integration

CJK = re.compile(r"[\u4e00-\u9fff]")
SAME = ("code", "kind", "feature", "direction", "contribution")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("languages")
    signed_artifact(root)
    return root


@pytest.fixture(scope="module")
def api(root: Path) -> Iterator[Api]:
    token = new_key(root / "keys.json", "bank-a")
    service = load_service(
        root / "model", root / "trust.json", api_keys=root / "keys.json",
        db_url=f"sqlite:///{root / 'audit.sqlite'}",
    )  # fmt: skip
    with TestClient(create_app(service)) as client:
        yield Api(client, token, service)


def _bodies(api: Api) -> list[dict[str, Any]]:
    """Applicants whose decisions carry reasons of every kind: model reasons both ways, a
    decline rule, an adjustment, an unseen category."""
    ex = api.example
    return [
        ex,
        {**ex, "context": {"recent_lenders_90d": 6}},
        {**ex, "applicant": {**ex["applicant"], "state": "FL"}},
        {**ex, "applicant": {**ex["applicant"], "state": "ZZ"}},
        {**ex, "applicant": {**ex["applicant"], "gross_approved": 5e6, "sba_share": 0.9}},
    ]


def _chinese(texts: list[str]) -> None:
    for text in texts:
        assert CJK.search(text), text


def test_a_chinese_decision_has_the_english_ones_codes_with_chinese_texts(api: Api) -> None:
    kinds: set[str] = set()
    for body in _bodies(api):
        en = api.post("/v1/decisions", body).json()
        zh = api.post("/v1/decisions", {**body, "language": "zh"}).json()
        assert en["language"] == "en" and zh["language"] == "zh"
        for key in ("decision", "score", "probability_of_default", "unseen_values"):
            assert en[key] == zh[key], key
        assert [[r[k] for k in SAME] for r in en["reasons"]] == [
            [r[k] for k in SAME] for r in zh["reasons"]
        ]
        assert [f["code"] for f in en["policy_flags"]] == [f["code"] for f in zh["policy_flags"]]
        _chinese([r["text"] for r in zh["reasons"]] + [f["text"] for f in zh["policy_flags"]])
        assert not any(CJK.search(r["text"]) for r in en["reasons"])
        kinds |= {r["code"] if r["kind"] == "policy" else r["direction"] for r in zh["reasons"]}
    assert kinds >= {"MANY_RECENT_LENDERS", "OUTSIDE_TRAINING_DATA", "toward_default"}, kinds


def test_the_header_chooses_when_the_body_does_not(api: Api) -> None:
    body = api.example
    assert (
        api.post("/v1/decisions", body, **{"Accept-Language": "zh-CN,zh;q=0.9"}).json()["language"]
        == "zh"
    )
    assert (
        api.post("/v1/decisions", {**body, "language": "en"}, **{"Accept-Language": "zh"}).json()[
            "language"
        ]
        == "en"
    )
    assert api.post("/v1/decisions", body).json()["language"] == "en"


def test_an_unknown_language_is_a_clear_422(api: Api) -> None:
    body = api.example
    r = api.post("/v1/decisions", {**body, "language": "fr"})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"field": "language", "reason": "Input should be 'en' or 'zh'"}]
    r = api.post("/v1/decisions", body, **{"Accept-Language": "fr-FR"})
    assert r.status_code == 422
    (problem,) = r.json()["detail"]
    assert problem["field"] == "Accept-Language" and "en, zh" in problem["reason"]
    batch = {"applications": [body], "language": "de"}
    assert api.post("/v1/decisions:batch", batch).status_code == 422


def test_batches_answer_in_the_language_asked(api: Api) -> None:
    bodies = _bodies(api)
    singles = [api.post("/v1/decisions", {**b, "language": "zh"}).json() for b in bodies]
    rows = api.post("/v1/decisions:batch", {"applications": bodies, "language": "zh"}).json()
    for one, batched in zip(singles, rows["decisions"], strict=True):
        assert batched["language"] == "zh" and batched["reasons"] == one["reasons"]
    columns = {k: [b["applicant"][k] for b in bodies] for k in bodies[0]["applicant"]}
    context = {"recent_lenders_90d": [(b.get("context") or {}).get("recent_lenders_90d")
                                      for b in bodies]}  # fmt: skip
    out = api.post(
        "/v1/decisions:columnar?expand=true", {"columns": columns, "context": context},
        **{"Accept-Language": "zh"},
    ).json()  # fmt: skip
    assert out["language"] == "zh"
    _chinese([r["text"] for r in out["reason_table"]] + [f["text"] for f in out["rules"]])
    assert out["decisions"]["reasons"] == [d["reasons"] for d in singles]


def test_the_audit_keeps_what_tells_a_decision_again_in_either_language(api: Api) -> None:
    decider: Decider = api.service.decider
    for body in _bodies(api):
        en = api.post("/v1/decisions", body).json()
        zh = api.post("/v1/decisions", {**body, "language": "zh"}).json()
        stored = api.client.get(f"/v1/decisions/{en['decision_id']}", headers=api.headers)
        kept = stored.json()["response"]
        assert kept["language"] == "en" and kept["reasons"] == en["reasons"]
        applicant = body["applicant"]
        assert decider.retell(kept["reasons"], applicant, "zh") == zh["reasons"]
        assert decider.retell(zh["reasons"], applicant, "en") == en["reasons"]


def test_an_english_only_policy_file_is_refused_at_start_up_naming_the_text(
    root: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "en-only"\nabsent_fields = "not_evaluated"\n[cutoffs]\napprove = 680\n'
        'decline = 600\n[[rules]]\ncode = "FL"\nreason = "Florida"\naction = "adjust"\n'
        'points = -5\nwhen = { state = { eq = "FL" } }\n',
        encoding="utf-8",
    )
    with pytest.raises(StartupError, match=r"without their Chinese \(zh-CN\) twin: rules\.FL"):
        load_service(
            root / "model", root / "trust.json", policy_file=policy, api_keys=root / "keys.json",
            db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}",
        )  # fmt: skip


def _cli(*args: str) -> tuple[int, str, str]:
    from jointcredit.cli.main import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    return result.exit_code, result.stdout, result.stderr


def test_decide_and_score_take_a_language(root: Path, tmp_path: Path) -> None:
    code, out, err = _cli("decide", str(root / "model"), "--language", "zh")
    assert code == 0, err
    assert "reasons in zh" in out and CJK.search(out), out
    applicants = tmp_path / "applicants.csv"
    code, out, err = _cli("decide", str(root / "model"), "--language", "fr")
    assert code == 2 and "--language" in err and "en, zh" in err
    import pandas as pd

    from jointcredit.models.artifact import load_artifact
    from jointcredit.service.applicants import sample
    from jointcredit.trust.store import load_store

    model = load_artifact(root / "model", load_store(root / "trust.json"))
    drawn = sample(model.spec, model.card.data_schema.features, 2, seed=4)
    drawn[1]["state"] = "ZZ"
    pd.DataFrame(drawn).to_csv(applicants, index=False)
    code, out, err = _cli("score", str(root / "model"), "--input", str(applicants),
                          "--language", "zh")  # fmt: skip
    assert code == 0, err
    assert "#1: 您填写的state未出现在各参与机构的训练数据中（模型将其视为“其他”）" in out, out


def test_the_joint_limits_referral_and_rule_come_in_the_language_asked(api: Api) -> None:
    joint = {"applicant_id": "TIN-1", "annual_income": 420000, "monthly_debt_payments": 6500,
             "participating_lenders": ["bank-a", "bank-b"]}  # fmt: skip
    body = {**api.example, "joint": joint}
    en = api.post("/v1/decisions", body).json()
    zh = api.post("/v1/decisions", {**body, "language": "zh"}).json()
    flags = [{f["code"]: f for f in d["policy_flags"]}["EXPOSURE_UNAVAILABLE"] for d in (en, zh)]
    assert flags[0]["text"].startswith("The lenders' existing exposure")
    assert flags[1]["text"].startswith("目前无法确认各参与机构对您的现有授信余额")
    assert "no exposure registry configured" in flags[1]["text"]
    assert [r["code"] for r in en["reasons"]] == [r["code"] for r in zh["reasons"]]
    assert en["joint_credit"]["rule"].startswith("capacity = PV of")
    assert zh["joint_credit"]["rule"].startswith("偿债能力")
    assert {k: v for k, v in en["joint_credit"].items() if k != "rule"} == {
        k: v for k, v in zh["joint_credit"].items() if k != "rule"
    }


def test_the_openapi_declares_the_accept_language_header(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for route in ("/v1/decisions", "/v1/decisions:batch", "/v1/decisions:columnar"):
        declared = {p["name"]: p for p in paths[route]["post"].get("parameters", [])}
        assert declared["Accept-Language"]["in"] == "header", route
        assert "422" in paths[route]["post"]["responses"]
