"""Attack: cache thrash (issue 19, item 12). Cycling `GET /v1/decisions/{id}` over more
columnar batches than the record cache holds made every read parse a whole batch record on
the event loop (134-213 ms per GET for 10,000-applicant batches), and two such clients raised
everyone else's median latency from 3.6 ms to 435 ms. Reads of stored records now run in
worker threads, and each API key may make only a few expensive reads (429 with Retry-After
beyond), so another key is still served. The latency figures are in docs/SECURITY.md
(scripts/attack_reads.py); these tests check the mechanisms, not timings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service
from jointcredit.service.records import BATCHES_KEPT

pytestmark = pytest.mark.integration

ROWS = 50


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Batches of the attacker's (more than the cache holds) and one of the other client's."""
    root = tmp_path_factory.mktemp("thrash")
    keys = root / "keys.json"
    attacker, other = new_key(keys, "bank-a"), new_key(keys, "bank-b")
    service = load_service(signed_artifact(root), root / "trust.json", api_keys=keys,
                           db_url=f"sqlite:///{root / 'audit.sqlite'}")  # fmt: skip
    with TestClient(create_app(service)) as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        example = schemas["ColumnarDecisionRequest"]["examples"][0]
        body = {"columns": {k: (v * ROWS)[:ROWS] for k, v in example["columns"].items()}}

        def batch(key: str) -> str:
            r = client.post("/v1/decisions:columnar", json=body, headers=_h(key))
            assert r.status_code == 200, r.text
            first: str = r.json()["decisions"]["decision_id"][0]
            return first

        yield {
            "client": client, "service": service, "attacker": attacker, "other": other,
            "ids": [batch(attacker) for _ in range(BATCHES_KEPT + 2)], "own": batch(other),
            "single": schemas["DecisionRequest"]["examples"][0],
        }  # fmt: skip


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_record_read_does_not_block_the_event_loop(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one read waits on the database, a cheap request is answered."""
    client, audit = served["client"], served["service"].audit
    gate, order = threading.Event(), []
    entry = audit.entry

    def slow_entry(kind: str, decision_id: str) -> Any:
        order.append("read started")
        gate.wait(10)
        order.append("read finished")
        return entry(kind, decision_id)

    monkeypatch.setattr(audit, "entry", slow_entry)
    time.sleep(1.5)  # a fresh allowance for the attacker's key (earlier tests used it)
    reader = threading.Thread(
        target=lambda: order.append(
            client.get(f"/v1/decisions/{served['ids'][-1]}", headers=_h(served["attacker"]))
        )
    )
    reader.start()
    deadline = time.monotonic() + 10
    while "read started" not in order and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/healthz").status_code == 200
    order.append("healthz answered")
    gate.set()
    reader.join(20)
    assert order[:3] == ["read started", "healthz answered", "read finished"]
    assert order[3].status_code == 200


def test_one_key_cycling_through_batches_is_limited_and_others_are_served(
    served: dict[str, Any],
) -> None:
    client, ids = served["client"], served["ids"]
    statuses, retry = [], []
    for k in range(3 * len(ids)):  # each read misses the cache: it holds fewer batches
        r = client.get(f"/v1/decisions/{ids[k % len(ids)]}", headers=_h(served["attacker"]))
        statuses.append(r.status_code)
        if r.status_code == 429:
            retry.append(r.headers["Retry-After"])
        # Meanwhile another key's expensive reads and decisions are answered.
        if k % 10 == 5:
            mine = client.get(f"/v1/decisions/{served['own']}", headers=_h(served["other"]))
            assert mine.status_code == 200, mine.text
            one = client.post("/v1/decisions", json=served["single"], headers=_h(served["other"]))
            assert one.status_code == 200, one.text
    assert set(statuses) <= {200, 429} and statuses.count(429) >= len(ids), statuses
    assert all(r.isdigit() and 1 <= int(r) <= 60 for r in retry)
    time.sleep(int(max(retry)) + 0.5)
    r = client.get(f"/v1/decisions/{ids[0]}", headers=_h(served["attacker"]))
    assert r.status_code == 200  # the allowance comes back


def test_reads_of_a_cached_batch_are_not_limited(served: dict[str, Any]) -> None:
    """The review queue and progress queries read several decisions of one batch: after the
    first read, those are cheap and not counted."""
    client, token = served["client"], served["other"]
    time.sleep(1.5)
    first = served["own"]
    token_id = first.rpartition("-")[0]
    for row in range(ROWS):
        r = client.get(f"/v1/decisions/{token_id}-{row}", headers=_h(token))
        assert r.status_code == 200, (row, r.text)
