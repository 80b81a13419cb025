"""What stability monitoring costs a decision (docs/GOVERNANCE.md, "Stability monitoring"):
single decisions driven through the ASGI app in process, with the window on and off,
alternating, measured as this process's CPU time (every thread: the background writer's
binning, inserts and recomputation included) per decision.

Usage: python scripts/bench_monitoring.py --run RUN [--decisions 2000] [--pairs 5] [--window N]
RUN holds model/ (with reference.json) and trust.json, as `jointcredit simulate` writes them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service


def _cpu_per_decision(client: TestClient, headers: dict[str, str], body: dict, n: int) -> float:
    monitor = client.app.state.monitor  # type: ignore[attr-defined]
    start = time.process_time()
    for _ in range(n):
        r = client.post("/v1/decisions", json=body, headers=headers)
        assert r.status_code == 200, r.text
    if monitor is not None:
        monitor.flush()  # what the background thread would have done for these decisions
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--window", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jointcredit-bench-monitoring-") as tmp:
        key = new_key(Path(tmp) / "keys.json", "bank-a")
        headers = {"Authorization": f"Bearer {key}"}
        results: dict[str, list[float]] = {"off": [], "on": []}
        for pair in range(args.pairs):
            for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
                service = load_service(
                    args.run / "model", args.run / "trust.json", api_keys=Path(tmp) / "keys.json",
                    db_url=f"sqlite:///{tmp}/audit-{pair}-{mode}.sqlite",
                    monitoring_window=args.window,
                )  # fmt: skip
                app = create_app(service)
                if mode == "off":  # the decision path as before monitoring
                    app.state.monitor.close()
                    app.state.monitor = app.state.decisions.monitor = None
                with TestClient(app) as client:
                    body = client.get("/openapi.json").json()["components"]["schemas"][
                        "DecisionRequest"]["examples"][0]  # fmt: skip
                    _cpu_per_decision(client, headers, body, 200)  # warm up
                    results[mode].append(_cpu_per_decision(client, headers, body, args.decisions))
        off, on = (statistics.median(results[m]) for m in ("off", "on"))
        ratios = [a / b for a, b in zip(results["on"], results["off"], strict=True)]
        print(f"CPU per single decision, median of {args.pairs}: off {off:.0f} us, on {on:.0f} us")
        print(f"on/off per pair: {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"off: {', '.join(f'{v:.0f}' for v in results['off'])}")
        print(f"on:  {', '.join(f'{v:.0f}' for v in results['on'])}")


if __name__ == "__main__":
    main()
