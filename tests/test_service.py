"""The eligibility service's HTTP API, in process through FastAPI's TestClient: requests and
their validation, authentication and isolation, batches in both formats, reviews, the audit
chain behind them, metrics and shutdown. (`jointcredit serve` as a real process:
tests/test_serve.py.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import audit_verify
from service_helpers import signed_artifact as _artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.service.app import create_app
from jointcredit.service.audit import AuditError, AuditLog
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service
from jointcredit.service.middleware import MAX_BODY
from jointcredit.service.records import derive_views
from jointcredit.service.schemas import BatchOut, DecisionOut

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("svc")
    model_dir = _artifact(root)
    keys_file = root / "api-keys.json"
    key_a = new_key(keys_file, "bank-a")
    key_b = new_key(keys_file, "bank-b")
    db = f"sqlite:///{root / 'audit.sqlite'}"
    service = load_service(model_dir, root / "trust.json", api_keys=keys_file, db_url=db)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield {"client": client, "a": key_a, "b": key_b, "db": db, "root": root}


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _get(served: dict[str, Any], path: str, key: str | None = None) -> httpx.Response:
    response: httpx.Response = served["client"].get(path, headers=_h(served[key]) if key else {})
    return response


def _example(served: dict[str, Any]) -> dict[str, Any]:
    spec = _get(served, "/openapi.json").json()
    example: dict[str, Any] = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
    return example


def _post(served: dict[str, Any], body: Any, key: str = "a", path: str = "/v1/decisions",
          raw: bytes | None = None) -> httpx.Response:  # fmt: skip
    headers = {**_h(served[key]), "Content-Type": "application/json"}
    content = raw if raw is not None else json.dumps(body).encode()
    response: httpx.Response = served["client"].post(path, content=content, headers=headers)
    return response


def test_openapi_example_is_a_valid_request_and_gets_a_full_decision(
    served: dict[str, Any],
) -> None:
    r = _post(served, _example(served))
    assert r.status_code == 200, r.text
    d = r.json()
    DecisionOut.model_validate(d, strict=True)  # the hand-built response keeps the schema
    assert list(d) == list(DecisionOut.model_fields)
    assert d["decision"] in {"approve", "decline", "refer"}
    assert 0 < d["probability_of_default"] < 1 and 350 <= d["score"] <= 950
    # The model's reasons go the decision's way, the largest push first.
    model_reasons = [x for x in d["reasons"] if x["kind"] == "model"]
    sign = -1 if d["decision"] == "approve" else 1
    pushes = [sign * x["contribution"] for x in model_reasons]
    assert pushes == sorted(pushes, reverse=True) and all(c >= 0 for c in pushes)
    assert d["model"]["signing_key"] and len(d["model"]["version"]) == 64
    assert d["policy_version"].startswith("jointcredit-default")
    # The example carries the context every rule needs; without it, the rules are said to be
    # not evaluated, not guessed.
    assert d["rules_not_evaluated"] == []
    bare = _post(served, {**_example(served), "context": {}}).json()
    assert "THIN_FILE_OFFLINE" in bare["rules_not_evaluated"]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda a: a.pop("sector"), "applicant.sector", "Field required"),
        (lambda a: a.update(colour="red"), "applicant.colour", "Extra inputs"),
        (lambda a: a.update(sba_share=1.5), "applicant.sba_share", "less than or equal to 1"),
        (lambda a: a.update(gross_approved="lots"), "applicant.gross_approved", "valid number"),
        (lambda a: a.update(gross_approved=None), "applicant.gross_approved", "valid number"),
        (lambda a: a.update(franchise=True), "applicant.franchise", "must be a string"),
        (lambda a: a.update(state=12.5), "applicant.state", "must be a string"),
        (lambda a: a.update(state=""), "applicant.state", "at least 1 character"),
    ],
)
def test_bad_applicants_are_422_naming_the_field(
    served: dict[str, Any], change: Any, field: str, reason: str
) -> None:
    body = _example(served)
    change(body["applicant"])
    r = _post(served, body)
    assert r.status_code == 422, r.text
    assert any(e["field"] == field and reason in e["reason"] for e in r.json()["detail"]), r.text


def test_an_integer_category_reads_as_its_text(served: dict[str, Any]) -> None:
    body = _example(served)
    sector = body["applicant"]["sector"]  # NAICS codes: digits
    assert sector.isdigit()
    as_text = _post(served, body).json()
    body["applicant"]["sector"] = int(sector)
    as_int = _post(served, body).json()
    assert as_int["score"] == as_text["score"] and as_int["unseen_values"] == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"just a string"',
        b"[" * 5000 + b"]" * 5000,
        b'{"applicant": {"gross_approved": NaN}}',
        b'{"applicant": ' + b"{" * 3000 + b"}" * 3000 + b"}",
        '{"applicant": {"sector": "\u0000\ud800"}}'.encode("utf-8", "surrogatepass"),
    ],
)
def test_hostile_bodies_never_5xx_or_leak_a_traceback(served: dict[str, Any], raw: bytes) -> None:
    r = _post(served, None, raw=raw)
    assert 400 <= r.status_code < 500, r.text[:500]
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_oversized_body_is_413(served: dict[str, Any]) -> None:
    r = _post(served, None, raw=b" " * (MAX_BODY + 1))
    assert r.status_code == 413


def test_authentication_and_isolation(served: dict[str, Any]) -> None:
    body = json.dumps(_example(served)).encode()
    url = "/v1/decisions"
    assert served["client"].post(url, content=body).status_code == 401
    bad = {"Authorization": "Bearer jck_000000000000_wrong"}
    assert served["client"].post(url, content=body, headers=bad).status_code == 401
    decision_id = _post(served, _example(served), key="a").json()["decision_id"]
    mine = served["client"].get(f"{url}/{decision_id}", headers=_h(served["a"]))
    assert mine.status_code == 200 and mine.json()["progress"][0]["stage"] == "received"
    theirs = served["client"].get(f"{url}/{decision_id}", headers=_h(served["b"]))
    assert theirs.status_code == 404


def test_batch(served: dict[str, Any]) -> None:
    one = _example(served)
    fed = load_federation(DataConfig(dataset="sba", institutions=1))
    rows = fed.pooled_test().x.head(50)
    apps = []
    for _, row in rows.iterrows():
        applicant = {k: (None if (isinstance(v, float) and np.isnan(v)) else v)
                     for k, v in row.to_dict().items()}  # fmt: skip
        apps.append({**one, "applicant": applicant})
    r = _post(served, {"applications": apps}, path="/v1/decisions:batch")
    assert r.status_code == 200, r.text[:1000]
    out = r.json()["decisions"]
    BatchOut.model_validate(r.json(), strict=True)
    assert len(out) == 50 and len({d["decision_id"] for d in out}) == 50
    assert len({d["score"] for d in out}) > 5  # the model discriminates


def _columns(served: dict[str, Any], n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """n shipped applicants as a columnar body and as row-format applications; every third
    one mostly offline (referred by the default policy's thin-file rule)."""
    rows = load_federation(DataConfig(dataset="sba", institutions=1)).pooled_test().x.head(n)
    apps: list[dict[str, Any]] = []
    for k, (_, row) in enumerate(rows.iterrows()):
        applicant = {key: (None if (isinstance(v, float) and np.isnan(v)) else v)
                     for key, v in row.to_dict().items()}  # fmt: skip
        context = {"online_activity_share": 0.1} if k % 3 == 0 else None
        apps.append({"applicant": applicant, "context": context, "reference": f"r{k}"})
    body = {
        "columns": {f: [a["applicant"][f] for a in apps] for f in apps[0]["applicant"]},
        "context": {"online_activity_share": [0.1 if a["context"] else None for a in apps]},
        "reference": [a["reference"] for a in apps],
    }
    return body, apps


def test_columnar_batch_decides_like_rows_and_is_audited(served: dict[str, Any]) -> None:
    from jointcredit.service.schemas import ColumnarOut

    spec = served["client"].get("/openapi.json").json()
    example = spec["components"]["schemas"]["ColumnarDecisionRequest"]["examples"][0]
    assert _post(served, example, path="/v1/decisions:columnar").status_code == 200

    body, apps = _columns(served, 60)
    r = _post(served, body, path="/v1/decisions:columnar")
    assert r.status_code == 200, r.text[:1000]
    out = r.json()
    ColumnarOut.model_validate(out, strict=True)
    cols = out["decisions"]
    assert out["count"] == 60 and len(set(cols["decision_id"])) == 60
    # The same applicants as rows: the same decisions, field for field.
    rows = _post(served, {"applications": apps}, path="/v1/decisions:batch").json()["decisions"]
    table, features = out["reason_table"], out["contribution_features"]
    for k, d in enumerate(rows):
        for field in ("decision", "status", "probability_of_default", "score", "policy_score",
                      "stance", "unseen_values", "out_of_range", "reference"):  # fmt: skip
            assert cols[field][k] == d[field], (k, field)
        assert [out["rules"][i] for i in cols["flag_ids"][k]] == d["policy_flags"], k
        not_evaluated = [out["rules"][i]["code"] for i in cols["not_evaluated_ids"][k]]
        assert not_evaluated == d["rules_not_evaluated"], k
        # Reasons as ids into the batch's table, contributions per feature: the same reasons.
        reasons = [{**table[i], "contribution": None} for i in cols["reason_ids"][k]]
        for r in reasons:
            if r["kind"] == "model":
                r["contribution"] = cols["contributions"][k][features.index(r["feature"])]
        assert reasons == d["reasons"], k
    assert {"approve", "refer"} <= set(cols["decision"])
    assert any(r["kind"] == "model" for d in rows for r in d["reasons"])
    assert any(r["kind"] == "policy" for d in rows for r in d["reasons"])
    assert len(table) < sum(len(ids) for ids in cols["reason_ids"])  # shared entries
    assert any(cols["flag_ids"]) and any(cols["not_evaluated_ids"])
    full = _post(served, body, path="/v1/decisions:columnar?expand=true").json()
    for field in ("reasons", "policy_flags", "rules_not_evaluated"):
        assert full["decisions"][field] == [d[field] for d in rows], field
    ColumnarOut.model_validate(full, strict=True)
    assert _post(served, body, path="/v1/decisions:columnar?expand=maybe").status_code == 422

    # Each decision is addressable: decided ones read back from the chained batch record,
    # referred ones wait in the review queue; another institution sees neither.
    url = "/v1/decisions"
    decided = cols["decision"].index("approve")
    got = (
        served["client"]
        .get(f"{url}/{cols['decision_id'][decided]}", headers=_h(served["a"]))
        .json()
    )
    assert got["status"] == "decided" and got["response"]["reference"] == f"r{decided}"
    assert got["response"]["reasons"] == rows[decided]["reasons"]
    DecisionOut.model_validate(got["response"], strict=True)
    assert [s["stage"] for s in got["progress"]] == ["received", "scored", "decided"]
    theirs = served["client"].get(f"{url}/{cols['decision_id'][decided]}", headers=_h(served["b"]))
    assert theirs.status_code == 404
    fake = cols["decision_id"][decided].rsplit("-", 1)[0] + "-999"
    assert served["client"].get(f"{url}/{fake}", headers=_h(served["a"])).status_code == 404
    k_referred = cols["decision"].index("refer")
    referred = cols["decision_id"][k_referred]
    queue = served["client"].get("/v1/reviews?limit=1000", headers=_h(served["a"]))
    listed = {i["decision_id"]: i["response"] for i in queue.json()["items"]}
    assert listed[referred] == {**rows[k_referred], "decision_id": referred,
                                "created_at": out["created_at"]}  # fmt: skip
    before = served["client"].get(f"{url}/{referred}", headers=_h(served["a"])).json()
    assert before["status"] == "under_review" and before["response"] == listed[referred]
    review = {"final_decision": "decline", "reviewer": "officer-2", "note": "no statements"}
    resolved = served["client"].post(f"/v1/reviews/{referred}", json=review,
                          headers=_h(served["a"]))  # fmt: skip
    assert resolved.status_code == 200
    after = served["client"].get(f"{url}/{referred}", headers=_h(served["a"])).json()
    assert after["status"] == "decided" and after["final_decision"] == "decline"

    ok = audit_verify(served["db"])
    assert ok.exit_code == 0 and "OK" in ok.stdout, ok.stderr

    # A referred columnar decision's view row keeps its response in the batch record: giving
    # it another response, or deleting it, is caught like any other edit.
    other = cols["decision_id"][[k for k, d in enumerate(cols["decision"]) if d == "refer"][1]]
    for n, edit in enumerate((
        ("UPDATE decisions SET response = ? WHERE decision_id = ?", (json.dumps(rows[0]), other)),
        ("DELETE FROM decisions WHERE decision_id = ?", (other,)),
    )):  # fmt: skip
        copy = served["root"] / f"tampered-{n}.sqlite"
        source = served["db"].removeprefix("sqlite:///")
        with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
            dst.execute(*edit)
        with pytest.raises(AuditError, match=other):
            AuditLog(f"sqlite:///{copy}", create=False).verify(derive_views)
    assert audit_verify(f"sqlite:///{copy}").exit_code == 1


def test_no_path_gives_more_reasons_than_the_policy_allows(served: dict[str, Any]) -> None:
    """Mostly offline applicants in a high-loss state: a referral rule, a downward adjustment
    and the model's reasons together are more than the default policy's four. Single, row batch
    and columnar batch each give at most four, the deciding rule first."""
    body, apps = _columns(served, 30)
    apps = [{**a, "applicant": {**a["applicant"], "state": "FL"},
             "context": {"online_activity_share": 0.1}} for a in apps]  # fmt: skip
    body["columns"]["state"] = ["FL"] * 30
    body["context"] = {"online_activity_share": [0.1] * 30}
    singles = [_post(served, a).json() for a in apps[:10]]
    rows = _post(served, {"applications": apps}, path="/v1/decisions:batch").json()["decisions"]
    cols = _post(served, body, path="/v1/decisions:columnar?expand=true").json()["decisions"]
    for reasons in [*(d["reasons"] for d in singles), *(d["reasons"] for d in rows),
                    *cols["reasons"], *([0] * len(ids) for ids in cols["reason_ids"])]:  # fmt: skip
        assert len(reasons) <= 4, reasons
    assert any(len(d["reasons"]) == 4 for d in rows)
    for d in rows:
        if d["decision"] == "refer" and not d["unseen_values"] and not d["out_of_range"]:
            assert d["reasons"][0]["code"] == "THIN_FILE_OFFLINE"
            assert "REGION_HIGH_LOSS" in {f["code"] for f in d["policy_flags"]}


def test_an_applicant_outside_the_training_data_is_referred_for_review(
    served: dict[str, Any],
) -> None:
    """A sector code and a state nobody reported, a loan amount beyond the model's span:
    referred with the reason first (single and columnar), waiting in the review queue."""
    body = _example(served)
    body["applicant"] = {**body["applicant"], "sector": "99-new", "state": "ZZ"}
    d = _post(served, body).json()
    assert d["decision"] == "refer" and d["status"] == "under_review", d
    assert d["unseen_values"] == {"sector": "99-new", "state": "ZZ"}
    assert [r["code"] for r in d["reasons"][:2]] == ["OUTSIDE_TRAINING_DATA"] * 2
    assert [r["feature"] for r in d["reasons"][:2]] == ["sector", "state"]
    assert 350 <= d["score"] <= 950  # still scored, for the reviewer
    queue = served["client"].get("/v1/reviews?limit=1000", headers=_h(served["a"])).json()
    assert d["decision_id"] in {i["decision_id"] for i in queue["items"]}
    columns, _ = _columns(served, 3)
    columns["columns"]["gross_approved"][1] = 5e9  # within the schema (min 0), beyond training
    out = _post(served, columns, path="/v1/decisions:columnar?expand=true").json()["decisions"]
    assert out["decision"][1] == "refer" and list(out["out_of_range"][1]) == ["gross_approved"]
    assert out["reasons"][1][0]["code"] == "OUTSIDE_TRAINING_DATA"
    assert "outside the range of values the model was built on" in out["reasons"][1][0]["text"]
    assert out["out_of_range"][0] == {} and out["out_of_range"][2] == {}


def test_columnar_errors_name_the_column_and_row(served: dict[str, Any]) -> None:
    body, _ = _columns(served, 5)

    def fields(bad: dict[str, Any]) -> list[str]:
        r = _post(served, bad, path="/v1/decisions:columnar")
        assert r.status_code == 422, r.text
        return [e["field"] for e in r.json()["detail"]]

    feature = next(iter(body["columns"]))
    missing = {**body, "columns": {k: v for k, v in body["columns"].items() if k != feature}}
    assert fields(missing) == [f"columns.{feature}"]
    bad_value = json.loads(json.dumps(body))
    bad_value["columns"]["gross_approved"][3] = "lots"
    assert fields(bad_value) == ["columns.gross_approved.3"]
    negative = json.loads(json.dumps(body))
    negative["columns"]["gross_approved"][1] = -5
    assert fields(negative) == ["columns.gross_approved.1"]
    short = json.loads(json.dumps(body))
    short["columns"]["sector"] = short["columns"]["sector"][:4]
    r = _post(served, short, path="/v1/decisions:columnar")
    assert r.status_code == 422 and "columns.sector has 4 values" in r.text
    assert fields({**body, "extra": [1]}) == ["extra"]
    assert fields({**body, "context": {"nope": [1] * 5}}) == ["context.nope"]


def test_referral_review_and_audit_chain(served: dict[str, Any]) -> None:
    body = _example(served)
    body["context"] = {"online_activity_share": 0.1}  # thin file: always referred
    d = _post(served, body).json()
    assert d["decision"] == "refer" and d["status"] == "under_review"
    assert d["reasons"][0]["code"] == "THIN_FILE_OFFLINE"
    # The module's other tests leave referrals of their own in the queue.
    queue = served["client"].get("/v1/reviews?limit=1000", headers=_h(served["a"])).json()
    assert d["decision_id"] in {i["decision_id"] for i in queue["items"]}
    other = served["client"].get("/v1/reviews?limit=1000", headers=_h(served["b"])).json()["items"]
    assert d["decision_id"] not in {i["decision_id"] for i in other}
    review = {"final_decision": "approve", "reviewer": "officer-1", "note": "statements checked"}
    url = f"/v1/reviews/{d['decision_id']}"
    assert served["client"].post(url, json=review, headers=_h(served["b"])).status_code == 404
    r = served["client"].post(url, json=review, headers=_h(served["a"]))
    assert r.status_code == 200 and r.json()["final_decision"] == "approve"
    assert served["client"].post(url, json=review, headers=_h(served["a"])).status_code == 409
    progress = (
        served["client"].get(f"/v1/decisions/{d['decision_id']}", headers=_h(served["a"])).json()
    )
    assert [s["stage"] for s in progress["progress"]] == [
        "received", "scored", "under_review", "decided"
    ]  # fmt: skip

    ok = audit_verify(served["db"])
    assert ok.exit_code == 0 and "OK" in ok.stdout, ok.stderr
    # Edit one stored decision behind the service's back: detected, and named.
    path = served["db"].removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    con.execute("UPDATE audit_log SET institution = 'bank-b' WHERE seq = 2")
    con.commit()
    bad = audit_verify(served["db"])
    assert bad.exit_code == 1 and "row 2" in bad.stderr, bad.stdout + bad.stderr
    con.close()


def test_metrics_and_readiness(served: dict[str, Any]) -> None:
    ready = served["client"].get("/readyz").json()
    assert ready["status"] == "ready" and ready["audit_head"]["seq"] >= 0
    text = served["client"].get("/metrics").text
    assert "jointcredit_decisions_total" in text and "jointcredit_request_seconds" in text


def test_metrics_count_decisions_and_errors(served: dict[str, Any]) -> None:
    before = _get(served, "/metrics").text
    assert _post(served, _example(served)).status_code == 200
    assert _post(served, {"applicant": {}}).status_code == 422
    served["client"].post("/v1/decisions", content=b"{}")  # no key: 401
    after = _get(served, "/metrics").text

    def count(text: str, name: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(name)]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

    assert (
        count(after, "jointcredit_decisions_total")
        == count(before, "jointcredit_decisions_total") + 1
    )
    for status in ("422", "401"):
        name = f'jointcredit_errors_total{{status="{status}"}}'
        assert count(after, name) == count(before, name) + 1, status
    assert count(after, "jointcredit_audit_commits") > count(before, "jointcredit_audit_commits")


def test_a_joint_request_without_an_exposure_registry_is_referred(served: dict[str, Any]) -> None:
    body = _example(served)
    body["joint"] = {
        "applicant_id": "TIN-1",
        "annual_income": 600000,
        "monthly_debt_payments": 2000,
        "participating_lenders": ["bank-a"],
    }
    d = _post(served, body).json()
    assert d["decision"] in {"refer", "decline"}
    assert "no exposure registry configured" in d["policy_flags"][-1]["text"]
    assert d["joint_credit"]["existing_exposure"] is None and d["joint_credit"]["available"] == 0


def test_shutdown_closes_the_audit_log(tmp_path: Path) -> None:
    model_dir = _artifact(tmp_path)
    token = new_key(tmp_path / "keys.json", "bank-a")
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    service = load_service(
        model_dir, tmp_path / "trust.json", api_keys=tmp_path / "keys.json", db_url=url
    )
    checkpointer = service.audit.checkpointer
    assert checkpointer is not None and checkpointer.running
    with TestClient(create_app(service)) as client:
        example = client.get("/openapi.json").json()["components"]["schemas"]
        body = example["DecisionRequest"]["examples"][0]
        r = client.post("/v1/decisions", json=body, headers=_h(token))
        assert r.status_code == 200, r.text
    lock = service.audit.file_lock
    assert not checkpointer.running and lock is not None and not lock.held_open
    assert AuditLog(url, create=False).verify(derive_views)[0] == 1
