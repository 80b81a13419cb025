"""What stability monitoring costs (docs/GOVERNANCE.md, "Stability monitoring"), per part:
on the decision path (an applicant joining the in-memory list) and in the background thread
(binning, writing a group to the window, recomputing PSI/CSI over a full window), each as
CPU time, the best of `--repeats`, on applicants of the shipped sample.

Also what one decision's Prometheus updates cost in a single process and in the
multiprocess mode `serve --workers N` uses (each in a fresh interpreter: the mode is chosen
when prometheus_client is imported).

Usage: python scripts/bench_monitoring.py --run RUN [--window 10000] [--group 1000]
RUN holds model/ (with reference.json) and trust.json, as `jointcredit simulate` writes them.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import load_artifact
from jointcredit.service.metrics import Metrics
from jointcredit.service.monitoring import Monitor
from jointcredit.trust.store import load_store


def _best(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


METRICS = """
import time
from jointcredit.service.metrics import Metrics
m = Metrics()
m.count_commits(lambda: 1.0)
n, best = 20000, []
for _ in range(5):
    start = time.process_time()
    for _ in range(n):
        m.decided(["approve"])
        m.latency_one.observe(0.003)
    best.append((time.process_time() - start) / n)
print(min(best) * 1e6)
"""


def _metrics_cost(multiprocess: bool) -> float:
    """CPU time of one decision's metric updates (a counter, a histogram, the commits gauge)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory(prefix="jointcredit-bench-metrics-") as tmp:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = tmp
        done = subprocess.run(
            [sys.executable, "-c", METRICS], env=env, capture_output=True, text=True, check=True
        )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--group", type=int, default=1000, help="applicants per background write")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    logging.getLogger("jointcredit.service.monitoring").setLevel(logging.ERROR)
    model = load_artifact(args.run / "model", load_store(args.run / "trust.json"))
    if model.reference is None:
        raise SystemExit(f"{args.run / 'model'} has no reference.json")
    x = load_federation(DataConfig(dataset="sba")).pooled_test().x
    x = x.sample(args.group, replace=True, random_state=0)
    records: list[dict[str, Any]] = (
        x.astype(object).where(x.notna(), None).to_dict(orient="records")  # type: ignore[assignment]
    )
    columns = {f: [r[f] for r in records] for f in x.columns}
    scores = [700] * args.group
    n = args.group
    with tempfile.TemporaryDirectory(prefix="jointcredit-bench-monitoring-") as tmp:
        monitor = Monitor(
            model.reference, f"sqlite:///{tmp}/audit.sqlite", Metrics(),
            size=args.window, interval=3600, flush_rows=10**9,
        )  # fmt: skip
        for _ in range(args.window // n + 1):  # a full window
            monitor.add(scores, columns)
            monitor.flush()

        def singles() -> None:
            for r in records:
                monitor.add_one(700, r)

        on_path_one = _best(args.repeats, singles) / n
        monitor.flush()
        on_path_batch = _best(args.repeats, lambda: monitor.add(scores, columns))
        monitor.flush()

        def flush_singles() -> None:
            singles()
            monitor.flush()

        flush_one = _best(args.repeats, flush_singles) / n - on_path_one

        def flush_batch() -> None:
            monitor.add(scores, columns)
            monitor.flush()

        flush_many = _best(args.repeats, flush_batch) / n
        snapshot = _best(args.repeats, monitor.snapshot)
        monitor.close()
    us = 1e6
    print(f"window {args.window}, groups of {n} applicants, best of {args.repeats} (CPU time)")
    print(f"on the decision path: {on_path_one * us:.2f} us per single decision, "
          f"{on_path_batch * us:.1f} us per batch")  # fmt: skip
    print(f"background, per applicant: {flush_one * us:.1f} us decided singly, "
          f"{flush_many * us:.1f} us in batches (binning, write, recomputation)")  # fmt: skip
    print(f"recomputing PSI/CSI over the full window: {snapshot * 1e3:.1f} ms")
    single, multi = _metrics_cost(False), _metrics_cost(True)
    print(f"a decision's metric updates: {single:.1f} us in one process, {multi:.1f} us in "
          "prometheus_client's multiprocess mode")  # fmt: skip


if __name__ == "__main__":
    main()
