"""Stability monitoring: the served applicants against the training reference distribution
(`reference.json`, `jointcredit.models.reference`).

Every applicant the service decides (one decision, each row of a batch, each applicant of a
columnar batch) joins a sliding window of the last `size` applicants: its model score (before
policy rules) and its features' bins. The window lives in a database every worker sees
(`service.window`); the index values are computed from it, so every worker reports the same.

On the decision path an applicant only joins a list in memory. A background thread writes the
list to the window in groups (every `interval` seconds, or at once when `flush_rows` wait),
then recomputes the indices, sets the gauges and, when an index moved to another band, logs
one line: the worker whose update changed the band's stored value logs it, so a crossing is
logged once, not once per worker or per request. `GET /v1/monitoring` writes this worker's
waiting applicants first; other workers' reach the window within `interval`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jointcredit.models.reference import EPSILON, Reference, band, score_bands, stability_index
from jointcredit.service.metrics import Metrics
from jointcredit.service.window import WindowStore, window_url

log = logging.getLogger("jointcredit.service.monitoring")

DEFAULT_WINDOW = 10_000
# Bands are judged (and crossings logged) only over at least this many applicants (or the whole
# window, if smaller): over a handful, sampling alone puts PSI in "act" (one applicant: ~7).
MIN_APPLICANTS = 100
SCORE = "score"


class Monitor:
    def __init__(
        self,
        reference: Reference,
        audit_url: str,
        metrics: Metrics,
        *,
        size: int = DEFAULT_WINDOW,
        interval: float = 1.0,
        flush_rows: int = 1000,
    ) -> None:
        self.reference, self.metrics = reference, metrics
        self.bins = reference.bins
        self.size, self.interval, self.flush_rows = size, interval, flush_rows
        self.min_applicants = min(size, MIN_APPLICANTS)
        self.store = WindowStore(window_url(audit_url), size, len(self.bins.features))
        self._pending: list[tuple[Sequence[int], Mapping[str, Sequence[Any]]]] = []
        self._singles: list[tuple[int, Mapping[str, Any]]] = []
        self._waiting = 0
        self._lock = threading.Lock()  # the pending list
        self._flushing = threading.Lock()  # one flush at a time in this process
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._bands: dict[str, str] = {}  # each index's band as this worker last stored it
        self._thread = threading.Thread(target=self._run, name="monitoring", daemon=True)
        self._thread.start()

    def add(self, scores: Sequence[int], features: Mapping[str, Sequence[Any]]) -> None:
        """Applicants just decided (`features`: one column per feature). No work here but an
        append: coding and writing happen in the background."""
        with self._lock:
            self._pending.append((scores, features))
            self._added(len(scores))

    def add_one(self, score: int, applicant: Mapping[str, Any]) -> None:
        """One applicant just decided (`applicant`: its features' values)."""
        with self._lock:
            self._singles.append((score, applicant))
            self._added(1)

    def _added(self, n: int) -> None:
        self._waiting += n
        if self._waiting >= self.flush_rows:
            self._wake.set()

    def flush(self) -> dict[str, Any]:
        """Write this worker's waiting applicants, recompute, update gauges, log crossings;
        the snapshot it computed."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
                singles, self._singles = self._singles, []
                self._waiting = 0
            parts = [self.bins.codes(dict(p[1])) for p in pending]
            if singles:  # coded as columns: a quarter of the cost of one record at a time
                columns = {f: [a[f] for _, a in singles] for f in self.bins.names}
                parts.append(self.bins.codes(columns))
            if parts:
                scores = [s for p in pending for s in p[0]] + [s for s, _ in singles]
                self.store.add(scores, np.concatenate(parts))
            snap = self.snapshot()
            self._publish(snap)
            return snap

    def snapshot(self) -> dict[str, Any]:
        """The indices over the current window (the response of `GET /v1/monitoring`)."""
        scores, codes = self.store.window()
        ref = self.reference
        actual = np.bincount(score_bands(scores, ref.score_edges), minlength=len(ref.score_counts))
        psi = stability_index(ref.score_counts, actual)
        features = {}
        for j, f in enumerate(self.bins.features):
            counts = np.bincount(codes[:, j].astype(np.int64), minlength=f.n_bins)
            csi = stability_index(ref.feature_counts[f.name], counts)
            features[f.name] = _index(csi)
        return {
            "window": {"size": self.size, "applicants": len(scores)},
            "reference": {"rows": ref.rows, "institutions": ref.institutions},
            "epsilon": EPSILON,
            "score": _index(psi),
            "features": features,
        }

    def _publish(self, snap: dict[str, Any]) -> None:
        indices = {SCORE: snap["score"], **{f"feature {k}": v for k, v in snap["features"].items()}}
        self.metrics.stability(
            snap["window"]["applicants"],
            snap["score"]["value"],
            {k: v["value"] for k, v in snap["features"].items()},
        )
        if snap["window"]["applicants"] < self.min_applicants:
            return
        for name, index in indices.items():
            if self._bands.get(name) == index["band"]:
                continue  # unchanged since this worker stored it: no transaction
            self._bands[name] = index["band"]
            left = self.store.cross(name, index["band"])
            if left is not None:
                what = "PSI" if name == SCORE else "CSI"
                log.warning(
                    "stability: %s of %s %.4f moved from %s to %s (window of %d applicants)",
                    what, name, index["value"], left, index["band"],
                    snap["window"]["applicants"],
                )  # fmt: skip

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._waiting:
                try:
                    self.flush()
                except Exception:  # the window must never take the service down
                    log.exception("stability monitoring: writing the window failed")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        finally:
            self.store.close()


def _index(value: float) -> dict[str, Any]:
    return {"value": None if np.isnan(value) else round(value, 6), "band": band(value)}
