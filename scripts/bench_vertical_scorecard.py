"""The vertical scorecard (models/vertical/scorecard): its protocol's cost, and its held-out
AUC against the same learner on the joined rows, on the bank's features alone, the raw
Newton step (`calibration="newton"`, without the discriminant's scale), and the
maximum-likelihood logistic regression on the same joined WOE columns (scikit-learn), the
fit the one Newton step approximates.

    nice -n 5 .venv/bin/python scripts/bench_vertical_scorecard.py
        [--dataset synthetic-vertical|sba-vertical] [--rows 30000] [--scheme ou|paillier]
        [--platforms 1|2] [--json]

The rows, test split and each party's fine bins are those of `simulate --layout vertical`
(`--rows`: synthetic-vertical's applicants; sba-vertical is the shipped sample). Both
parties run in this process; the bank's encryptions and decryptions and the platform's
ciphertext sums are timed at the cipher interface (scripts/bench_vertical_trees.py's
wrappers), the bytes of every message counted. `--platforms 2`: the platform's features held
by two feature parties (the first half, the rest), so the fit takes the cross step too
(one party's coarse codes encrypted under the bank's key, summed by the other): its time,
bytes and the cross tables' cells under 5 rows (what a platform's `pair-min-rows` would
make the bank refuse) are reported beside the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
from bench_vertical_trees import Clock, TimedPublic, TimedSecret
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from jointcredit.client.vertical_label import own_bins
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.binning.table import Classing
from jointcredit.models.vertical.merge_maps import coarse_codes, n_coarse
from jointcredit.models.vertical.scorecard.central import central_scorecard
from jointcredit.models.vertical.scorecard.feature_party import ScorecardFeatureParty
from jointcredit.models.vertical.scorecard.fit import VerticalScorecard
from jointcredit.models.vertical.scorecard.label_party import train
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.simulations.vertical import aligned_frames, load_data


class CountingLink:
    """The platform behind a byte count of every message both ways."""

    def __init__(self, party: ScorecardFeatureParty) -> None:
        self.party, self.sent, self.received = party, 0, 0
        self.pair_cells = self.small_pair_cells = 0  # the coarse pair tables' cells, of 1-4 rows
        self.cross_seconds = 0.0  # as the summing party: the peer's encryption and its sums
        self.cross_slots_bytes = 0  # the peer's ciphertexts, relayed to this party

    def columns(self) -> FineColumns:
        cols = self.party.columns()
        self.received += sum(r.nbytes for r in cols.rows) + 16 * len(cols.names)
        return cols

    def tables(self, message: EncryptedSlots) -> EncryptedTables:
        self.sent += len(message.ciphertexts) + len(message.public_key)
        reply = self.party.tables(message)
        self.received += sum(len(c) for c in reply.columns)
        return reply

    def cross(self, peer: CountingLink) -> EncryptedTables:
        t = time.perf_counter()
        slots = peer.party.cross_slots()
        reply = self.party.cross_tables(slots)
        self.cross_seconds += time.perf_counter() - t
        self.cross_slots_bytes += len(slots.ciphertexts) + len(slots.public_key)
        self.received += sum(len(c) for c in reply.columns)
        return reply

    def coarse(self, maps: Sequence[np.ndarray]) -> PairCounts:
        self.sent += sum(m.nbytes for m in maps)
        pairs = self.party.coarse(maps)
        self.received += sum(t.nbytes for t in pairs.tables)
        self.pair_cells = sum(t.size for t in pairs.tables)
        self.small_pair_cells = sum(int(((t > 0) & (t < 5)).sum()) for t in pairs.tables)
        return pairs


def _cross_cells(links: Sequence[CountingLink]) -> tuple[int, int]:
    """The two platforms' coarse x coarse cross tables (all their cells, and the non-empty
    ones under 5 rows), counted here from both parties' codes: what the bank decrypted."""
    first, second = (link.party for link in links)
    assert first.merge is not None and second.merge is not None
    a, b = coarse_codes(first.codes, first.merge), coarse_codes(second.codes, second.merge)
    ka, kb = n_coarse(first.merge), n_coarse(second.merge)
    cells = small = 0
    for i, j in product(range(len(ka)), range(len(kb))):
        t = np.bincount(a[:, i] * kb[j] + b[:, j], minlength=ka[i] * kb[j])
        cells += t.size
        small += int(((t > 0) & (t < 5)).sum())
    return cells, small


def _metrics(y: np.ndarray, pd_: np.ndarray) -> dict[str, float]:
    p = np.clip(pd_, 1e-12, 1 - 1e-12)
    return {
        "auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "mean_pd": float(p.mean()),
    }


