"""The OpenAPI page is written for the API's users: a summary per operation in words (not the
function's name), every error a route sends declared with its body, a request example that is
a realistic applicant the shipped-sample model approves with every policy rule evaluated, the
decision it really gets as the response example, and no source-file path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.examples import SBA_APPLICANT
from jointcredit.service.exposure_http import institution_app
from jointcredit.service.loader import load_service
from jointcredit.service.schemas import DecisionOut

pytestmark = pytest.mark.integration

# A path to a source file (service/errors.py, routers/decisions.py) or a module's file name.
SOURCE_PATH = re.compile(r"[\w.-]+/[\w/.-]*\.py\b|\b\w+\.py\b")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    root = tmp_path_factory.mktemp("openapi")
    model_dir = signed_artifact(root)  # the shipped SBA sample's lenders
    keys = root / "api-keys.json"
    key = new_key(keys, "bank-a")
    service = load_service(
        model_dir, root / "trust.json", api_keys=keys, db_url=f"sqlite:///{root / 'a.sqlite'}"
    )
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield client, key


@pytest.fixture(scope="module")
def spec(served: tuple[TestClient, str]) -> dict[str, Any]:
    document: dict[str, Any] = served[0].get("/openapi.json").json()
    return document


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def test_every_operation_has_a_summary_in_words(spec: dict[str, Any]) -> None:
    for name, op in _operations(spec):
        summary = op.get("summary", "")
        assert summary and " " in summary, name
        # FastAPI's own when none is given: the function's name in title case ("Decide One").
        generated = " ".join(w.capitalize() for w in op["operationId"].split("_v1_")[0].split("_"))
        assert summary != generated, f"{name}: FastAPI's generated summary {summary!r}"
        assert op.get("description"), f"{name}: no description"
        assert op["responses"]["200"]["description"] != "Successful Response", name


def test_every_error_response_has_its_body(spec: dict[str, Any]) -> None:
    for name, op in _operations(spec):
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema.get("$ref", "").startswith("#/components/schemas/"), (name, code)
        assert "500" in op["responses"], name


def test_no_source_file_paths_in_the_texts(served: tuple[TestClient, str]) -> None:
    text = served[0].get("/openapi.json").text
    assert not SOURCE_PATH.findall(text), SOURCE_PATH.findall(text)
    assert SOURCE_PATH.search("read service/errors.py") and SOURCE_PATH.search("in app.py")


def test_the_exposure_endpoint_page_too() -> None:
    class _Institution:  # the page needs no ledger
        institution = "bank-a"

    app = institution_app(_Institution(), b"k" * 32)  # type: ignore[arg-type]
    text = json.dumps(app.openapi())
    assert not SOURCE_PATH.findall(text), SOURCE_PATH.findall(text)
    share = app.openapi()["paths"]["/v1/exposure/share"]["post"]
    assert share["summary"] != "Share" and " " in share["summary"]
    assert {"401", "409", "413", "422"} <= set(share["responses"])


def test_the_request_example_is_a_real_applicant_that_is_approved(
    served: tuple[TestClient, str], spec: dict[str, Any]
) -> None:
    """Posted as documented: approved, every rule evaluated, nothing outside training."""
    client, key = served
    example = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
    assert example["applicant"] == SBA_APPLICANT
    r = client.post("/v1/decisions", json=example, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["decision"] == "approve" and got["probability_of_default"] < 0.05
    assert got["rules_not_evaluated"] == [] and got["policy_flags"] == []
    assert got["unseen_values"] == {} and got["out_of_range"] == {}


def test_the_response_example_is_the_decision_the_example_gets(
    served: tuple[TestClient, str], spec: dict[str, Any]
) -> None:
    client, key = served
    op = spec["paths"]["/v1/decisions"]["post"]
    documented = op["responses"]["200"]["content"]["application/json"]["example"]
    DecisionOut.model_validate(documented, strict=True)
    example = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
    r = client.post("/v1/decisions", json=example, headers={"Authorization": f"Bearer {key}"})
    got = r.json()
    for field in ("decision_id", "created_at"):  # each decision's own
        documented.pop(field), got.pop(field)
    assert documented == got
