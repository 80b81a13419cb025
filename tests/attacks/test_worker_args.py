"""Found by `make attack` (issue 19): `serve --workers 2 --anchor-key K` never became ready.
Its workers rebuilt the start-up arguments from the environment and turned back into paths
only the arguments listed by name, which did not include the anchor key and anchors file added
for item 5: every worker died on `str.exists` and uvicorn kept restarting them. Which arguments
are paths now travels with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.service import workers
from jointcredit.service.auth import new_key

pytestmark = pytest.mark.integration


def test_a_worker_gets_every_path_argument_back_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = signed_artifact(tmp_path)
    token = new_key(tmp_path / "keys.json", "bank-a")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv(workers.ENV, raising=False)
    workers.export_args({
        "model_dir": model, "trust_file": tmp_path / "trust.json",
        "api_keys": tmp_path / "keys.json", "db_url": f"sqlite:///{tmp_path / 'audit.sqlite'}",
        "anchors_file": elsewhere / "anchors.jsonl", "anchor_key": elsewhere / "anchor.key",
        "anchor_every": 1, "max_body": 2**20,
    })  # fmt: skip
    with TestClient(workers.app_from_env()) as client:
        example = client.get("/openapi.json").json()["components"]["schemas"]
        body = example["DecisionRequest"]["examples"][0]
        r = client.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    anchors = [json.loads(x) for x in (elsewhere / "anchors.jsonl").read_text().splitlines()]
    assert anchors and anchors[-1]["seq"] == 1
    assert (elsewhere / "anchor.key.pub").is_file()
    assert not (tmp_path / "audit-anchor.key").exists()  # not the default beside the run
