"""The vertical scorecard's Flower payloads: what one party sends decodes to the same message
at the other, and a payload that is not what its action carries (wrong dtype, shape, size, a
code outside its bins, more than the bounds) is refused with `ProtocolError` naming it."""

from __future__ import annotations

import numpy as np
import pytest

from jointcredit.client import vertical_scorecard_wire as sw
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.models.vertical.merge_maps import check_pooling
from jointcredit.models.vertical.scorecard.messages import (
    EncryptedSlots,
    EncryptedTables,
    FineColumns,
    PairCounts,
)

COLS = FineColumns(
    names=("a", "b", "c"),
    categorical=(False, True, False),
    regular=(3, 2, 4),
    special=(1, 0, 0),
    rows=(np.array([4, 3, 2, 1, 0]), np.array([5, 4, 1]), np.array([1, 2, 3, 4, 0])),
)


def test_round_trips() -> None:
    cols = sw.columns_from(sw.columns_arrays(COLS))
    assert cols.names == COLS.names and cols.categorical == COLS.categorical
    assert cols.regular == COLS.regular and cols.special == COLS.special
    for got, want in zip(cols.rows, COLS.rows, strict=True):
        np.testing.assert_array_equal(got, want)
    rng = np.random.default_rng(0)
    shapes = [(4, 2), (4, 3), (2, 3)]  # coarse codes (4, 2, 3)
    pairs = PairCounts(tuple(rng.integers(0, 9, s) for s in shapes))
    back = sw.pairs_from(sw.pairs_arrays(pairs), (4, 2, 3))
    for got, want in zip(back.tables, pairs.tables, strict=True):
        np.testing.assert_array_equal(got, want)
    slots = EncryptedSlots(b"key", b"ciphertexts", 10, 2)
    assert sw.slots_from(sw.slots_arrays(slots)) == slots
    tables = EncryptedTables((b"x", b"yz"), 5)
    assert sw.tables_from(sw.tables_arrays(tables)) == tables
    codes = np.array([[0, 1, 4], [4, 2, 0]], dtype=np.int64)
    np.testing.assert_array_equal(sw.codes_from({v.CODES: codes}, 2, (5, 3, 5)), codes)


def _columns(**changed: np.ndarray) -> dict[str, np.ndarray]:
    return sw.columns_arrays(COLS) | changed


@pytest.mark.parametrize(
    ("arrays", "named"),
    [
        (_columns(**{v.ROWS: np.zeros(13)}), "expected 1-D int64"),
        (_columns(**{v.ROWS: np.zeros(12, np.int64)}), "12 row counts for 13 bins"),
        (_columns(**{v.REGULAR: np.array([3, 2], np.int64)}), "one kind, regular and special"),
        (_columns(**{v.REGULAR: np.array([3, 2, 200], np.int64)}), "1 to 127 bins"),
        (_columns(**{v.REGULAR: np.array([3, 0, 4], np.int64)}), "1 to 127 bins"),
        (_columns(**{v.SPECIAL: np.array([1, -1, 0], np.int64)}), "1 to 127 bins"),
        (_columns(**{v.NAMES: np.zeros(70_000, np.uint8)}), "names of 70000 bytes"),
        (_columns(**{v.NAMES: np.frombuffer(b"\xff\xfe", np.uint8)}), "not UTF-8"),
        ({}, "no 'names'"),
    ],
)
def test_bad_columns_are_refused(arrays: dict[str, np.ndarray], named: str) -> None:
    with pytest.raises(ProtocolError, match=named):
        sw.columns_from(arrays)


def test_bad_pairs_codes_and_counts_are_refused() -> None:
    with pytest.raises(ProtocolError, match="25 values for 26 cells"):
        sw.pairs_from({v.PAIRS: np.zeros(25, np.int64)}, (4, 2, 3))
    with pytest.raises(ProtocolError, match="expected 1-D int64"):
        sw.pairs_from({v.PAIRS: np.zeros(26, np.float64)}, (4, 2, 3))
    with pytest.raises(ProtocolError, match="outside its feature's coarse bins"):
        sw.codes_from({v.CODES: np.array([[0, 3, 0]], np.int64)}, 1, (5, 3, 5))
    with pytest.raises(ProtocolError, match="outside its feature's coarse bins"):
        sw.codes_from({v.CODES: np.array([[-1, 0, 0]], np.int64)}, 1, (5, 3, 5))
    with pytest.raises(ProtocolError, match=r"shape \(1, 3\), not \(2, 3\)"):
        sw.codes_from({v.CODES: np.zeros((1, 3), np.int64)}, 2, (5, 3, 5))
    for n in (0, sw.MAX_COLUMNS + 1):
        slots = sw.slots_arrays(EncryptedSlots(b"k", b"c", 1, 1)) | {v.COLUMNS: np.array([n])}
        with pytest.raises(ProtocolError, match="ciphertext columns per row"):
            sw.slots_from(slots)
        tables = sw.tables_arrays(EncryptedTables((b"x",), 5)) | {v.COLUMNS: np.array([n])}
        with pytest.raises(ProtocolError, match="columns of ciphertext sums"):
            sw.tables_from(tables)
    with pytest.raises(ProtocolError, match="no 'node/1'"):
        sw.tables_from(sw.tables_arrays(EncryptedTables((b"x",), 5)) | {v.COLUMNS: np.array([2])})


def test_merge_maps_finer_than_classing_are_refused() -> None:
    """A hostile bank's identity map would read the fine bins back: the platform refuses a
    coarse bin under 5 % of its rows (unless alone) and a special or missing bin pooled."""
    rows = [np.array([50, 3, 47, 10, 5])]  # 3 regular fine bins, a special value, missing
    check_pooling([np.array([0, 0, 1, 2, 3])], rows, [3], 0.05, ["a"], [False])  # classing's shape
    check_pooling([np.array([0, 0, 0, 1, 2])], rows, [3], 0.05, ["a"], [False])  # one regular bin
    with pytest.raises(ValueError, match=r"a: coarse codes \[1\] hold under 5%"):
        check_pooling([np.array([0, 1, 2, 3, 4])], rows, [3], 0.05, ["a"], [False])  # identity
    with pytest.raises(ValueError, match="special values and missing keep a coarse code"):
        check_pooling([np.array([0, 0, 1, 2, 2])], rows, [3], 0.05, ["a"], [False])
    with pytest.raises(ValueError, match="special values and missing keep a coarse code"):
        check_pooling([np.array([0, 0, 1, 1, 2])], rows, [3], 0.05, ["a"], [False])


def test_a_numeric_features_fine_bins_pool_only_with_their_neighbours() -> None:
    """Pairing distant fine bins ({0, 2} and {1, 3}) keeps every coarse code over 5 % yet
    tells a bank that knows an applicant is in bins 0-1 the exact bin; classing never pools
    so. A categorical feature's levels have no order: any pooling of them passes."""
    rows = [np.array([25, 25, 25, 25, 0])]  # 4 regular fine bins, missing
    check_pooling([np.array([0, 0, 1, 1, 2])], rows, [4], 0.05, ["a"], [False])
    for distant in ([0, 1, 0, 1, 2], [1, 1, 0, 0, 2], [0, 0, 2, 2, 1]):
        with pytest.raises(ValueError, match="a: a numeric feature's fine bins pool only"):
            check_pooling([np.array(distant)], rows, [4], 0.05, ["a"], [False])
    check_pooling([np.array([0, 1, 0, 1, 2])], rows, [4], 0.05, ["a"], [True])
