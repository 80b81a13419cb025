"""In-process latency of the eligibility service's decider on any model (no HTTP, no audit log):
what a decision costs the service beyond its web layer, for logreg, mlp, scorecard or gbdt.

    python scripts/bench_decider.py --run RUN [--decisions 3000] [--batch 1000]

RUN holds `model/` and `trust.json` (`jointcredit simulate --out RUN`). The applicants are
drawn from the model's own preprocessing (as `jointcredit decide` draws them). Measures one
decision at a time (`Decider.decide_one`: preprocessing or bin codes, score, reasons - TreeSHAP
for trees -, policy; p50/p99 over `--decisions` calls after a warm-up), a batch given as records
(`decide`) and as columns (`decide_columns`, the columnar endpoint's path), each in applicants
per second. Prints a Markdown table. One thread, as the service runs (`single_threaded_math`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from jointcredit.models.artifact import load_artifact
from jointcredit.service.applicants import sample
from jointcredit.service.decide import Decider
from jointcredit.service.loader import check_model, single_threaded_math
from jointcredit.service.policy import load_policy
from jointcredit.trust.store import load_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--policy", type=Path, default=None)
    args = parser.parse_args()
    single_threaded_math()
    model = load_artifact(args.run / "model", load_store(args.run / "trust.json"))
    check_model(model)
    started = time.perf_counter()
    decider = Decider(model, load_policy(args.policy))
    ready = time.perf_counter() - started
    schema = model.card.data_schema.features
    people = sample(model.spec, schema, max(args.decisions, args.batch), seed=7)
    for a in people[:200]:  # warm-up
        decider.decide_one(a, {}, None)
    # Wall time and the thread's CPU time per call: on a shared machine the wall clock also
    # counts the time the scheduler gave to other processes, the CPU time only the decision's.
    latency, cpu = [], []
    for a in people[: args.decisions]:
        c0, t0 = time.thread_time(), time.perf_counter()
        decider.decide_one(a, {}, None)
        latency.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    ms, cpu_ms = np.asarray(latency) * 1e3, np.asarray(cpu) * 1e3
    batch = people[: args.batch]
    n = len(batch)
    rates = {}

    def records() -> object:
        return decider.decide(batch, [{}] * n, [None] * n)

    def columns() -> object:
        return decider.decide_columns(
            {f: [a[f] for a in batch] for f in decider.features},
            {c: [None] * n for c in decider.policy.context},
            [None] * n,
        )

    for name, call in (("batch (records)", records), ("columnar", columns)):
        call()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        rates[name] = n / float(np.median(times))
    arch = model.card.architecture
    trees = getattr(model.model, "ensemble", None)
    shape = f", {len(trees.trees)} trees" if trees is not None else ""
    print(f"Decider in process: {arch.kind}{shape}, {len(decider.features)} features, "
          f"decider built in {ready:.2f} s\n")  # fmt: skip
    print("| path | p50 | p99 | max | throughput |")
    print("|---|---|---|---|---|")
    for what, v in (("wall", ms), ("CPU", cpu_ms)):
        p50, p99 = np.percentile(v, 50), np.percentile(v, 99)
        print(f"| one decision ({len(v)} calls), {what} time | {p50:.2f} ms | {p99:.2f} ms | "
              f"{v.max():.2f} ms | {1e3 / v.mean():,.0f} /s |")  # fmt: skip
    for name, rate in rates.items():
        print(f"| {name}, {n} applicants, wall time | | | | {rate:,.0f} /s |")
    load = os.getloadavg()[0]
    print(f"\nLoad average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
