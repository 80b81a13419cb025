"""The label party's checks of everything a feature party sends it, before any use: types,
shapes, sizes and ranges, and consistency with what it already knows (the aligned training
rows' number, its own coarse bins' counts, the total of bads). Each failure is a ValueError
naming what is wrong, and never a value of the label party's own (its bads, its bins'
counts): the text may reach the feature party. Counts are validated in the type they came
in and only then converted, and the callers use the converted arrays returned here, never
the message's own fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations

import numpy as np

from jointcredit.data.schema import Schema
from jointcredit.models.vertical.cipher import MAX_BUCKETS
from jointcredit.models.vertical.scorecard.messages import FineColumns, PairCounts
from jointcredit.models.vertical.scorecard.slots import BAD, COUNT, FIRST

MAX_FINE_BINS = MAX_BUCKETS  # a fine code is a bucket of the ciphertext sums
# The fewest rows a bin or pair-table cell whose counts the other party learns may hold,
# unless empty. A floor, not a setting: a run's `min-category-count` (1 for vertical runs)
# never lowers it (`min_cell_rows`). A bin of one applicant would hand the label party that
# applicant's bins of every other feature.
MIN_CELL_ROWS = 5
MAX_PAIR_FLOOR = 1_000_000  # a pair-min-rows above the most aligned rows a run takes


def min_cell_rows(requested: int) -> int:
    """The minimum a party applies: the one asked for, never below `MIN_CELL_ROWS`."""
    return max(int(requested), MIN_CELL_ROWS)


def check_cells(rows: np.ndarray, name: str, min_rows: int, advice: str = "") -> None:
    """Refuse a bin (or table cell) of `name` holding fewer than `min_rows` rows, none
    aside."""
    small = np.argwhere((rows > 0) & (rows < min_rows))
    if small.size:
        at = tuple(int(i) for i in small[0])
        where = at[0] if len(at) == 1 else at
        raise ValueError(
            f"{name}: bin {where} holds {int(rows[at])} rows, fewer than {min_rows}: its counts "
            f"would single out applicants; {advice or 'merge it or drop the feature'}"
        )


def whole(value: object, what: str) -> int:
    """A Python or numpy integer, not a bool or a float."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{what}: a whole number, got {type(value).__name__}")
    return int(value)


def counts(value: object, shape: tuple[int, ...], what: str, most: int) -> np.ndarray:
    """`value` as int64 counts: a numpy integer array of `shape`, each count in 0..`most`,
    checked in its own dtype first (a uint64 count of 2^63 or more would wrap negative)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu" or value.shape != shape:
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value)
        raise ValueError(f"{what}: an integer array of shape {shape}, got {got}")
    if value.size and (value.min() < 0 or value.max() > most):
        raise ValueError(f"{what}: a count below 0 or above the {most} aligned training rows")
    return value.astype(np.int64)


def check_columns(cols: FineColumns, rows: int, schema: Schema, own: list[str]) -> FineColumns:
    """`cols` with its fields' types checked and its row counts as int64 (what to use)."""
    fields = (cols.names, cols.categorical, cols.regular, cols.special, cols.rows)
    if not all(isinstance(f, tuple | list) for f in fields):
        raise ValueError("fine columns: names, categorical, regular, special and rows as lists")
    m = len(cols.names)
    if m < 1 or not all(len(f) == m for f in fields):
        raise ValueError("fine columns: one kind, bin count and row count vector per feature")
    if not all(isinstance(v, str) for v in cols.names):
        raise ValueError("fine columns: feature names must be strings")
    if len(set(cols.names)) != m:
        raise ValueError("fine columns: a feature named twice")
    if not all(isinstance(v, bool | np.bool_) for v in cols.categorical):
        raise ValueError("fine columns: categorical must be booleans")
    regular = tuple(whole(v, "fine columns: bin counts") for v in cols.regular)
    special = tuple(whole(v, "fine columns: bin counts") for v in cols.special)
    out = replace(cols, categorical=tuple(bool(v) for v in cols.categorical), regular=regular,
                  special=special)  # fmt: skip
    normal = []
    for j, name in enumerate(cols.names):
        spec = schema.features.get(name)
        if spec is None or name in own:
            raise ValueError(f"fine columns: {name!r} is not a feature party's feature")
        if out.categorical[j] != (spec.type == "categorical"):
            raise ValueError(f"fine columns: {name!r} of another type than the schema's")
        n_special = 0 if out.categorical[j] else len(spec.special)
        if special[j] != n_special or not 1 <= regular[j] <= MAX_FINE_BINS:
            raise ValueError(f"fine columns: {name!r} has {regular[j]} regular and "
                             f"{special[j]} special bins")  # fmt: skip
        if out.n_bins(j) > MAX_FINE_BINS:
            raise ValueError(f"fine columns: {name!r} has more than {MAX_FINE_BINS} bins")
        c = counts(cols.rows[j], (out.n_bins(j),), f"rows of {name!r}", rows)
        if int(c.sum()) != rows:
            raise ValueError(f"fine columns: {name!r} counts {c.sum()} rows, not {rows}")
        normal.append(c)
    return replace(out, rows=tuple(normal))


