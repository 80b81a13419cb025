"""The label party's checks of everything a feature party sends it, before any use: shapes,
sizes and ranges, and consistency with what it already knows (the aligned training rows'
number, its own coarse bins' counts, the total of bads). Each failure is a ValueError naming
what is wrong."""

from __future__ import annotations

import numpy as np

from jointcredit.data.schema import Schema
from jointcredit.models.vertical.scorecard.messages import FineColumns, PairCounts
from jointcredit.models.vertical.scorecard.slots import BAD, COUNT

MAX_FINE_BINS = 127  # the ciphertext bucket sums' limit (`privacy.paillier.MAX_BUCKETS`)
# The fewest rows a bin whose counts the other party learns may hold, unless empty: the
# project's smallest category a node reports (`min-category-count`'s default). A bin of one
# applicant would hand the label party that applicant's bins of every other feature.
MIN_CELL_ROWS = 5


def check_cells(rows: np.ndarray, name: str, min_rows: int) -> None:
    """Refuse a bin of `name` holding fewer than `min_rows` rows, none aside."""
    small = np.flatnonzero((rows > 0) & (rows < min_rows))
    if small.size:
        k = int(small[0])
        raise ValueError(
            f"{name}: bin {k} holds {int(rows[k])} rows, fewer than {min_rows}: its counts "
            "would single out applicants; merge it or drop the feature"
        )


def _counts(value: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.asarray(value)
    if a.shape != shape or a.dtype.kind not in "iu":
        raise ValueError(f"{what}: whole-number counts of shape {shape}, got {a.dtype} {a.shape}")
    if a.size and a.min() < 0:
        raise ValueError(f"{what}: a negative count")
    return a.astype(np.int64)


def check_columns(cols: FineColumns, rows: int, schema: Schema, own: list[str]) -> None:
    m = len(cols.names)
    if m < 1 or not (
        len(cols.categorical) == len(cols.regular) == len(cols.special) == len(cols.rows) == m
    ):
        raise ValueError("fine columns: one kind, bin count and row count vector per feature")
    if len(set(cols.names)) != m:
        raise ValueError("fine columns: a feature named twice")
    whole = (int, np.integer)
    if not all(isinstance(v, whole) for v in (*cols.regular, *cols.special)):
        raise ValueError("fine columns: bin counts must be whole numbers")
    for j, name in enumerate(cols.names):
        spec = schema.features.get(name)
        if spec is None or name in own:
            raise ValueError(f"fine columns: {name!r} is not a feature party's feature")
        if cols.categorical[j] != (spec.type == "categorical"):
            raise ValueError(f"fine columns: {name!r} of another type than the schema's")
        special = 0 if cols.categorical[j] else len(spec.special)
        if cols.special[j] != special or not 1 <= cols.regular[j] <= MAX_FINE_BINS:
            raise ValueError(f"fine columns: {name!r} has {cols.regular[j]} regular and "
                             f"{cols.special[j]} special bins")  # fmt: skip
        if cols.n_bins(j) > MAX_FINE_BINS:
            raise ValueError(f"fine columns: {name!r} has more than {MAX_FINE_BINS} bins")
        counts = _counts(cols.rows[j], (cols.n_bins(j),), f"rows of {name!r}")
        if int(counts.sum()) != rows:
            raise ValueError(f"fine columns: {name!r} counts {counts.sum()} rows, not {rows}")


def check_pairs(pairs: PairCounts, cols: FineColumns) -> list[np.ndarray]:
    """The pair tables, each consistent with both features' rows per fine bin."""
    m = len(cols.names)
    if len(pairs.tables) != m * (m - 1) // 2:
        raise ValueError(f"{len(pairs.tables)} pair tables for {m} features")
    out = []
    at = 0
    for j in range(m):
        for k in range(j + 1, m):
            what = f"pair table ({cols.names[j]}, {cols.names[k]})"
            t = _counts(pairs.tables[at], (cols.n_bins(j), cols.n_bins(k)), what)
            if not (
                np.array_equal(t.sum(axis=1), cols.rows[j])
                and np.array_equal(t.sum(axis=0), cols.rows[k])
            ):
                raise ValueError(f"{what}: does not add up to the features' rows per bin")
            out.append(t)
            at += 1
    return out


def check_tables(
    sums: np.ndarray,
    cols: FineColumns,
    buckets: int,
    own_rows: list[np.ndarray],
    offsets: np.ndarray,
    bads: int,
) -> None:
    """`sums` (features * buckets, slots): the decrypted per-fine-bin sums of the slots
    (`slots` layout). Every fine bin's row slot equals its announced rows, its bads are at
    most its rows, each own feature's coarse bins split its rows, positions past a
    feature's bins are empty; over the fine bins, each own coarse bin holds its rows and the
    bads add up to the label party's."""
    for j, name in enumerate(cols.names):
        block = sums[j * buckets : (j + 1) * buckets]
        k = cols.n_bins(j)
        if block[k:].any():
            raise ValueError(f"sums of {name!r}: a sum past its fine bins")
        block = block[:k]
        if not np.array_equal(block[:, COUNT], cols.rows[j]):
            raise ValueError(f"sums of {name!r}: rows per fine bin differ from those announced")
        if np.any(block[:, BAD] > block[:, COUNT]) or int(block[:, BAD].sum()) != bads:
            raise ValueError(f"sums of {name!r}: bads per fine bin inconsistent")
        for a, rows in enumerate(own_rows):
            cross = block[:, offsets[a] : offsets[a] + len(rows)]
            if not np.array_equal(cross.sum(axis=1), block[:, COUNT]):
                raise ValueError(f"sums of {name!r}: own feature {a}'s bins do not split a bin")
            if not np.array_equal(cross.sum(axis=0), rows):
                raise ValueError(f"sums of {name!r}: own feature {a}'s bins miscounted")
