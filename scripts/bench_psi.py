"""Wall time, throughput and peak memory of ECDH-PSI (privacy/psi.py) with both parties on this
machine, each a separate process, the messages going through pipes.

    python scripts/bench_psi.py --label 1000000 --feature 1000000 [--overlap 600000] [--threads 1]
    python scripts/bench_psi.py --ops 20000    # each curve primitive's operations per second
    python scripts/bench_psi.py --label N --feature N --json   # one JSON line (make bench)

The label party holds identifiers 0 .. label-1, the feature party label-overlap .. (as
phone-number-like strings). Each party blinds its own set concurrently, re-blinds the other's,
and the label party intersects and sends the matched positions. `--threads`: threads per party
(the curve work releases the GIL). Reports wall time, X25519 operations per second, each
party's CPU time (what the parties cost, whatever else the machine runs) and peak RSS; checks
that the intersection is exact and aligned. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable
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


def per_operation(n: int) -> None:
    """Operations per second of the candidate primitives, one thread and two (why PyNaCl)."""
    from concurrent.futures import ThreadPoolExecutor

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from nacl._sodium import ffi, lib

    points = [hashlib.sha512(i.to_bytes(8, "little")).digest()[:32] for i in range(n)]
    edwards = [bytes(32)] * n
    key = X25519PrivateKey.generate()
    scalar = os.urandom(32)

    def cryptography_x25519(chunk: list[bytes]) -> None:
        for p in chunk:
            key.exchange(X25519PublicKey.from_public_bytes(p))

    def sodium(fn: str) -> Callable[[list[bytes]], None]:
        def run(chunk: list[bytes]) -> None:
            out = ffi.new("unsigned char[32]")
            call = getattr(lib, fn)
            for p in chunk:
                call(out, p) if fn.endswith("uniform") else call(out, scalar, p)

        return run

    out = ffi.new("unsigned char[32]")
    for i, p in enumerate(points):
        lib.crypto_core_ed25519_from_uniform(out, p)
        edwards[i] = bytes(out)
    cases = [
        ("cryptography X25519 (from_public_bytes + exchange)", cryptography_x25519, points),
        ("libsodium X25519 (crypto_scalarmult)", sodium("crypto_scalarmult"), points),
        ("libsodium hash to curve (ed25519_from_uniform)",
         sodium("crypto_core_ed25519_from_uniform"), points),
        ("libsodium Edwards scalar mult (scalarmult_ed25519)",
         sodium("crypto_scalarmult_ed25519"), edwards),
    ]  # fmt: skip
    print("| operation | ops/s, 1 thread | ops/s, 2 threads |")
    print("|---|---:|---:|")
    for name, fn, data in cases:
        rates = []
        for threads in (1, 2):
            started = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fn, [data[i::threads] for i in range(threads)]))
            rates.append(n / (time.perf_counter() - started))
        print(f"| {name} | {rates[0]:,.0f} | {rates[1]:,.0f} |")
    print(f"\nload (1 min) {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", type=int, default=100_000)
    parser.add_argument("--feature", type=int, default=100_000)
    parser.add_argument(
        "--overlap", type=int, default=None, help="default: 60%% of the smaller set"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per party")
    parser.add_argument("--ops", type=int, default=0, help="only time N of each primitive")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()
    if args.ops:
        per_operation(args.ops)
        return
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
    if args.json:
        print(json.dumps({
            "label": args.label, "feature": args.feature, "overlap": overlap,
            "threads": args.threads, "wall_seconds": wall, "ops_per_second": ops / wall,
            "blind_seconds": [got["label"][1], got["feature"][1]],
            "cpu_seconds": [got["label"][2], got["feature"][2]],
            "peak_bytes": [peaks["label"], peaks["feature"]], "load_start": load,
        }))  # fmt: skip
        return
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