def _inputs(model: VerticalScorecard, own: np.ndarray, fine: np.ndarray | None) -> np.ndarray:
    """The model's WOE input columns of rows (bank's coarse codes, platform's fine codes)."""
    cols = [f.values[own[:, a]] for a, f in enumerate(model.own)]
    if fine is not None:
        cols += [f.fine_values[fine[:, j]] for j, f in enumerate(model.platform)]
    return np.column_stack(cols)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=["synthetic-vertical", "sba-vertical"],
                    default="synthetic-vertical")  # fmt: skip
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--scheme", choices=["ou", "paillier"], default="ou")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--platforms", type=int, choices=[1, 2], default=1,
                    help="feature parties holding the platform's features")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="one JSON object, nothing else")
    args = ap.parse_args()
    # HEU's C++ logs to the process's stdout: keep it on stderr until the result is printed.
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        out = _run(args)
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for k, v in out.items():
        print(f"{k}: {v}")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    settings = VerticalSettings.model_validate(
        {"dataset": args.dataset, "seed": args.seed, "synthetic-rows": args.rows}
    )
    data = load_data(settings)
    frames, test = aligned_frames(data, settings)
    vs = data.schema
    label = vs.label_party
    (other,) = [p for p in vs.parties if p != label]
    tr, te = ~test, test
    bank, plat = frames[label], frames[other]
    y = bank[vs.base.label].to_numpy().astype(np.int64)
    bank_tr, plat_tr = bank[tr].reset_index(drop=True), plat[tr].reset_index(drop=True)
    bank_fine = own_bins(bank_tr, vs, label, settings)
    plat_fine = own_bins(plat_tr, vs, other, settings)
    classing = Classing(fine_bins=settings.max_bins, min_bin_share=0.05)
    out: dict[str, Any] = {
        "dataset": args.dataset,
        "scheme": args.scheme,
        "rows": int(tr.sum()),
        "test_rows": int(te.sum()),
        "bad_rate": float(y[tr].mean()),
        "platforms": args.platforms,
        "features": [len(bank_fine.names), len(plat_fine.names)],
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg()[0],
    }

    clock = Clock()
    t = time.perf_counter()
    secret = HeuSecretKey(args.scheme)
    out["keygen_seconds"] = time.perf_counter() - t
    key = TimedSecret(secret, clock)
    feats = plat_fine.features
    half = (len(feats) + 1) // 2
    held = [plat_fine] if args.platforms == 1 else [
        BinningSpec(features=feats[:half]), BinningSpec(features=feats[half:])]  # fmt: skip
    clocks = [Clock() for _ in held]  # each platform's own cipher work
    links = [
        CountingLink(ScorecardFeatureParty(plat_tr, bins, TimedPublic(public_key(
            secret.public.to_bytes()), c)))
        for bins, c in zip(held, clocks, strict=True)
    ]  # fmt: skip
    t = time.perf_counter()
    vertical = train(bank_tr, y[tr], bank_fine, vs.base, links, key, classing=classing)
    out["vertical_seconds"] = time.perf_counter() - t
    out["phase_seconds"] = clock.seconds
    out["phase_operations"] = clock.counts
    out["bytes_to_platform"] = sum(link.sent for link in links)
    out["bytes_to_bank"] = sum(link.received for link in links)
    out["pair_cells"] = sum(link.pair_cells for link in links)
    out["pair_cells_under_5_rows"] = sum(link.small_pair_cells for link in links)
    if args.platforms == 2:
        out["platform_phase_seconds"] = [c.seconds for c in clocks]
        out["platform_phase_operations"] = [c.counts for c in clocks]
        out["cross_seconds"] = links[1].cross_seconds
        out["cross_bytes_between_platforms"] = links[1].cross_slots_bytes
        out["cross_cells"], out["cross_cells_under_5_rows"] = _cross_cells(links)

    t = time.perf_counter()
    central = central_scorecard(
        (bank_tr, bank_fine), [(plat_tr, bins) for bins in held], y[tr], vs.base,
        classing=classing,
    )  # fmt: skip
    out["central_seconds"] = time.perf_counter() - t
    differences = np.r_[vertical.intercept - central.intercept, vertical.weights - central.weights]
    out["max_abs_weight_difference_vs_central"] = float(np.abs(differences).max())
    out["max_abs_points_difference_vs_central"] = max(
        abs(a.points - b.points)
        for a, b in zip(vertical.points.attributes, central.points.attributes, strict=True)
    )
    alone = central_scorecard((bank_tr, bank_fine), None, y[tr], vs.base, classing=classing)
    # The raw Newton step (no discriminant scale): equal to the vertical one run so.
    newton = central_scorecard(
        (bank_tr, bank_fine), [(plat_tr, bins) for bins in held], y[tr], vs.base,
        classing=classing, calibration="newton",
    )  # fmt: skip

    own_te = vertical.own_codes(bank[te])
    fine_te = plat_fine.codes(plat[te]).astype(np.int64)
    fine_tr = plat_fine.codes(plat_tr).astype(np.int64)
    own_tr = vertical.own_codes(bank_tr)

    def pd_of(model: VerticalScorecard, fine: np.ndarray | None) -> np.ndarray:
        x = _inputs(model, own_te, fine)
        pd_: np.ndarray = 1 / (1 + np.exp(-(model.intercept + x @ model.weights)))
        return pd_

    out["vertical"] = _metrics(y[te], pd_of(vertical, fine_te))
    out["vertical_newton_step"] = _metrics(y[te], pd_of(newton, fine_te))
    out["bank_only"] = _metrics(y[te], pd_of(alone, None))
    for name, model, fine in (("mle_joined", vertical, fine_tr), ("mle_bank_only", alone, None)):
        x_tr = _inputs(model, own_tr, fine)
        mle = LogisticRegression(C=np.inf, max_iter=5000, tol=1e-10).fit(x_tr, y[tr])
        x_te = _inputs(model, own_te, fine_te if fine is not None else None)
        out[name] = _metrics(y[te], mle.predict_proba(x_te)[:, 1])
    out["auc_gain_over_bank_only"] = out["vertical"]["auc"] - out["bank_only"]["auc"]
    out["auc_gap_to_mle"] = out["mle_joined"]["auc"] - out["vertical"]["auc"]
    out["load_end"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    main()
