"""The label party (a bank) fits the vertical scorecard: its own bins, classing and WOE from
its own rows and labels, the feature party's from homomorphic sums, and one Newton step
(`fit`) on X'X and X'y assembled from contingency tables, none of them a row of the other.

Three steps with the feature party: it announces its fine bins' row counts (label-free); the
label party encrypts once per aligned training row the packed slots of its label and its own
features' coarse bins (`slots`; its classing needs only its own labels, so they are known
before anything is sent), the feature party sums them per its fine bins, and one decryption
per (fine bin, ciphertext column) gives the bads per fine bin and every (own coarse bin,
feature party's fine bin) count; the label party classes the feature party's fine bins from
those counts and sends it the merge maps, and the feature party answers the joint
coarse-code counts of each pair of its features (all X'X needs: the inputs are constant on
coarse bins). The WOE and weights of the feature party's features stay here. Every answer is
checked (`checks`) before use. One feature party: a second one's cross table with the first
would need one of them to encrypt its codes for the other (docs/VERTICAL.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Protocol

import numpy as np
import pandas as pd

from jointcredit.data.schema import Schema
from jointcredit.models.binning import BinCounts, BinningSpec, count_bins
from jointcredit.models.binning.encoding import WoeFeature, woe_features
from jointcredit.models.binning.table import Classing, classify
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.vertical.cipher import SecretKey
from jointcredit.models.vertical.merge_maps import coarse_rows
from jointcredit.models.vertical.scorecard import checks, fit, slots
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)


class ScorecardLink(Protocol):
    """How the label party reaches the feature party (a method call now, a message later)."""

    def columns(self) -> FineColumns: ...

    def tables(self, message: EncryptedSlots) -> EncryptedTables: ...

    def coarse(self, maps: Sequence[np.ndarray]) -> PairCounts: ...


def own_features(
    frame: pd.DataFrame, y: np.ndarray, fine: BinningSpec, schema: Schema, classing: Classing
) -> tuple[list[WoeFeature], np.ndarray]:
    """The label party's WOE inputs (its coarse classing of its own fine bins, as the
    horizontal scorecard's) and its rows' coarse codes."""
    table = classify(fine, count_bins(frame, y, fine), schema, classing)
    return woe_features(table), table.bins.codes(frame).astype(np.int64)


def labels(y: np.ndarray, rows: int) -> np.ndarray:
    out = np.asarray(y)
    if out.shape != (rows,) or not np.isin(out, (0, 1)).all():
        raise ValueError(f"one 0/1 label per row ({rows}), got shape {out.shape}")
    if not 0 < int(out.sum()) < rows:
        raise ValueError("the training rows need both goods and bads")
    return out.astype(np.int64)


def train(
    frame: pd.DataFrame,
    y: np.ndarray,
    fine: BinningSpec,
    schema: Schema,
    parties: Sequence[ScorecardLink],
    key: SecretKey,
    *,
    classing: Classing,
    scale: ScoreScale | None = None,
    ridge: float = fit.RIDGE,
    calibration: fit.Calibration = "lda",
    min_rows: int = checks.MIN_CELL_ROWS,
) -> fit.VerticalScorecard:
    """`frame`: the label party's aligned training rows (its features), `y` their labels,
    `fine` its fine bins of them; `schema` the federation's (every feature's type, special
    values and monotone direction); the feature party holds the same rows in the same order.
    An own coarse bin of fewer than `min_rows` rows (at least `checks.MIN_CELL_ROWS`; none
    aside) is refused: the cross tables would show the platform's bins of its few
    applicants."""
    if len(parties) != 1:
        raise ValueError(
            f"the vertical scorecard takes exactly one feature party, not {len(parties)}: "
            "a cross table between two feature parties is not computed yet"
        )
    (link,) = parties
    n = len(frame)
    y = labels(y, n)
    bads = int(y.sum())
    own, own_codes = own_features(frame, y, fine, schema, classing)
    min_rows = checks.min_cell_rows(min_rows)
    own_rows = [np.bincount(own_codes[:, a], minlength=f.bins.n_bins) for a, f in enumerate(own)]
    for rows, f in zip(own_rows, own, strict=True):
        checks.check_cells(rows, f.name, min_rows)  # the platform's counts per one of them

    # From here on only the checked, int64 copies of the platform's answers are used.
    cols = checks.check_columns(link.columns(), n, schema, fine.names)

    plan = slots.plan(n, [f.bins.n_bins for f in own], key.public.plaintext_bits())
    sent = key.public.encrypt(slots.pack(plan, y, own_codes))
    reply = link.tables(EncryptedSlots(key.public.to_bytes(), sent.to_bytes(), n, plan.columns))
    buckets = checks.whole(reply.buckets, "sums: buckets")
    sums = _decrypted(reply.columns, buckets, cols, plan, key)
    sums = checks.check_tables(sums, cols, buckets, own_rows, plan.offsets, bads)

    fine_p = fit.stand_in_bins(
        list(zip(cols.names, cols.categorical, cols.regular, strict=True)), schema
    )
    at = buckets * np.arange(len(cols.names))
    per_bin = [sums[a : a + cols.n_bins(j)] for j, a in enumerate(at.tolist())]
    named = list(zip(cols.names, per_bin, strict=True))
    counts = BinCounts(
        goods={c: (b[:, slots.COUNT] - b[:, slots.BAD]).tolist() for c, b in named},
        bads={c: b[:, slots.BAD].tolist() for c, b in named},
    )
    platform = fit.platform_features(fine_p, counts, schema, classing)
    maps = [p.merge for p in platform]
    pairs = checks.check_pairs(link.coarse(maps), cols.names, coarse_rows(maps, cols.rows), n)
    gram, xty = _moments(own, own_codes, y, platform, cols, pairs, per_bin, plan.offsets)
    intercept, weights = fit.solve(gram, xty, bads, ridge=ridge, calibration=calibration)
    return fit.scorecard(intercept, weights, own, platform, scale or ScoreScale())


def _decrypted(
    columns: object, buckets: int, cols: FineColumns, plan: slots.SlotPlan, key: SecretKey
) -> np.ndarray:
    """The feature party's sums, decrypted and unpacked: (features * buckets, slots)."""
    m = len(cols.names)
    if not isinstance(columns, tuple | list) or not all(isinstance(c, bytes) for c in columns):
        raise ValueError("sums: columns must be a list of bytes")
    if len(columns) != plan.columns:
        raise ValueError(f"{len(columns)} columns of sums, {plan.columns} sent")
    if not max(cols.n_bins(j) for j in range(m)) <= buckets <= checks.MAX_FINE_BINS:
        raise ValueError(f"sums over {buckets} buckets per feature")
    plain = []
    for data in columns:
        column = key.public.load(data)
        if len(column) != m * buckets:
            raise ValueError(f"{len(column)} sums in a column, {m * buckets} expected")
        plain.append(key.decrypt(column))
    return slots.unpack(plan, plain)


