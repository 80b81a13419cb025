"""The service and the CLI serve a model trained on other data than the SBA loans (here the
synthetic institutions) with the shipped default policy: its rules on fields this model does
not have (`sector`, `state`) are not evaluated and say so, in every decision, its audit record
and the CLI's output; the other rules still decide. Over HTTP in process (TestClient) and the
CLI in process (CliRunner)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.models.artifact import load_artifact
from jointcredit.service.app import create_app
from jointcredit.service.applicants import sample
from jointcredit.service.auth import new_key
from jointcredit.service.loader import StartupError, load_service
from jointcredit.service.policy import DEFAULT_POLICY
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration

ABSENT = {"HIGH_RISK_INDUSTRY", "REGION_HIGH_LOSS"}  # on `sector` and `state`


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    signed_artifact(root, dataset="synthetic")
    new_key(root / "keys.json", "bank-a")
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    token = new_key(root / "keys.json", "bank-b")
    service = load_service(
        root / "model", root / "trust.json", api_keys=root / "keys.json",
        db_url=f"sqlite:///{root / 'audit.sqlite'}",
    )  # fmt: skip
    assert service.decider.rules.absent == {"HIGH_RISK_INDUSTRY": ["sector"],
                                            "REGION_HIGH_LOSS": ["state"]}  # fmt: skip
    with TestClient(create_app(service)) as c:
        yield c, {"Authorization": f"Bearer {token}"}


def _example(c: TestClient) -> dict[str, Any]:
    schemas = c.get("/openapi.json").json()["components"]["schemas"]
    example: dict[str, Any] = schemas["DecisionRequest"]["examples"][0]
    return example


def test_the_default_policy_serves_a_model_of_other_data(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, headers = client
    body = _example(c)
    assert "bureau_score" in body["applicant"] and "sector" not in body["applicant"]
    d = c.post("/v1/decisions", json=body, headers=headers).json()
    assert set(d["rules_not_evaluated"]) >= ABSENT, d
    assert not ABSENT & {f["code"] for f in d["policy_flags"]}
    # What the audit keeps says so too.
    stored = c.get(f"/v1/decisions/{d['decision_id']}", headers=headers).json()["response"]
    assert set(stored["rules_not_evaluated"]) >= ABSENT
    # Rules on the context still decide; the model's reasons fall back to generic texts that
    # say which way they pushed.
    body["context"] = {"recent_lenders_90d": 6}
    declined = c.post("/v1/decisions", json=body, headers=headers).json()
    assert declined["decision"] == "decline"
    assert declined["reasons"][0]["code"] == "MANY_RECENT_LENDERS"
    assert "MANY_RECENT_LENDERS" not in declined["rules_not_evaluated"]
    for r in declined["reasons"][1:]:
        assert r["direction"] == "toward_default" and r["text"].endswith(
            "raised the estimated risk"
        )
    columnar = {
        "columns": {k: [v, v] for k, v in body["applicant"].items()},
        "context": {"recent_lenders_90d": [6, None]},
    }
    out = c.post("/v1/decisions:columnar?expand=true", json=columnar, headers=headers).json()
    assert out["decisions"]["decision"][0] == "decline"
    assert all(set(codes) >= ABSENT for codes in out["decisions"]["rules_not_evaluated"])


def test_a_policy_that_asks_for_it_still_refuses_fields_the_model_lacks(
    root: Path, tmp_path: Path
) -> None:
    """`absent_fields = "error"` (a policy's default when it does not say) keeps refusing a rule
    on a field that is neither a feature nor a context signal, naming it: at start-up and in
    `decide` (exit 2)."""
    strict = tmp_path / "strict.toml"
    text = DEFAULT_POLICY.read_text().replace('absent_fields = "not_evaluated"', "")
    assert "absent_fields" not in tomllib.loads(text)
    strict.write_text(text)
    with pytest.raises(StartupError, match="rule HIGH_RISK_INDUSTRY: sector is neither"):
        load_service(
            root / "model", root / "trust.json", policy_file=strict,
            api_keys=root / "keys.json", db_url=f"sqlite:///{tmp_path / 'a.sqlite'}",
        )  # fmt: skip
    code, _, err = _cli("decide", str(root / "model"), "--policy", str(strict))
    assert code == 2 and "HIGH_RISK_INDUSTRY" in err and "sector" in err


def _cli(*args: str) -> tuple[int, str, str]:
    from jointcredit.cli.main import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_score_and_decide_draw_applicants_from_the_models_own_schema(root: Path) -> None:
    code, out, err = _cli("score", str(root / "model"), "--sample", "4")
    assert code == 0, err
    assert "bureau_score" in out and "gross_approved" not in out
    code, out, err = _cli("decide", str(root / "model"), "--sample", "4")
    assert code == 0, err
    assert "Eligibility decisions" in out and "bureau_score" in out
    assert "HIGH_RISK_INDUSTRY: this model has no sector" in out
    assert "REGION_HIGH_LOSS: this model has no state" in out
    assert "MANY_RECENT_LENDERS: context not given (recent_lenders_90d)" in out


def test_drawn_applicants_are_valid_and_inside_what_the_model_knows(root: Path) -> None:
    model = load_artifact(root / "model", load_store(root / "trust.json"))
    drawn = sample(model.spec, model.card.data_schema.features, 300, seed=3)
    from jointcredit.service.coverage import Coverage
    from jointcredit.service.policy import OutsideTraining

    coverage = Coverage(model.spec, model.card.data_schema.features, OutsideTraining())
    columns = {f: [a[f] for a in drawn] for f in drawn[0]}
    unseen, beyond = coverage.many(columns, len(drawn))
    assert not any(unseen) and not any(beyond)
    assert list(drawn[0]) == [f.name for f in model.spec.features]
    assert len({a["bureau_score"] for a in drawn}) > 100  # drawn, not one typical applicant
    assert sample(model.spec, model.card.data_schema.features, 300, seed=3) == drawn


def test_decide_and_score_read_applicants_from_a_file(root: Path, tmp_path: Path) -> None:
    model = load_artifact(root / "model", load_store(root / "trust.json"))
    drawn = sample(model.spec, model.card.data_schema.features, 3, seed=9)
    drawn[2]["region"] = "atlantis"  # a region the federation never reported
    good = tmp_path / "applicants.csv"
    pd.DataFrame(drawn).to_csv(good, index=False)
    code, out, err = _cli("decide", str(root / "model"), "--input", str(good))
    assert code == 0, err
    assert "did not occur in the lenders' training data" in out and "refer" in out
    code, out, err = _cli("score", str(root / "model"), "--input", str(good))
    assert code == 0 and "region" in out, err
    bad = tmp_path / "bad.csv"
    pd.DataFrame(drawn).drop(columns=["bureau_score"]).to_csv(bad, index=False)
    for command in ("decide", "score"):
        code, _, err = _cli(command, str(root / "model"), "--input", str(bad))
        assert code == 2 and "bureau_score" in err, (command, err)


def test_score_and_decide_json_carry_the_tables_facts(root: Path) -> None:
    import json

    from jointcredit.service.schemas import DecisionOut

    code, out, err = _cli("score", str(root / "model"), "--sample", "3", "--json")
    assert code == 0, err
    scored = json.loads(out)  # stdout holds the document and nothing else
    assert [a["index"] for a in scored["applicants"]] == [0, 1, 2]
    assert all(350 <= a["score"] <= 950 and 0 < a["probability_of_default"] < 1
               for a in scored["applicants"])  # fmt: skip
    assert scored["model"]["kind"] == "logreg"
    code, out, err = _cli("decide", str(root / "model"), "--sample", "3", "--json")
    assert code == 0, err
    decided = json.loads(out)
    for d in decided["decisions"]:
        DecisionOut.model_validate({k: v for k, v in d.items() if k != "applicant"})
        assert set(d["applicant"]) >= {"bureau_score"}
        assert set(d["rules_not_evaluated"]) >= ABSENT
    assert any("this model has no sector" in n for n in decided["notes"])


def test_tables_cut_nothing_at_80_columns(root: Path) -> None:
    from jointcredit.cli.main import app

    result = CliRunner().invoke(app, ["score", str(root / "model"), "--sample", "2"],
                                env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "…" not in result.stdout  # wrapped, never cut
