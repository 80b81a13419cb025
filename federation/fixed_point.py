"""Real numbers through a secure sum of small whole numbers, exactly.

SecAgg+ adds whole numbers modulo 2^k; the secure sum the coordinator runs
(`jointcredit.server.secagg.secure_sum`) passes whole numbers in [0, DIGIT_RANGE) unrounded.
Both sides of an exchange that sums real values (the trees' gradient and hessian histograms)
agree on this encoding: each value is rounded to a multiple of 2^-FRACTION_BITS, written in
two's complement over DIGITS * DIGIT_BITS bits, and split into DIGITS digits of DIGIT_BITS
bits. Each digit position is summed on its own (a digit sum never carries into the next
position, so it is exact), and the coordinator reassembles the sum modulo 2^(DIGITS *
DIGIT_BITS), which is the exact sum of the rounded values as long as that sum stays below
`CAPACITY` in magnitude. Rounding moves each value by at most 2^-(FRACTION_BITS + 1), so a sum
over n institutions is within n * 2^-(FRACTION_BITS + 1) of the sum of the unrounded values.
"""

from __future__ import annotations

from typing import Final

import numpy as np

FRACTION_BITS: Final = 32
DIGIT_BITS: Final = 20
DIGITS: Final = 3
DIGIT_RANGE: Final = 1 << DIGIT_BITS
_BITS: Final = DIGITS * DIGIT_BITS
_MASK: Final = (1 << _BITS) - 1
# Sums (and every value summed) must stay below this in magnitude: one sign bit of the
# two's-complement word.
CAPACITY: Final = float(1 << (_BITS - 1 - FRACTION_BITS))
# Largest rounding error of one encoded value.
STEP_ERROR: Final = 2.0 ** -(FRACTION_BITS + 1)


def encode(values: np.ndarray) -> np.ndarray:
    """float values (any shape) -> int64 digits, shape (DIGITS, values.size), each in [0,
    DIGIT_RANGE), least significant first."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)) or np.any(np.abs(flat) >= CAPACITY):
        raise ValueError(f"fixed point encodes finite values below {CAPACITY:g} in magnitude")
    fixed = np.rint(np.ldexp(flat, FRACTION_BITS)).astype(np.int64)
    word = fixed.view(np.uint64) & np.uint64(_MASK)  # two's complement over _BITS bits
    shifts = np.arange(DIGITS, dtype=np.uint64) * np.uint64(DIGIT_BITS)
    digits = (word[None, :] >> shifts[:, None]) & np.uint64(DIGIT_RANGE - 1)
    return digits.astype(np.int64)


def decode(digit_sums: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The sums of `encode`d values, digit position by digit position, (DIGITS, size) whole
    numbers -> the float64 sums of the rounded values, in `shape`."""
    sums = np.asarray(digit_sums)
    size = int(np.prod(shape))
    if sums.shape != (DIGITS, size) or np.any(sums < 0):
        raise ValueError(f"expected {DIGITS} rows of {size} non-negative digit sums")
    shifts = np.arange(DIGITS, dtype=np.uint64) * np.uint64(DIGIT_BITS)
    # uint64 arithmetic wraps modulo 2^64, a multiple of the word's 2^_BITS.
    word = (sums.astype(np.uint64) << shifts[:, None]).sum(axis=0, dtype=np.uint64)
    word &= np.uint64(_MASK)
    negative = word >= np.uint64(1 << (_BITS - 1))
    fixed = word.astype(np.int64) - np.where(negative, np.int64(1 << _BITS), np.int64(0))
    out: np.ndarray = np.ldexp(fixed.astype(np.float64), -FRACTION_BITS).reshape(shape)
    return out