def _moments(
    own: list[WoeFeature],
    own_codes: np.ndarray,
    y: np.ndarray,
    platform: tuple[fit.PlatformFeature, ...],
    cols: FineColumns,
    pairs: list[np.ndarray],
    per_bin: list[np.ndarray],
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """X'X and X'y, X = [1, own WOE inputs, the feature party's], from own rows and tables."""
    a_n, p_n = len(own), len(platform)
    inputs = [f.values[own_codes[:, a]] for a, f in enumerate(own)]
    x_own = np.column_stack([np.ones(len(y)), *inputs])
    u = [p.fine_values for p in platform]  # the feature party's inputs per fine code
    gram = np.zeros((1 + a_n + p_n, 1 + a_n + p_n))
    xty = np.zeros(1 + a_n + p_n)
    gram[: 1 + a_n, : 1 + a_n] = x_own.T @ x_own
    xty[: 1 + a_n] = x_own.T @ y
    for j in range(p_n):
        at = 1 + a_n + j
        rows, bad = cols.rows[j].astype(np.float64), per_bin[j][:, slots.BAD]
        gram[0, at] = rows @ u[j]
        gram[at, at] = rows @ u[j] ** 2
        xty[at] = bad @ u[j]
        for a, f in enumerate(own):
            cross = per_bin[j][:, offsets[a] : offsets[a] + f.bins.n_bins]  # (fine, own coarse)
            gram[1 + a, at] = f.values @ cross.T @ u[j]
    for t, (j, k) in enumerate(combinations(range(p_n), 2)):  # coarse x coarse
        gram[1 + a_n + j, 1 + a_n + k] = platform[j].woe.values @ pairs[t] @ platform[k].woe.values
    upper = np.triu(gram, 1)
    return np.triu(gram) + upper.T, xty
