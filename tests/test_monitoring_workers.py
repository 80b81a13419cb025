"""`serve --workers 2` as real processes: `/metrics` adds up both workers' counts
(prometheus_client's multiprocess mode; before it each worker answered with its own), and the
stability window holds the applicants every worker decided."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from service_helpers import free_port, serve_process, signed_artifact, wait_ready

from jointcredit.service.auth import new_key
from jointcredit.service.metrics import MULTIPROC_ENV

pytestmark = pytest.mark.e2e

DECISIONS = 80
COUNTED = re.compile(r"^jointcredit_decisions_total\{decision=\"\w+\"\} (\S+)$", re.MULTILINE)


def _decided(text: str) -> float:
    return sum(float(v) for v in COUNTED.findall(text))


def test_two_workers_count_together_and_share_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = signed_artifact(tmp_path, reference=True)
    key = new_key(tmp_path / "keys.json", "bank-a")
    shared = tmp_path / "metrics"  # named by the operator: kept, so the test can read it
    shared.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(shared))
    port = free_port()
    proc = serve_process(
        ["--model", str(model_dir), "--trust", str(tmp_path / "trust.json"), "--api-keys",
         str(tmp_path / "keys.json"), "--db", f"sqlite:///{tmp_path / 'audit.sqlite'}",
         "--workers", "2"],
        port,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        wait_ready(base, proc)
        spec = httpx.get(f"{base}/openapi.json").json()
        body = json.dumps(spec["components"]["schemas"]["DecisionRequest"]["examples"][0])
        headers = {**auth, "Content-Type": "application/json"}

        def decide(_: int) -> int:
            # A connection each, so the kernel hands them to either worker.
            r = httpx.post(f"{base}/v1/decisions", content=body, headers=headers, timeout=30)
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(decide, range(DECISIONS))) == [200] * DECISIONS
        # Each worker counted some of them (its own file), and every scrape, whichever
        # worker answers it, reports them all.
        per_worker = []
        for path in sorted(shared.glob("counter_*.db")):
            merged = MultiProcessCollector.merge([str(path)], accumulate=True)
            per_worker.append(
                sum(s.value for m in merged if m.name == "jointcredit_decisions" for s in m.samples
                    if s.name == "jointcredit_decisions_total")
            )  # fmt: skip
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker), per_worker
        assert sum(per_worker) == DECISIONS
        for _ in range(6):
            assert _decided(httpx.get(f"{base}/metrics").text) == DECISIONS
        # The window: both workers' applicants (the other worker's within its flush interval).
        deadline = time.monotonic() + 10
        while True:
            r = httpx.get(f"{base}/v1/monitoring", headers=auth)
            assert r.status_code == 200, r.text
            if r.json()["window"]["applicants"] == DECISIONS:
                break
            assert time.monotonic() < deadline, r.json()["window"]
            time.sleep(0.3)
        gauge = re.search(
            r"^jointcredit_monitoring_window (\S+)$", httpx.get(f"{base}/metrics").text, re.M
        )
        assert gauge is not None and float(gauge.group(1)) == DECISIONS
    finally:
        proc.terminate()
        proc.wait(timeout=30)
