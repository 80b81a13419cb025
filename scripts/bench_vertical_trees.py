"""Vertical SecureBoost-style trees against XGBoost on the joined rows, and what the feature
party's columns buy the label party.

    nice -n 5 .venv/bin/python scripts/bench_vertical_trees.py [--scheme ou|paillier]
        [--dataset synthetic|sba-vertical] [--rows 30000] [--trees 30] [--depth 3]
        [--bins 32] [--xgboost-only]

`synthetic`: aligned codes (`jointcredit.simulations.vertical_codes`), 13 label-party and 10
feature-party features, `--rows` training rows plus a quarter as many held out.
`sba-vertical`: the bank's and the platform's aligned rows as `simulate --layout vertical`
bins and splits them (each party's own bins of its training rows; its test rows held out).
Both parties run in this process; the time the label party spends encrypting and
decrypting, and the feature party summing ciphertexts into bins (and shifting them side by
side), are measured at the cipher interface. The ratio is to the faster of XGBoost's 2- and
1-thread times. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from jointcredit.client.vertical_label import own_bins
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.trees import TreeParams
from jointcredit.models.trees import train as central_train
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.params import BinLayout
from jointcredit.models.vertical.cipher import Ciphertexts, PublicKey, SecretKey
from jointcredit.models.vertical.feature_party import FeatureParty
from jointcredit.models.vertical.label_party import joined_layout, train
from jointcredit.models.vertical.messages import (
    EncryptedGradients,
    EncryptedHistograms,
    HistogramQuery,
    PartyColumns,
    SplitDone,
    SplitOrder,
)
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.simulations.tree_baselines import xgboost_inputs, xgboost_matrix, xgboost_params
from jointcredit.simulations.vertical import aligned_frames, load_data
from jointcredit.simulations.vertical_codes import vertical_codes


@dataclass
class Clock:
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, started: float, n: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        self.counts[name] = self.counts.get(name, 0) + n


class TimedPublic:
    def __init__(self, key: PublicKey, clock: Clock) -> None:
        self.key, self.clock = key, clock

    def to_bytes(self) -> bytes:
        return self.key.to_bytes()

    def encrypt(self, values: Sequence[int]) -> Ciphertexts:
        t = time.perf_counter()
        out = self.key.encrypt(values)
        self.clock.add("encrypt", t, len(values))
        return out

    def load(self, data: bytes) -> Ciphertexts:
        return self.key.load(data)

    def plaintext_bits(self) -> int:
        return self.key.plaintext_bits()

    def sums_per_ciphertext(self, width: int) -> int:
        return self.key.sums_per_ciphertext(width)

    def side_by_side(self, values: Ciphertexts, width: int, per: int) -> Ciphertexts:
        t = time.perf_counter()
        out = self.key.side_by_side(values, width, per)
        self.clock.add("side_by_side", t, len(out))
        return out

    def bucket_sums(
        self, values: Ciphertexts, groups: Sequence[np.ndarray], codes: np.ndarray, buckets: int
    ) -> list[Ciphertexts]:
        t = time.perf_counter()
        out = self.key.bucket_sums(values, groups, codes, buckets)
        self.clock.add("ciphertext_adds", t, int(sum(g.sum() for g in groups)) * codes.shape[1])
        return out


class TimedSecret:
    def __init__(self, key: SecretKey, clock: Clock) -> None:
        self.key, self.clock = key, clock
        self._public = TimedPublic(key.public, clock)

    @property
    def public(self) -> TimedPublic:
        return self._public

    def decrypt(self, values: Ciphertexts) -> list[int]:
        t = time.perf_counter()
        out = self.key.decrypt(values)
        self.clock.add("decrypt", t, len(out))
        return out


class CountingLink:
    """The feature party behind a byte count of every message both ways."""

    def __init__(self, party: FeatureParty) -> None:
        self.party, self.sent, self.received = party, 0, 0

    def columns(self) -> PartyColumns:
        return self.party.columns()

    def receive_gradients(self, message: EncryptedGradients) -> None:
        self.sent += len(message.ciphertexts) + len(message.public_key)
        self.party.receive_gradients(message)

    def histograms(self, query: HistogramQuery) -> EncryptedHistograms:
        self.sent += query.slot.nbytes
        reply = self.party.histograms(query)
        self.received += sum(len(b) for b in reply.nodes)
        return reply

    def split(self, order: SplitOrder) -> SplitDone:
        self.sent += order.rows.nbytes + 32
        done = self.party.split(order)
        self.received += done.left.nbytes + 8
        return done


@dataclass(frozen=True)
class Side:
    """One party's bin codes of the aligned rows and their layout."""

    codes: np.ndarray
    layout: BinLayout


