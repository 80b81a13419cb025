"""Attack: audit truncation (issue 19, item 5). Deleting the newest rows and rewinding
`chain_head` with one UPDATE, or emptying all three tables, verified as OK. The service now
signs the chain head every N entries (and at shutdown) into an anchors file outside the
database; `audit verify --anchors` detects truncation or rewriting before the latest anchor."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

pytestmark = pytest.mark.integration


@pytest.fixture
def decided(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """12 decisions through the service, anchored every 5 log entries and at shutdown."""
    key = new_key(tmp_path / "keys.json", "bank-a")
    db = tmp_path / "audit.sqlite"
    service = load_service(signed_artifact(tmp_path), tmp_path / "trust.json",
                           api_keys=tmp_path / "keys.json", db_url=f"sqlite:///{db}",
                           anchor_every=5)  # fmt: skip
    with TestClient(create_app(service)) as client:
        body = client.get("/openapi.json").json()["components"]["schemas"]["DecisionRequest"]
        for i in range(12):
            request = {**body["examples"][0], "reference": f"app-{i}"}
            r = client.post("/v1/decisions", json=request,
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 200, r.text
    yield {"db": db, "anchors": tmp_path / "decisions.anchors.jsonl",
           "pub": tmp_path / "audit-anchor.key.pub"}  # fmt: skip


def _verify(d: dict[str, Any], anchored: bool = True) -> tuple[int, str]:
    args = ["audit", "verify", "--db", f"sqlite:///{d['db']}"]
    if anchored:
        args += ["--anchors", str(d["anchors"]), "--anchor-public-key", str(d["pub"])]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_an_intact_log_verifies_against_its_anchors(decided: dict[str, Any]) -> None:
    anchored = [json.loads(x)["seq"] for x in decided["anchors"].read_text().splitlines()]
    assert anchored == [1, 6, 11, 12]  # the first commit, every 5 entries, the shutdown
    code, out = _verify(decided)
    assert code == 0 and "anchors:" in out and "OK: 12 entries" in out


def _sql(d: dict[str, Any], *statements: str) -> None:
    con = sqlite3.connect(d["db"])
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def test_deleting_the_newest_rows_and_rewinding_the_head_is_detected(
    decided: dict[str, Any],
) -> None:
    con = sqlite3.connect(decided["db"])
    (h9,) = con.execute("SELECT hash FROM audit_log WHERE seq = 9").fetchone()
    con.close()
    _sql(decided, "DELETE FROM decisions WHERE last_seq > 9", "DELETE FROM audit_log WHERE seq > 9",
         f"UPDATE chain_head SET seq = 9, hash = '{h9}'")  # fmt: skip
    assert _verify(decided, anchored=False)[0] == 0  # the chain alone cannot tell
    code, out = _verify(decided)
    assert code == 1 and "row 11" in out and "missing" in out


def test_emptying_every_table_is_detected(decided: dict[str, Any]) -> None:
    _sql(decided, "DELETE FROM decisions", "DELETE FROM audit_log", "DELETE FROM chain_head")
    assert "OK: 0 entries" in _verify(decided, anchored=False)[1]  # the chain alone: fine
    code, out = _verify(decided)
    assert code == 1 and "missing" in out


def test_a_forged_anchor_is_refused(decided: dict[str, Any]) -> None:
    lines = [json.loads(x) for x in decided["anchors"].read_text().splitlines()]
    lines[-1]["seq"] = 5  # an anchor moved to an earlier row, say to hide later ones
    decided["anchors"].write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out = _verify(decided)
    assert code == 1 and "signature does not verify" in out
