"""The three worked examples in docs/EXAMPLES.md keep their outcomes: the same cases, selected
the same way (scripts/worked_examples.py), from a freshly trained signed scorecard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from worked_examples import decide_cases


@pytest.mark.integration
def test_worked_examples_keep_their_decisions_and_reasons(tmp_path: Path) -> None:
    model_dir = signed_artifact(tmp_path)
    token = new_key(tmp_path / "keys.json", "bank-a")
    service = load_service(
        model_dir, tmp_path / "trust.json", api_keys=tmp_path / "keys.json",
        db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}",
    )  # fmt: skip
    test = load_federation(DataConfig(dataset="sba")).pooled_test().x
    with TestClient(create_app(service)) as client:
        results = decide_cases(
            client, {"Authorization": f"Bearer {token}"}, test, service.decider.model.score(test)
        )
    expected = [
        ("decline", "HIGH_FREQUENCY_SMALL_TRANSACTIONS", 615),
        ("decline", "HIGH_RISK_INDUSTRY", 650),
        ("refer", "THIN_FILE_OFFLINE", 680),
    ]
    for (case, body, response), (decision, code, target) in zip(results, expected, strict=True):
        assert response["decision"] == decision, (case["title"], response)
        assert response["reasons"][0]["code"] == code, (case["title"], response["reasons"])
        assert abs(response["score"] - target) <= 15, (case["title"], response["score"])
        assert body["applicant"]["sector"] in case["sectors"]