def sba_vertical(args: argparse.Namespace) -> tuple[Side, Side, np.ndarray, np.ndarray]:
    """(bank's columns, platform's columns, labels, test mask) of the aligned rows."""
    settings = VerticalSettings.model_validate(
        {"dataset": "sba-vertical", "seed": args.seed, "trees": args.trees,
         "max-depth": args.depth, "max-bins": args.bins}
    )  # fmt: skip
    data = load_data(settings)
    frames, test = aligned_frames(data, settings)
    schema, label = data.schema, data.schema.label_party
    (platform,) = [p for p in schema.parties if p != label]
    cols = []
    for party in (label, platform):
        bins = own_bins(frames[party][~test], schema, party, settings)
        cols.append(Side(bins.codes(frames[party]).astype(np.int64), bin_layout(bins)))
    y = frames[label][schema.base.label].to_numpy(dtype=np.float64)
    return cols[0], cols[1], y, np.asarray(test, dtype=bool)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheme", choices=["paillier", "ou"], default="ou")
    ap.add_argument("--dataset", choices=["synthetic", "sba-vertical"], default="synthetic")
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--trees", type=int, default=30)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--xgboost-only", action="store_true", help="time XGBoost alone")
    args = ap.parse_args()
    if args.dataset == "sba-vertical":
        own, other, y, te = sba_vertical(args)
        tr = ~te
    else:
        test_rows = args.rows // 4
        data = vertical_codes(args.rows + test_rows, 13, 10, bins=args.bins, seed=args.seed)
        own = Side(data.label.codes, data.label.layout)
        other, y = Side(data.feature.codes, data.feature.layout), data.y
        te = np.arange(len(y)) >= args.rows
        tr = ~te
    params = TreeParams(n_trees=args.trees, max_depth=args.depth, learning_rate=args.learning_rate)
    out: dict[str, Any] = {
        "scheme": args.scheme,
        "dataset": args.dataset,
        "rows": int(tr.sum()),
        "test_rows": int(te.sum()),
        "features": [own.layout.n_features, other.layout.n_features],
        "trees": args.trees,
        "depth": args.depth,
        "bins": args.bins,
        "learning_rate": args.learning_rate,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_start": os.getloadavg()[0],
    }
    joined = joined_layout(own.layout, [other.layout])
    joined_codes = np.hstack([own.codes, other.codes])

    # XGBoost on the joined rows, the same codes as its input: 2 threads as asked, and 1
    # (on a loaded machine 2 OpenMP threads can be many times slower than one).
    x = xgboost_inputs(joined_codes, joined)
    base = float(np.clip(y[tr].mean(), 1e-6, 1 - 1e-6))
    for threads in (2, 1):
        xp = xgboost_params(params, max(joined.n_bins), base, threads=threads, seed=args.seed)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            booster = xgb.train(xp, xgboost_matrix(x[tr], joined, y[tr]), args.trees)
            runs.append(time.perf_counter() - t)
        out[f"xgboost_seconds_{threads}_threads"] = min(runs)
    out["xgboost_seconds"] = min(out["xgboost_seconds_2_threads"], out["xgboost_seconds_1_threads"])
    test = xgboost_matrix(x[te], joined)
    out["xgboost_auc"] = float(roc_auc_score(y[te], booster.predict(test)))
    if args.xgboost_only:
        print(json.dumps(out, indent=2))
        return

    clock = Clock()
    t = time.perf_counter()
    secret = HeuSecretKey(args.scheme)
    out["keygen_seconds"] = time.perf_counter() - t
    key = TimedSecret(secret, clock)
    party = FeatureParty(
        1, other.codes[tr], other.layout, TimedPublic(public_key(secret.public.to_bytes()), clock)
    )
    link = CountingLink(party)
    t, cpu = time.perf_counter(), _cpu_seconds()
    model = train(own.codes[tr], y[tr], own.layout, [link], params, key)
    out["vertical_seconds"] = time.perf_counter() - t
    # Both parties' CPU time, every thread: what the run costs whatever the machine's load.
    out["vertical_cpu_seconds"] = _cpu_seconds() - cpu
    out["ratio_to_xgboost"] = out["vertical_seconds"] / out["xgboost_seconds"]
    out["phase_seconds"] = clock.seconds
    out["phase_operations"] = clock.counts
    out["bytes_to_feature_party"] = link.sent
    out["bytes_to_label_party"] = link.received
    sides = {1: party.table.sides(other.codes[te])}
    vertical_pd = model.predict_pd(own.codes[te], sides)
    out["federated_auc"] = float(roc_auc_score(y[te], vertical_pd))

    t = time.perf_counter()
    central = central_train(joined_codes[tr], y[tr], joined, params)
    out["central_engine_seconds"] = time.perf_counter() - t
    out["centralized_auc"] = float(roc_auc_score(y[te], central.predict_pd(joined_codes[te])))
    out["max_abs_pd_difference_vs_central"] = float(
        np.abs(central.predict_pd(joined_codes[te]) - vertical_pd).max()
    )
    alone = central_train(own.codes[tr], y[tr], own.layout, params)
    out["label_party_only_auc"] = float(roc_auc_score(y[te], alone.predict_pd(own.codes[te])))
    out["auc_gain"] = out["federated_auc"] - out["label_party_only_auc"]
    out["load_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