def check_pair_cells(table: np.ndarray, a: str, b: str, min_rows: int) -> None:
    """The feature party's refusal of a pair table with a non-empty cell under `min_rows`
    rows: the message names the pair and the floor, no cell and no count (it reaches the
    label party and the coordinator)."""
    if np.any((table > 0) & (table < min_rows)):
        raise ValueError(
            f"pair table ({a}, {b}): a cell holds fewer than {min_rows} rows; not sent (its "
            f"pair-min-rows): coarser fine bins of {a!r} or {b!r} may help"
        )


def pair_floor(value: object) -> int | None:
    """A feature party's announced `pair-min-rows`: None (unset) or a whole number from
    `MIN_CELL_ROWS` to `MAX_PAIR_FLOOR`; a ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError("pair tables: pair-min-rows must be a whole number")
    if not MIN_CELL_ROWS <= int(value) <= MAX_PAIR_FLOOR:
        raise ValueError(f"pair tables: pair-min-rows {int(value)} outside "
                         f"{MIN_CELL_ROWS}..{MAX_PAIR_FLOOR}")  # fmt: skip
    return int(value)


def check_cross_cells(table: np.ndarray, a: str, b: str, min_rows: int) -> None:
    """The label party's refusal of a decrypted cross table with a non-empty cell under
    `min_rows` (the stricter of the two feature parties' `pair-min-rows`): it is used for
    nothing and the run ends. The message names the pair and the floor, no cell and no count
    (it may reach the coordinator and the feature parties)."""
    if np.any((table > 0) & (table < min_rows)):
        raise ValueError(
            f"cross table ({a}, {b}): a cell holds fewer than {min_rows} rows (the feature "
            f"parties' pair-min-rows); not used: coarser fine bins of {a!r} or {b!r} may help"
        )


def check_pairs(
    pairs: PairCounts, names: Sequence[str], marginals: Sequence[np.ndarray], rows: int
) -> list[np.ndarray]:
    """The coarse pair tables as int64, per pair (j, k), j < k, of features `names` whose rows
    per coarse code are `marginals` (the label party's own: the feature party's rows per fine
    bin pooled by its merge maps): each table of their shape, each cell at most its row's and
    its column's totals and the table adding up to both."""
    m = len(names)
    tables = pairs.tables
    if not isinstance(tables, tuple | list) or len(tables) != m * (m - 1) // 2:
        raise ValueError(f"pair tables: {m * (m - 1) // 2} for {m} features")
    out = []
    for at, (j, k) in enumerate(combinations(range(m), 2)):
        what = f"pair table ({names[j]}, {names[k]})"
        t = counts(tables[at], (len(marginals[j]), len(marginals[k])), what, rows)
        if np.any(t > np.minimum.outer(marginals[j], marginals[k])):
            raise ValueError(f"{what}: a cell above its row's or column's total")
        if not (
            np.array_equal(t.sum(axis=1), marginals[j])
            and np.array_equal(t.sum(axis=0), marginals[k])
        ):
            raise ValueError(f"{what}: does not add up to the features' rows per coarse bin")
        out.append(t)
    return out


def check_tables(
    sums: np.ndarray,
    names: Sequence[str],
    rows: Sequence[np.ndarray],
    buckets: int,
    own_rows: Sequence[np.ndarray],
    offsets: np.ndarray,
    bads: int,
) -> np.ndarray:
    """`sums` (features * buckets, slots): the decrypted per-bin sums of the slots (`slots`
    layout) over the bins of a feature party's features `names` with `rows` per bin (its
    fine bins, or for a cross table its coarse bins), returned as int64. Every bin's row slot
    equals its rows, its bads are at most its rows, each slotted feature's bins (`own_rows`:
    the label party's coarse bins, or another feature party's) split its rows, positions past
    a feature's bins are empty; over the bins, each slotted bin holds its rows and the bads
    add up to `bads`. The messages name no count: they are the label party's."""
    n = int(rows[0].sum())  # the aligned training rows (`check_columns`)
    shape = (len(names) * buckets, FIRST + sum(len(r) for r in own_rows))
    sums = counts(sums, shape, "decrypted sums", n)
    for j, name in enumerate(names):
        block = sums[j * buckets : (j + 1) * buckets]
        k = len(rows[j])
        if block[k:].any():
            raise ValueError(f"sums of {name!r}: a sum past its bins")
        block = block[:k]
        if not np.array_equal(block[:, COUNT], rows[j]):
            raise ValueError(f"sums of {name!r}: rows per bin differ from those announced")
        if np.any(block[:, BAD] > block[:, COUNT]) or int(block[:, BAD].sum()) != bads:
            raise ValueError(f"sums of {name!r}: bads per bin inconsistent")
        for a, own in enumerate(own_rows):
            cross = block[:, offsets[a] : offsets[a] + len(own)]
            if not np.array_equal(cross.sum(axis=1), block[:, COUNT]):
                raise ValueError(f"sums of {name!r}: slotted feature {a}'s bins do not split a bin")
            if not np.array_equal(cross.sum(axis=0), own):
                raise ValueError(f"sums of {name!r}: slotted feature {a}'s bins miscounted")
    return sums
