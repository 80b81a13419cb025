"""What a notice read costs (`GET /v1/decisions/{id}/notice`, docs/GOVERNANCE.md): the median
time of the notice use case, in process, for a single decision in its own language and told
again in the other, and for a decision of a row batch and of a columnar batch told again (the
row batch's record found by searching the chained rows), with `--batches` row batches of
`--size` applicants in the log.

Usage: python scripts/bench_notice.py [--batches 50] [--size 200] [--reads 30]
Needs the tests' helpers (a signed model trained in a few seconds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fastapi.testclient import TestClient
from service_helpers import Api, signed_artifact

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service


def _median_ms(call: Callable[[], Any], reads: int) -> float:
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--reads", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    signed_artifact(root)
    token = new_key(root / "keys.json", "bank-a")
    service = load_service(root / "model", root / "trust.json", api_keys=root / "keys.json",
                           db_url=f"sqlite:///{root / 'audit.sqlite'}")  # fmt: skip
    with TestClient(create_app(service)) as client:
        api = Api(client, token, service)
        notices = client.app.state.notices  # type: ignore[attr-defined]
        one = api.post("/v1/decisions", api.example).json()["decision_id"]
        rows = [api.example] * args.size
        batch_ids = []
        for _ in range(args.batches):
            out = api.post("/v1/decisions:batch", {"applications": rows}).json()
            batch_ids.append(out["decisions"][args.size // 2]["decision_id"])
        columns = {k: [v] * args.size for k, v in api.example["applicant"].items()}
        col = api.post("/v1/decisions:columnar", {"columns": columns}).json()
        col_id = col["decisions"]["decision_id"][args.size // 2]
        cases = {
            "single, its own language": (one, "en"),
            "single, told again in Chinese": (one, "zh"),
            "row batch (the first written), told again": (batch_ids[0], "zh"),
            "row batch (the last written), told again": (batch_ids[-1], "zh"),
            "columnar batch (record in memory), told again": (col_id, "zh"),
        }
        print(f"{args.batches} row batches of {args.size} in the log; median of {args.reads}")
        for name, (decision_id, lang) in cases.items():

            def read(d: str = decision_id, la: str = lang) -> Any:
                return notices._notice(d, "bank-a", la, True)

            print(f"| {name} | {_median_ms(read, args.reads):.2f} ms |")


if __name__ == "__main__":
    main()
