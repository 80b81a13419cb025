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
checked (`checks`) before use. With several feature parties, each pair's coarse x coarse
cross table comes from one of them encrypting its coarse codes under the label party's key
and the other summing them per its own coarse codes (`ScorecardLink.cross`; over Flower the
ciphertexts never reach the label party's node: docs/VERTICAL.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Protocol

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
    """How the label party reaches a feature party (a method call in process, a message over
    Flower)."""

    def columns(self) -> FineColumns: ...

    def tables(self, message: EncryptedSlots) -> EncryptedTables: ...

    def coarse(self, maps: Sequence[np.ndarray]) -> PairCounts: ...

    def cross(self, peer: Any) -> EncryptedTables:
        """`peer` (another of the links, an earlier feature party)'s coarse codes, encrypted
        by it under the label party's key, summed per this party's coarse codes."""
        ...


@dataclass
class _Party:
    """One feature party as the label party knows it, from its checked answers."""

    link: ScorecardLink
    cols: FineColumns
    per_bin: list[np.ndarray]  # per feature: its fine bins' decrypted slot sums
    features: tuple[fit.PlatformFeature, ...] = ()
    coarse_rows: list[np.ndarray] = field(default_factory=list)  # per feature, rows per code
    pairs: list[np.ndarray] = field(default_factory=list)  # its coarse pair tables
    floor: int | None = None  # its pair-min-rows, which its cross tables are held to too

    @property
    def maps(self) -> list[np.ndarray]:
        return [f.merge for f in self.features]


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
    values and monotone direction); every feature party holds the same rows in the same
    order (`parties`, in the order of their features in the model). An own coarse bin of
    fewer than `min_rows` rows (at least `checks.MIN_CELL_ROWS`; none aside) is refused: the
    cross tables would show the feature parties' bins of its few applicants."""
    if not parties:
        raise ValueError("the vertical scorecard takes at least one feature party")
    n = len(frame)
    y = labels(y, n)
    bads = int(y.sum())
    own, own_codes = own_features(frame, y, fine, schema, classing)
    min_rows = checks.min_cell_rows(min_rows)
    own_rows = [np.bincount(own_codes[:, a], minlength=f.bins.n_bins) for a, f in enumerate(own)]
    for rows, f in zip(own_rows, own, strict=True):
        checks.check_cells(rows, f.name, min_rows)  # the platform's counts per one of them

    # From here on only the checked, int64 copies of the platforms' answers are used.
    taken = list(fine.names)
    columns = []
    for link in parties:
        cols = checks.check_columns(link.columns(), n, schema, taken)
        taken += cols.names  # a feature answered by two parties is refused
        columns.append(cols)
    plan = slots.plan(n, [f.bins.n_bins for f in own], key.public.plaintext_bits())
    sent = key.public.encrypt(slots.pack(plan, y, own_codes))
    message = EncryptedSlots(key.public.to_bytes(), sent.to_bytes(), n, plan.columns)
    held: list[_Party] = []
    for link, cols in zip(parties, columns, strict=True):
        reply = link.tables(message)  # the same ciphertexts for every feature party
        buckets = checks.whole(reply.buckets, "sums: buckets")
        n_bins = [cols.n_bins(j) for j in range(len(cols.names))]
        sums = _decrypted(reply.columns, buckets, n_bins, plan, key)
        sums = checks.check_tables(sums, cols.names, cols.rows, buckets, own_rows, plan.offsets,
                                   bads)  # fmt: skip
        held.append(_Party(link, cols, [sums[j * buckets : j * buckets + k]
                                        for j, k in enumerate(n_bins)]))  # fmt: skip
    for party in held:
        party.features = _classed(party, schema, classing)
        party.coarse_rows = coarse_rows(party.maps, party.cols.rows)
        answer = party.link.coarse(party.maps)
        party.pairs = checks.check_pairs(answer, party.cols.names, party.coarse_rows, n)
        party.floor = checks.pair_floor(answer.min_rows)
    pairs = combinations(range(len(held)), 2)
    cross = {(k, m): _cross(held[k], held[m], n, key) for k, m in pairs}
    gram, xty = _moments(own, own_codes, y, held, cross, plan.offsets)
    intercept, weights = fit.solve(gram, xty, bads, ridge=ridge, calibration=calibration)
    platform = tuple(f for party in held for f in party.features)
    return fit.scorecard(intercept, weights, own, platform, scale or ScoreScale())


