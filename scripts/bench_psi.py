"""Wall time, throughput and peak memory of ECDH-PSI (privacy/psi.py) with both parties on this
machine, each a separate process, the messages going through pipes.

    python scripts/bench_psi.py --label 1000000 --feature 1000000 [--overlap 600000] [--threads 1]

The label party holds identifiers 0 .. label-1, the feature party label-overlap .. (as
phone-number-like strings). Each party blinds its own set concurrently, re-blinds the other's,
and the label party intersects and sends the matched positions. `--threads`: threads per party
(the curve work releases the GIL). Reports wall time, X25519 operations per second, each
party's CPU time (what the parties cost, whatever else the machine runs) and peak RSS; checks
that the intersection is exact and aligned. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from multiprocessing.queues import Queue
from typing import Any

import numpy as np

from jointcredit.privacy.psi import FeaturePsi, LabelPsi


def phone(i: int) -> str:
    return f"+86 1{i:010d}"


def label_party(
    n: int, threads: int, inbox: Queue[Any], outbox: Queue[Any], results: Queue[Any]
) -> None:
    started = time.perf_counter()
    party = LabelPsi([phone(i) for i in range(n)], workers=threads)
    outbox.put(party.blinded())
    blinded = time.perf_counter() - started
    peer_double = party.reblind(inbox.get())
    own_double = inbox.get()
    result, positions = party.intersect(own_double, peer_double)
    outbox.put(positions)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.put(("label", result.rows, blinded, time.process_time(), peak))


def feature_party(
    first: int, n: int, threads: int, inbox: Queue[Any], outbox: Queue[Any], results: Queue[Any]
) -> None:
    started = time.perf_counter()
    party = FeaturePsi([phone(first + i) for i in range(n)], workers=threads)
    outbox.put(party.blinded())
    blinded = time.perf_counter() - started
    outbox.put(party.reblind(inbox.get()))
    rows = party.aligned_rows(inbox.get()).rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.put(("feature", rows, blinded, time.process_time(), peak))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", type=int, default=100_000)
    parser.add_argument("--feature", type=int, default=100_000)
    parser.add_argument(
        "--overlap", type=int, default=None, help="default: 60%% of the smaller set"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per party")
    args = parser.parse_args()
    overlap = args.overlap if args.overlap is not None else int(0.6 * min(args.label, args.feature))
    ctx = mp.get_context("spawn")
    to_feature: Queue[Any] = ctx.Queue()
    to_label: Queue[Any] = ctx.Queue()
    results: Queue[Any] = ctx.Queue()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    procs = [
        ctx.Process(
            target=label_party, args=(args.label, args.threads, to_label, to_feature, results)
        ),
        ctx.Process(
            target=feature_party,
            args=(args.label - overlap, args.feature, args.threads, to_feature, to_label, results),
        ),
    ]
    for p in procs:
        p.start()
    got = {name: rest for name, *rest in (results.get() for _ in procs)}
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    label_rows, feature_rows = got["label"][0], got["feature"][0]
    assert len(label_rows) == overlap, (len(label_rows), overlap)
    first = args.label - overlap
    assert np.array_equal(label_rows, feature_rows + first), "intersection not aligned"
    ops = 2 * (args.label + args.feature)  # blind own + re-blind the other's, both parties
    peaks = {name: got[name][3] for name in got}
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        "| label x feature | overlap | threads/party | wall s | X25519 ops/s "
        "| blind own s (label, feature) | CPU s (label, feature) "
        "| peak RSS label, feature MiB | load (1 min) at start |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.label:,} x {args.feature:,} | {overlap:,} | {args.threads} | {wall:.1f} "
        f"| {ops / wall:,.0f} "
        f"| {got['label'][1]:.1f}, {got['feature'][1]:.1f} "
        f"| {got['label'][2]:.0f}, {got['feature'][2]:.0f} "
        f"| {peaks['label'] / 2**20:.0f}, {peaks['feature'] / 2**20:.0f} "
        f"(max child {children / 2**20:.0f}) "
        f"| {load:.1f} |"
    )


if __name__ == "__main__":
    main()
