"""Hostile-value fuzzing of the three decision endpoints, in process (issue 19, item 8): the
OpenAPI example with one to three fields (features, context signals, the joint request, top-level
fields) replaced by hostile values (integers beyond 64 bits and beyond JSON's exact range,
booleans for numbers, numeric strings, markup, control and invisible characters, lone
surrogates, over-long texts, containers), sent as a single decision, a batch of rows and a
batch of columns in turn. Prints the status counts; exits 1 on any 5xx.

    .venv/bin/python tests/attacks/fuzz_decisions.py [REQUESTS] [SEED]

`fuzz` takes any httpx client: `scripts/attack.py` sends the same requests to a real
`jointcredit serve` over loopback.
"""

from __future__ import annotations

import collections
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

HOSTILE: list[Any] = [
    2**64, -(2**64), 2**63, 2**53, 2**53 - 1, 10**400, -0.0, 1e308, 1e-320, True, False, None,
    "", " ", " 7e4 ", "NaN", "Infinity", "<img src=x onerror=alert(1)>", "\u202e", "\x00",
    "a" * 129, "a" * 100_000, "ZZ", "\ud800", [], {}, [1], {"a": 1}, "😀" * 50, 0, -1, 1.5,
    60.0, "60", 2.0**64,
]  # fmt: skip
JOINT = {"applicant_id": "TIN-1", "annual_income": 420000, "monthly_debt_payments": 6500,
         "participating_lenders": ["bank-a"]}  # fmt: skip
CONTEXT = ["recent_lenders_90d", "transactions_30d", "median_transaction_amount",
           "online_activity_share", "unknown"]  # fmt: skip


def mutate(example: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    body = copy.deepcopy(example)
    body["context"] = {}
    for _ in range(rng.randint(1, 3)):
        value = copy.deepcopy(rng.choice(HOSTILE))
        where = rng.choice(["applicant", "context", "top", "joint"])
        if where == "applicant":
            body["applicant"][rng.choice(list(body["applicant"]))] = value
        elif where == "context":
            if not isinstance(body["context"], dict):
                body["context"] = {}
            body["context"][rng.choice(CONTEXT)] = value
        elif where == "joint":
            body["joint"] = {**JOINT, rng.choice(list(JOINT)): value}
        else:
            body[rng.choice(["reference", "stance", "language", "context"])] = value
    return body


def request(k: int, body: dict[str, Any], example: dict[str, Any]) -> tuple[str, Any]:
    """The k-th request's endpoint and body: single, rows and columns in turn."""
    if k % 3 == 0:
        return "/v1/decisions", body
    if k % 3 == 1:
        return "/v1/decisions:batch", {"applications": [body, example]}
    columns: dict[str, Any] = {
        "columns": {f: [v, example["applicant"][f]] for f, v in body["applicant"].items()}
    }
    if isinstance(body.get("context"), dict) and body["context"]:
        columns["context"] = {c: [v, None] for c, v in body["context"].items()}
    return "/v1/decisions:columnar", columns


DROPPED = 0  # the status counted for a request whose connection broke without an answer
SHOWN = 20  # 5xx and dropped requests printed, of each


def fuzz(
    client: httpx.Client, headers: dict[str, str], requests: int, seed: int,
    deadline: float | None = None,
) -> collections.Counter[int]:  # fmt: skip
    """Status counts of `requests` hostile requests (fewer if time.monotonic() passes
    `deadline`); the first SHOWN 5xx and dropped connections (counted as status 0) are
    printed."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    example = schemas["DecisionRequest"]["examples"][0]
    rng = random.Random(seed)
    statuses: collections.Counter[int] = collections.Counter()
    for k in range(requests):
        if deadline is not None and time.monotonic() > deadline:
            break
        path, body = request(k, mutate(example, rng), example)
        raw = json.dumps(body).encode("utf-8", "surrogatepass")
        try:
            response = client.post(
                path, content=raw, headers={**headers, "Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            statuses[DROPPED] += 1
            if statuses[DROPPED] <= SHOWN:
                print(f"dropped ({type(exc).__name__}) {path} {raw[:300]!r}")
            continue
        statuses[response.status_code] += 1
        if response.status_code >= 500 and sum(n for c, n in statuses.items() if c >= 500) <= SHOWN:
            print(f"{response.status_code} {path} {raw[:300]!r}")
    return statuses


def main(requests: int, seed: int) -> int:
    root = Path(tempfile.mkdtemp(prefix="fuzz-decisions-"))
    key = new_key(root / "keys.json", "bank-a")
    service = load_service(signed_artifact(root), root / "trust.json",
                           api_keys=root / "keys.json",
                           db_url=f"sqlite:///{root / 'audit.sqlite'}")  # fmt: skip
    start = time.perf_counter()
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        statuses = fuzz(client, {"Authorization": f"Bearer {key}"}, requests, seed)
    server_errors = sum(n for s, n in statuses.items() if s >= 500 or s == DROPPED)
    print(f"{requests} requests, {server_errors} 5xx, {time.perf_counter() - start:.0f} s: "
          f"{dict(sorted(statuses.items()))}")  # fmt: skip
    return 1 if server_errors else 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    sys.exit(main(*(args + [10_000, 7][len(args) :])))