def _classed(party: _Party, schema: Schema, classing: Classing) -> tuple[fit.PlatformFeature, ...]:
    """Coarse classing and WOE of a feature party's features from its decrypted counts."""
    cols = party.cols
    fine_p = fit.stand_in_bins(
        list(zip(cols.names, cols.categorical, cols.regular, strict=True)), schema
    )
    named = list(zip(cols.names, party.per_bin, strict=True))
    counts = BinCounts(
        goods={c: (b[:, slots.COUNT] - b[:, slots.BAD]).tolist() for c, b in named},
        bads={c: b[:, slots.BAD].tolist() for c, b in named},
    )
    return fit.platform_features(fine_p, counts, schema, classing)


def _cross(first: _Party, second: _Party, n: int, key: SecretKey) -> list[np.ndarray]:
    """Per (feature a of `first`, feature b of `second`) their coarse x coarse table, from
    `first`'s encrypted coarse one-hots summed by `second` per its coarse codes (checked
    against both parties' coarse rows; no label slot), each cell empty or at least the
    stricter of the two parties' `pair-min-rows` when either set one: this party decrypts
    the cells, so it holds them to that floor before any use (docs/PRIVACY.md, "The cross
    tables' floor": what that does and does not prevent)."""
    plan = slots.plan(n, [len(r) for r in first.coarse_rows], key.public.plaintext_bits())
    reply = second.link.cross(first.link)
    buckets = checks.whole(reply.buckets, "cross sums: buckets")
    sums = _decrypted(reply.columns, buckets, [len(r) for r in second.coarse_rows], plan, key)
    sums = checks.check_tables(sums, second.cols.names, second.coarse_rows, buckets,
                               first.coarse_rows, plan.offsets, 0)  # fmt: skip
    floors = [f for f in (first.floor, second.floor) if f is not None]
    out = []
    for a, rows in enumerate(first.coarse_rows):
        at = plan.offsets[a]
        for b, own in enumerate(second.coarse_rows):
            table = sums[b * buckets : b * buckets + len(own), at : at + len(rows)].T
            if floors:
                names = first.cols.names[a], second.cols.names[b]
                checks.check_cross_cells(table, *names, max(floors))
            out.append(table)
    return out  # a outer, b inner: (coarse of a, coarse of b)


def _decrypted(
    columns: object, buckets: int, n_bins: Sequence[int], plan: slots.SlotPlan, key: SecretKey
) -> np.ndarray:
    """A feature party's sums, decrypted and unpacked: (features * buckets, slots)."""
    m = len(n_bins)
    if not isinstance(columns, tuple | list) or not all(isinstance(c, bytes) for c in columns):
        raise ValueError("sums: columns must be a list of bytes")
    if len(columns) != plan.columns:
        raise ValueError(f"{len(columns)} columns of sums, {plan.columns} sent")
    if not max(n_bins) <= buckets <= checks.MAX_FINE_BINS:
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
    parties: list[_Party],
    cross: dict[tuple[int, int], list[np.ndarray]],
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """X'X and X'y, X = [1, own WOE inputs, each feature party's in turn], from own rows and
    tables."""
    a_n = len(own)
    inputs = [f.values[own_codes[:, a]] for a, f in enumerate(own)]
    x_own = np.column_stack([np.ones(len(y)), *inputs])
    first = np.cumsum([1 + a_n] + [len(p.features) for p in parties])  # each party's column
    size = int(first[-1])
    gram = np.zeros((size, size))
    xty = np.zeros(size)
    gram[: 1 + a_n, : 1 + a_n] = x_own.T @ x_own
    xty[: 1 + a_n] = x_own.T @ y
    for at0, party in zip(first.tolist(), parties, strict=False):
        u = [p.fine_values for p in party.features]  # its inputs per fine code
        woe = [p.woe.values for p in party.features]  # ... per coarse code
        for j, per_bin in enumerate(party.per_bin):
            at = at0 + j
            rows, bad = party.cols.rows[j].astype(np.float64), per_bin[:, slots.BAD]
            gram[0, at] = rows @ u[j]
            gram[at, at] = rows @ u[j] ** 2
            xty[at] = bad @ u[j]
            for a, f in enumerate(own):
                table = per_bin[:, offsets[a] : offsets[a] + f.bins.n_bins]  # (fine, own coarse)
                gram[1 + a, at] = f.values @ table.T @ u[j]
        for t, (j, k) in enumerate(combinations(range(len(woe)), 2)):  # coarse x coarse
            gram[at0 + j, at0 + k] = woe[j] @ party.pairs[t] @ woe[k]
    for (k, m), tables in cross.items():  # k < m: the upper triangle
        woe_k = [p.woe.values for p in parties[k].features]
        woe_l = [p.woe.values for p in parties[m].features]
        for t, (a, b) in enumerate((a, b) for a in range(len(woe_k)) for b in range(len(woe_l))):
            gram[first[k] + a, first[m] + b] = woe_k[a] @ tables[t] @ woe_l[b]
    upper = np.triu(gram, 1)
    return np.triu(gram) + upper.T, xty
