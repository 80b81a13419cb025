"""`jointcredit serve` as real processes: one smoke test of the whole command (start-up,
uvicorn, a decision over the network, shutdown) and two worker processes sharing one audit
chain. Everything else about the API runs in process (tests/test_service.py)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from service_helpers import audit_verify, serve_announced, signed_artifact, wait_ready

from jointcredit.service.auth import new_key
from jointcredit.service.schemas import DecisionOut

pytestmark = pytest.mark.e2e


def _decide(base: str, key: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.post(f"{base}/v1/decisions", content=body, headers=headers, timeout=30)


def test_serve_answers_a_decision_over_the_network(tmp_path: Path) -> None:
    model_dir = signed_artifact(tmp_path)
    key = new_key(tmp_path / "keys.json", "bank-a")
    db = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    # Port 0: the kernel picks one, and serve says which (as it does for any port).
    proc, base = serve_announced(
        ["--model", str(model_dir), "--trust", str(tmp_path / "trust.json"),
         "--api-keys", str(tmp_path / "keys.json"), "--db", db]
    )  # fmt: skip
    assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
    try:
        wait_ready(base, proc)
        spec = httpx.get(f"{base}/openapi.json").json()
        example = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
        r = _decide(base, key, json.dumps(example).encode())
        assert r.status_code == 200, r.text
        DecisionOut.model_validate(r.json(), strict=True)
        assert _decide(base, "jck_000000000000_wrong", b"{}").status_code == 401
        assert "jointcredit_decisions_total" in httpx.get(f"{base}/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ok = audit_verify(db)  # the decision is in the log, and the log verifies
    assert ok.exit_code == 0 and "1 entries" in ok.stdout, ok.stdout + ok.stderr


def test_two_workers_share_one_audit_chain(tmp_path: Path) -> None:
    model_dir = signed_artifact(tmp_path)
    key = new_key(tmp_path / "keys.json", "bank-a")
    db = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    proc, base = serve_announced(
        ["--model", str(model_dir), "--trust", str(tmp_path / "trust.json"), "--api-keys",
         str(tmp_path / "keys.json"), "--db", db, "--workers", "2"]
    )  # fmt: skip
    try:
        wait_ready(base, proc)
        spec = httpx.get(f"{base}/openapi.json").json()
        body = json.dumps(spec["components"]["schemas"]["DecisionRequest"]["examples"][0])
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: _decide(base, key, body.encode()).status_code,
                                  range(60)))  # fmt: skip
        assert codes == [200] * 60
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ok = audit_verify(db)
    assert ok.exit_code == 0 and "60" in ok.stdout, ok.stdout + ok.stderr
