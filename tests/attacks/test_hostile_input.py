"""Attack: hostile decision requests (issue 19, items 8 and 9).

8. An integer category beyond 64 bits gave 500 (and a dropped connection) on the single
   endpoint while batch and columnar answered 200: every integer is now bounded to what JSON
   readers hold exactly, and all three endpoints give the same 422 for the same value.
9. Wrong types were coerced (`true` became "Loan amount of $1", `" 7e4 "` a number); category
   text was echoed into reasons verbatim (HTML included) and an unknown state was named as if
   the model knew it. Validation is strict; reasons name the level the model used ("other"
   for an unseen category), escaped, in English and Chinese; free texts and lender names have
   length and character limits.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

pytestmark = pytest.mark.integration

HUGE = 18446744073709551616  # 2**64
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("hostile")
    key = new_key(root / "keys.json", "bank-a")
    service = load_service(signed_artifact(root), root / "trust.json",
                           api_keys=root / "keys.json",
                           db_url=f"sqlite:///{root / 'audit.sqlite'}")  # fmt: skip
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        yield {"client": client, "headers": {"Authorization": f"Bearer {key}"},
               "example": schemas["DecisionRequest"]["examples"][0]}  # fmt: skip


def _post(api: dict[str, Any], path: str, body: Any, **headers: str) -> httpx.Response:
    response: httpx.Response = api["client"].post(
        path, content=json.dumps(body).encode(),
        headers={**api["headers"], "Content-Type": "application/json", **headers},
    )  # fmt: skip
    return response


def _three_ways(api: dict[str, Any], field: str, value: Any) -> list[httpx.Response]:
    """The example with `field` (applicant.X or context.X) set to `value`, sent as a single
    decision, a batch of rows and a batch of columns."""
    body = copy.deepcopy(api["example"])
    part, name = field.split(".")
    body.setdefault(part, {})
    body[part] = {**(body[part] or {}), name: value}
    columns: dict[str, Any] = {"columns": {k: [v] for k, v in body["applicant"].items()}}
    if part == "context":
        columns["context"] = {name: [value]}
    return [
        _post(api, "/v1/decisions", body),
        _post(api, "/v1/decisions:batch", {"applications": [body]}),
        _post(api, "/v1/decisions:columnar", columns),
    ]


def _fields(response: httpx.Response) -> list[str]:
    return [p["field"] for p in response.json()["detail"]]


def test_hostile_values_never_get_a_server_error(api: dict[str, Any]) -> None:
    """3,000 requests of fuzz_decisions.py (hostile values in one to three fields, the three
    endpoints in turn): none is a 5xx. (`fuzz_decisions.py 100000` for the full run.)"""
    from fuzz_decisions import fuzz

    statuses = fuzz(api["client"], api["headers"], 3000, seed=19)
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] > 100 and statuses[422] > 1000  # both valid and refused ones sent


@pytest.mark.parametrize("value", [HUGE, -HUGE, 2**53, 10**400])
@pytest.mark.parametrize(
    "field", ["applicant.sector", "applicant.state", "applicant.franchise",
              "context.recent_lenders_90d", "context.transactions_30d"],
)  # fmt: skip
def test_integers_beyond_json_precision_are_the_same_422_everywhere(
    api: dict[str, Any], field: str, value: int
) -> None:
    single, rows, columns = _three_ways(api, field, value)
    assert [r.status_code for r in (single, rows, columns)] == [422, 422, 422], single.text
    name = field.split(".")[1]
    assert _fields(single) == [field]
    assert _fields(rows) == [f"applications.0.{field}"]
    assert _fields(columns) in ([f"columns.{name}.0"], [f"context.{name}.0"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("applicant.gross_approved", True), ("applicant.gross_approved", " 7e4 "),
     ("applicant.gross_approved", "70000"), ("applicant.sba_share", False),
     ("applicant.sector", True), ("applicant.state", 1.5),
     ("context.recent_lenders_90d", True), ("context.recent_lenders_90d", "3"),
     ("context.recent_lenders_90d", 2.5), ("context.online_activity_share", "0.5"),
     ("context.online_activity_share", True)],
)  # fmt: skip
def test_wrong_types_are_refused_not_coerced(api: dict[str, Any], field: str, value: Any) -> None:
    for response in _three_ways(api, field, value):
        assert response.status_code == 422, response.text
        assert len(_fields(response)) == 1 and _fields(response)[0].endswith(
            field.split(".")[1] + ("" if "columnar" not in str(response.url) else ".0")
        ), response.text


def test_whole_numbers_are_integers_in_any_json_spelling(api: dict[str, Any]) -> None:
    """JSON Schema's integer is a whole number however written: 3.0 and 3 are one value."""
    as_int, as_float = (
        _three_ways(api, "context.recent_lenders_90d", v) for v in (3, 3.0)
    )  # fmt: skip
    for a, b in zip(as_int, as_float, strict=True):
        assert a.status_code == b.status_code == 200, b.text


