"""The vertical scorecard's messages (`jointcredit.models.vertical.scorecard.messages`) as
Flower payloads and back. Every array's dtype, shape and size is checked before use (a relayed
message may be hostile) and bounded (features, fine bins, ciphertext columns); a payload that
is not what its action carries raises `ProtocolError` naming it. The contents' consistency
(counts adding up, against the schema) is `scorecard.checks`', after decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from jointcredit.client.vertical_wire import _bytes, _get, _scalar
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.vertical.merge_maps import MAX_FEATURES, check_merge_maps
from jointcredit.models.vertical.scorecard.checks import MAX_FINE_BINS
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)

Arrays = dict[str, np.ndarray]
MAX_NAMES_BYTES = 64 * 1024
MAX_COLUMNS = 64  # plaintexts per row (`slots.SlotPlan.columns`)


def columns_arrays(c: FineColumns) -> Arrays:
    return {
        v.NAMES: _bytes("\n".join(c.names).encode()),
        v.CATEGORICAL: np.asarray(c.categorical, dtype=bool),
        v.REGULAR: np.asarray(c.regular, dtype=np.int64),
        v.SPECIAL: np.asarray(c.special, dtype=np.int64),
        v.ROWS: np.concatenate([np.asarray(r, dtype=np.int64) for r in c.rows]),
    }


def columns_from(arrays: Arrays) -> FineColumns:
    raw = _get(arrays, v.NAMES, "uint8")
    if raw.size > MAX_NAMES_BYTES:
        raise ProtocolError(f"fine columns: names of {raw.size} bytes")
    try:
        names = tuple(raw.tobytes().decode().split("\n"))
    except UnicodeDecodeError as exc:
        raise ProtocolError("fine columns: names not UTF-8") from exc
    categorical = _get(arrays, v.CATEGORICAL, "bool")
    regular = _get(arrays, v.REGULAR, "int64")
    special = _get(arrays, v.SPECIAL, "int64")
    m = len(names)
    if not 0 < m <= MAX_FEATURES or {len(categorical), len(regular), len(special)} != {m}:
        raise ProtocolError("fine columns: one kind, regular and special bin count per name")
    n_bins = regular + special + 1
    if regular.min() < 1 or special.min() < 0 or n_bins.max() > MAX_FINE_BINS:
        raise ProtocolError(f"fine columns: 1 to {MAX_FINE_BINS} bins per feature")
    rows = _get(arrays, v.ROWS, "int64")
    if len(rows) != int(n_bins.sum()):
        raise ProtocolError(f"fine columns: {len(rows)} row counts for {n_bins.sum()} bins")
    split = np.split(rows, np.cumsum(n_bins)[:-1])
    return FineColumns(
        names=names,
        categorical=tuple(bool(x) for x in categorical),
        regular=tuple(int(x) for x in regular),
        special=tuple(int(x) for x in special),
        rows=tuple(split),
    )


def pairs_arrays(p: PairCounts) -> Arrays:
    flat = [np.asarray(t, dtype=np.int64).ravel() for t in p.tables]
    return {
        v.PAIRS: np.concatenate(flat) if flat else np.zeros(0, np.int64),
        v.PAIR_FLOOR: np.array([p.min_rows or 0], dtype=np.int64),
    }


def pairs_from(arrays: Arrays, n_coarse: Sequence[int]) -> PairCounts:
    """The coarse pair tables, shaped by each feature's coarse codes (`n_coarse`: of the
    merge maps the label party sent)."""
    flat = _get(arrays, v.PAIRS, "int64")
    shapes = [(a, b) for a, b in combinations(n_coarse, 2)]
    sizes = [a * b for a, b in shapes]
    if len(flat) != sum(sizes):
        raise ProtocolError(f"pair counts: {len(flat)} values for {sum(sizes)} cells")
    parts = np.split(flat, np.cumsum(sizes)[:-1]) if shapes else []
    floor = _scalar(arrays, v.PAIR_FLOOR)  # range-checked by the label party (checks.pair_floor)
    return PairCounts(
        tuple(t.reshape(s) for t, s in zip(parts, shapes, strict=True)), floor or None
    )


def slots_arrays(m: EncryptedSlots) -> Arrays:
    return {
        v.PUBLIC_KEY: _bytes(m.public_key),
        v.CIPHERTEXTS: _bytes(m.ciphertexts),
        v.ROWS: np.array([m.rows], dtype=np.int64),
        v.COLUMNS: np.array([m.columns], dtype=np.int64),
    }


def slots_from(arrays: Arrays) -> EncryptedSlots:
    columns = _scalar(arrays, v.COLUMNS)
    if not 0 < columns <= MAX_COLUMNS:
        raise ProtocolError(f"{columns} ciphertext columns per row")
    return EncryptedSlots(
        _get(arrays, v.PUBLIC_KEY, "uint8").tobytes(),
        _get(arrays, v.CIPHERTEXTS, "uint8").tobytes(),
        _scalar(arrays, v.ROWS),
        columns,
    )


def tables_arrays(t: EncryptedTables) -> Arrays:
    out = {f"{v.NODE_PREFIX}{i}": _bytes(b) for i, b in enumerate(t.columns)}
    out[v.BUCKETS] = np.array([t.buckets], dtype=np.int64)
    out[v.COLUMNS] = np.array([len(t.columns)], dtype=np.int64)
    return out


def tables_from(arrays: Arrays) -> EncryptedTables:
    n = _scalar(arrays, v.COLUMNS)
    if not 0 < n <= MAX_COLUMNS:
        raise ProtocolError(f"{n} columns of ciphertext sums")
    columns = tuple(_get(arrays, f"{v.NODE_PREFIX}{i}", "uint8").tobytes() for i in range(n))
    return EncryptedTables(columns, _scalar(arrays, v.BUCKETS))


def codes_from(arrays: Arrays, rows: int, n_coarse: Sequence[int]) -> np.ndarray:
    """A feature party's coarse codes of `rows` rows, each within its feature's `n_coarse`
    (the scorecard's attributes of that feature)."""
    codes = _get(arrays, v.CODES, "int64", 2)
    m = len(n_coarse)
    if codes.shape != (rows, m):
        raise ProtocolError(f"coarse codes of shape {codes.shape}, not ({rows}, {m})")
    limits = np.asarray(n_coarse, dtype=np.int64)
    if codes.size and (codes.min() < 0 or np.any(codes >= limits)):
        raise ProtocolError("a coarse code outside its feature's coarse bins")
    return codes


def merge_arrays(maps: Sequence[np.ndarray]) -> Arrays:
    """The label party's merge maps, one row per feature, padded with -1 past its fine bins."""
    width = max((len(m) for m in maps), default=0)
    out = np.full((len(maps), width), -1, dtype=np.int64)
    for j, m in enumerate(maps):
        out[j, : len(m)] = m
    return {v.MERGE: out}


def merge_from(arrays: Arrays, bins: BinningSpec) -> tuple[np.ndarray, ...]:
    """The merge maps of a write-part request, checked against the feature party's own fine
    bins (`merge_maps.check_merge_maps`); `ProtocolError` naming the field otherwise."""
    raw = _get(arrays, v.MERGE, "int64", 2)
    n_bins = [f.n_bins for f in bins.features]
    if raw.shape != (len(n_bins), max(n_bins, default=0)):
        raise ProtocolError(
            f"{v.MERGE!r}: shape {raw.shape}, not one map per feature of its "
            f"{len(n_bins)} ({len(n_bins)}, {max(n_bins, default=0)})"
        )
    if any(np.any(row[k:] != -1) for row, k in zip(raw, n_bins, strict=True)):
        raise ProtocolError(f"{v.MERGE!r}: a code past a feature's fine bins")
    try:
        return check_merge_maps([row[:k] for row, k in zip(raw, n_bins, strict=True)], n_bins,
                                bins.names)  # fmt: skip
    except ValueError as exc:
        raise ProtocolError(f"{v.MERGE!r}: {exc}") from exc
