"""Benchmark of scoring vertical applicants (docs/BENCHMARKS.md, "Vertical scoring"): single
decisions of a vertical model over loopback with one feature party, reasons included, each
decision one signed mutual-TLS round to the platform (`jointcredit vertical serve`) and one
audited decision at the bank (`jointcredit serve`), both their own processes.

The model: trained by the real exchange (Paillier) on the synthetic-vertical rows both
parties hold, `--trees` trees of depth 3 over the bank's features and the platform's
(tests/vertical_helpers.py builds the federation: kits, endpoint certificates, signed parts).
Requests are sequential from one kept-alive client: the latency of one decision, not the
throughput of the service. With `--batch N` the same decisions go as batches of N
(`POST /v1/decisions:batch`, the platform asked once per applicant, a bounded number at a
time): each batch's latency and the decisions per second, against the singles'.

Usage: python scripts/bench_vertical_service.py [--decisions 2000] [--trees 30] [--rows 2000]
       [--batch N]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from service_helpers import announced  # noqa: E402
from vertical_helpers import vertical_federation  # noqa: E402


def _started(
    args: list[str], marker: str, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    proc, url = announced(args, marker, 120, env)
    if url is None:
        raise SystemExit(f"{args[:2]} did not start: {proc.stderr and proc.stderr.read()}")
    return proc, url


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--trees", type=int, default=30)
    ap.add_argument("--rows", type=int, default=2000, help="synthetic joined rows to train on")
    ap.add_argument("--json", action="store_true", help="one JSON line instead of Markdown")
    ap.add_argument("--batch", type=int, default=0, help="also send the decisions as batches")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-vertical-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "JOINTCREDIT_HOME": str(root / "home")}
        os.environ.update(JOINTCREDIT_HOME=env["JOINTCREDIT_HOME"])
        start = time.perf_counter()
        fed = vertical_federation(root, rows=args.rows, trees=args.trees)
        built = time.perf_counter() - start
        from jointcredit.service.audit import AuditLog
        from jointcredit.service.auth import new_key
        from jointcredit.service.consent import ConsentRegistry

        known = fed.known(50)
        pdb = f"sqlite:///{root / 'platform.sqlite'}"
        log = AuditLog(pdb)
        registry = ConsentRegistry(log)
        for k in known:
            registry.add("bank", f"c{k}", fed.applicant(k)[0], "vertical")
        log.close()
        platform, purl = _started(
            ["vertical", "serve", "--kit", str(fed.kit("platform")), "--model", str(fed.model),
             "--data", str(fed.platform_data), "--schema", str(fed.schema), "--db", pdb],
            "answering vertical queries on ", env,
        )  # fmt: skip
        token = new_key(root / "keys.json", "bank")
        bank_db = root / "bank.sqlite"
        bank, base = _started(
            ["serve", "--model", str(fed.model), "--trust", str(fed.trust),
             "--vertical-kit", str(fed.kit("bank")), "--party", f"platform={purl}",
             "--api-keys", str(root / "keys.json"), "--db", f"sqlite:///{bank_db}"],
            "listening on ", env,
        )  # fmt: skip
        try:
            items = []
            for k in known:
                aid, feats = fed.applicant(k)
                items.append({"applicant": feats, "vertical": {
                    "applicant_id": aid, "consent_id": f"c{k}"}})  # fmt: skip
            bodies = [json.dumps(item).encode() for item in items]
            latencies: list[float] = []
            batches: list[float] = []
            reasons = 0
            load_before = os.getloadavg()
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/json"}, timeout=120,
            ) as client:  # fmt: skip
                for i in range(args.warmup + args.decisions):
                    t0 = time.perf_counter()
                    r = client.post("/v1/decisions", content=bodies[i % len(bodies)])
                    dt = time.perf_counter() - t0
                    got = r.json()
                    if r.status_code != 200 or got["score"] is None:
                        raise SystemExit(f"not scored: {r.status_code} {r.text[:300]}")
                    if i >= args.warmup:
                        latencies.append(dt)
                        reasons += bool(got["reasons"])
                for b in range(args.decisions // args.batch if args.batch else 0):
                    chunk = [items[(b * args.batch + j) % len(items)] for j in range(args.batch)]
                    t0 = time.perf_counter()
                    r = client.post("/v1/decisions:batch", json={"applications": chunk})
                    batches.append(time.perf_counter() - t0)
                    scored = [d["score"] is not None for d in r.json().get("decisions", [])]
                    if r.status_code != 200 or not all(scored) or len(scored) != args.batch:
                        raise SystemExit(f"batch not scored: {r.status_code} {r.text[:300]}")
            load_after = os.getloadavg()
        finally:
            for proc in (bank, platform):
                proc.terminate()
                proc.wait(20)
        rounds = [
            json.loads(p)["vertical"]["seconds"]
            for (p,) in sqlite3.connect(bank_db).execute(
                "SELECT payload FROM audit_log WHERE kind = 'decision' ORDER BY seq"
            )
        ][args.warmup :]
        card = json.loads((fed.model / "vertical.json").read_text())
        splits = card["parties"]["platform"]["splits"]
    if args.json:
        print(json.dumps({
            "decisions": args.decisions, "trees": args.trees, "rows": args.rows,
            "platform_splits": splits, "all_with_reasons": reasons == len(latencies),
            "p50_ms": _ms(latencies, 50), "p99_ms": _ms(latencies, 99),
            "max_ms": max(latencies) * 1000, "round_p50_ms": _ms(rounds, 50),
            "round_p99_ms": _ms(rounds, 99), "load": [load_before[0], load_after[0]],
        }))  # fmt: skip
        return
    print(f"### {args.decisions} single vertical decisions over loopback, one feature party")
    print()
    print(f"model: {args.trees} trees of depth 3 ({splits} of their splits the platform's), "
          f"trained on {args.rows} synthetic joined "
          f"rows (built in {built:.0f} s); every decision had reasons: "
          f"{reasons == len(latencies)}")  # fmt: skip
    print()
    print("| | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| decision (client's view) | {_ms(latencies, 50):.1f} | {_ms(latencies, 99):.1f} | "
          f"{max(latencies) * 1000:.1f} |")  # fmt: skip
    print(f"| of which the platform's round | {_ms(rounds, 50):.1f} | {_ms(rounds, 99):.1f} | "
          f"{max(rounds) * 1000:.1f} |")  # fmt: skip
    if batches:
        per_second = args.batch * len(batches) / sum(batches)
        print(f"| batch of {args.batch} ({len(batches)} batches) | {_ms(batches, 50):.1f} | "
              f"{_ms(batches, 99):.1f} | {max(batches) * 1000:.1f} |")  # fmt: skip
        print()
        print(f"decisions per second: singles {len(latencies) / sum(latencies):.0f}, "
              f"batches of {args.batch} {per_second:.0f}")  # fmt: skip
    print()
    print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