def _texts(response: httpx.Response) -> str:
    d = response.json()
    if "decisions" in d and isinstance(d["decisions"], list):
        d = d["decisions"][0]
    reasons = d.get("reasons") or d.get("reason_table")
    return " ".join(r["text"] for r in reasons)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_reasons_name_the_models_level_never_the_applicants_text(
    api: dict[str, Any], language: str
) -> None:
    body = copy.deepcopy(api["example"])
    body["applicant"].update(urban_rural=XSS, state="ZZ")
    single = _post(api, "/v1/decisions", {**body, "language": language})
    rows = _post(api, "/v1/decisions:batch", {"applications": [body], "language": language})
    columns = _post(api, "/v1/decisions:columnar?expand=true", {
        "columns": {k: [v] for k, v in body["applicant"].items()}, "language": language,
    })  # fmt: skip
    other = {"en": "other", "zh": "其他"}[language]
    for response in (single, rows, columns):
        assert response.status_code == 200, response.text
        texts = _texts(response)
        assert "<" not in texts and "img" not in texts and "ZZ" not in texts, texts
        assert other in texts
    d = single.json()
    assert d["decision"] == "refer"  # unseen values still refer (issue 18)
    outside = [r for r in d["reasons"] if r["code"] == "OUTSIDE_TRAINING_DATA"]
    assert {r["feature"] for r in outside} == {"urban_rural", "state"}
    assert d["unseen_values"] == {"urban_rural": XSS, "state": "ZZ"}  # data, not text


def test_a_known_level_with_markup_is_escaped() -> None:
    """Even a level the model knows is escaped where a reason names it."""
    from jointcredit.service.policy import reason_value

    assert reason_value("R&D <b>") == "R&amp;D &lt;b&gt;"


@pytest.mark.parametrize(
    ("change", "field"),
    [(lambda b: b.update(reference="x" * 129), "reference"),
     (lambda b: b.update(reference="line\nbreak"), "reference"),
     (lambda b: b.update(reference="rtl\u202eoverride"), "reference"),
     (lambda b: b["applicant"].update(state="C\x00A"), "applicant.state"),
     (lambda b: b["applicant"].update(state="x" * 129), "applicant.state"),
     (lambda b: b["context"].update(recent_lenders_90d=None, online_activity_share=None),
      None),
     (lambda b: b.update(joint=dict(JOINT, participating_lenders=["bank a"])),
      "joint.participating_lenders.0"),
     (lambda b: b.update(joint=dict(JOINT, participating_lenders=["<script>"])),
      "joint.participating_lenders.0"),
     (lambda b: b.update(joint=dict(JOINT, participating_lenders=["b" * 129])),
      "joint.participating_lenders.0"),
     (lambda b: b.update(joint=dict(JOINT, applicant_id="TIN\r\n1")), "joint.applicant_id"),
     (lambda b: b.update(joint=dict(JOINT, annual_income="420000")), "joint.annual_income"),
     (lambda b: b.update(joint=dict(JOINT, annual_income=True)), "joint.annual_income")],
)  # fmt: skip
def test_free_texts_and_lender_names_are_bounded_and_printable(
    api: dict[str, Any], change: Any, field: str | None
) -> None:
    body = copy.deepcopy(api["example"])
    body["context"] = dict(body.get("context") or {})
    change(body)
    response = _post(api, "/v1/decisions", body)
    if field is None:  # the control: nulls in context are "not sent"
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 422, response.text
    assert _fields(response) == [field], response.text


JOINT = {"applicant_id": "TIN-12-3456789", "annual_income": 420000,
         "monthly_debt_payments": 6500, "participating_lenders": ["bank-a", "bank-b"]}  # fmt: skip


def test_review_notes_may_break_lines_but_not_hide_text(api: dict[str, Any]) -> None:
    for note, status in (("line one\nline two", 404), ("hidden\u200bword", 422),
                         ("bell\x07", 422)):  # fmt: skip
        response = _post(
            api,
            "/v1/reviews/" + "0" * 32,
            {"final_decision": "approve", "reviewer": "officer-1", "note": note},
        )
        assert response.status_code == status, (note, response.text)


def test_a_review_body_that_is_not_json_is_the_documented_422(api: dict[str, Any]) -> None:
    """FastAPI's own body parsing answered an undocumented 400 to bytes that are not UTF-8."""
    response: httpx.Response = api["client"].post(
        "/v1/reviews/" + "0" * 32, content=b'm\xe0o"\xdf\xb1\x07',
        headers={**api["headers"], "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert _fields(response) == ["body"]


@pytest.mark.parametrize("limit", [" 1", "1_000", "1.0", "+1", "1" * 17])
def test_the_review_queue_limit_is_an_integer_in_digits(api: dict[str, Any], limit: str) -> None:
    response = api["client"].get("/v1/reviews", params={"limit": limit}, headers=api["headers"])
    assert response.status_code == 422, response.text


def test_a_review_queue_limit_out_of_range_is_clamped(api: dict[str, Any]) -> None:
    # One read: the queue is an expensive read, limited per API key (items 12-13).
    assert api["client"].get("/v1/reviews?limit=5000", headers=api["headers"]).status_code == 200


@pytest.mark.parametrize(
    "name", ["bank-a", "B.2_x", "a" * 128, "a" * 129, "bank a", "-bank", "bänk", ""]
)
def test_lender_names_follow_the_institution_id_rule(name: str) -> None:
    import re

    from jointcredit.service.fields import INSTITUTION_ID
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import check_institution_id

    try:
        check_institution_id(name)
        trusted = True
    except TrustError:
        trusted = False
    assert (re.fullmatch(INSTITUTION_ID, name) is not None) == trusted
