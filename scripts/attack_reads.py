"""Cache-thrash measurement (issue 19, item 12; figures in docs/SECURITY.md): how much clients
cycling `GET /v1/decisions/{id}` over more columnar batches than the record cache holds slow
down another client's single decisions.

Starts `jointcredit serve` on loopback, decides `--batches` columnar batches of `--rows`
applicants with an attacker's key, then measures the other client's single-decision latency
(sequential requests, `--seconds` each) alone and while `--attackers` processes, each with its
own key, cycle through the batches' decisions as fast as they are answered.

Usage: python scripts/attack_reads.py --run RUN [--rows 10000] [--batches 10] [--attackers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _latencies(base: str, key: str, body: dict[str, Any], seconds: float) -> list[float]:
    out = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            r = client.post("/v1/decisions", json=body, headers=headers)
            out.append(time.perf_counter() - start)
            r.raise_for_status()
    return out


def _attack(base: str, key: str, ids: list[str], seconds: float, result: Any) -> None:
    counts: dict[int, int] = {}
    ok: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=60) as client:
        end, k = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            start = time.perf_counter()
            r = client.get(f"/v1/decisions/{ids[k % len(ids)]}", headers=headers)
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
            if r.status_code == 200:
                ok.append(time.perf_counter() - start)
            k += 1
    result.put((counts, ok))


def _ms(xs: list[float], q: float) -> float:
    return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)


def measure(run: Path, rows: int, batches: int, attackers: int, seconds: float) -> dict[str, Any]:
    from jointcredit.service.auth import new_key

    with tempfile.TemporaryDirectory(prefix="jointcredit-reads-") as tmp:
        keys = Path(tmp) / "keys.json"
        attacker_keys = [new_key(keys, "bank-a") for _ in range(attackers)]
        victim = new_key(keys, "bank-b")
        port = _port()
        cmd = [sys.executable, "-m", "jointcredit.cli", "serve", "--model", str(run / "model"),
               "--trust", str(run / "trust.json"), "--api-keys", str(keys),
               "--db", f"sqlite:///{Path(tmp) / 'audit.sqlite'}", "--port", str(port)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.3)
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the service did not start")
            schemas = httpx.get(f"{base}/openapi.json").json()["components"]["schemas"]
            single = schemas["DecisionRequest"]["examples"][0]
            example = schemas["ColumnarDecisionRequest"]["examples"][0]["columns"]
            columns = {k: (v * (rows // len(v) + 1))[:rows] for k, v in example.items()}
            body = json.dumps({"columns": columns}).encode()
            ids = []
            for _ in range(batches):
                r = httpx.post(f"{base}/v1/decisions:columnar", content=body, timeout=120,
                               headers={"Authorization": f"Bearer {attacker_keys[0]}",
                                        "Content-Type": "application/json"})  # fmt: skip
                r.raise_for_status()
                ids.append(r.json()["decisions"]["decision_id"][rows // 2])
            _latencies(base, victim, single, 2)  # warm-up
            alone = _latencies(base, victim, single, seconds)
            results: Any = multiprocessing.Queue()
            procs = [
                multiprocessing.Process(target=_attack, args=(base, k, ids, seconds + 1, results))
                for k in attacker_keys
            ]
            for p in procs:
                p.start()
            time.sleep(0.5)
            attacked = _latencies(base, victim, single, seconds)
            counts: dict[int, int] = {}
            reads: list[float] = []
            for _ in procs:
                c, ok = results.get(timeout=120)
                reads += ok
                for code, n in c.items():
                    counts[code] = counts.get(code, 0) + n
            for p in procs:
                p.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {
        "victim_alone_ms": {"p50": _ms(alone, 0.5), "p90": _ms(alone, 0.9)},
        "victim_attacked_ms": {"p50": _ms(attacked, 0.5), "p90": _ms(attacked, 0.9)},
        "attacker_statuses": counts,
        "attacker_read_ms": {"p50": _ms(reads, 0.5), "max": _ms(reads, 1.0)} if reads else {},
        "median_ratio": round(statistics.median(attacked) / statistics.median(alone), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run with model/, trust.json")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--attackers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    result = measure(args.run, args.rows, args.batches, args.attackers, args.seconds)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
