"""A row's gradient, hessian and a count of one in one plaintext (the SecureBoost+ packing),
so one encryption, one ciphertext addition and one decryption carry all three.

Each statistic is fixed point with `FRACTION_BITS` fraction bits; the gradient, in [-1, 1]
for log-loss, is offset by +1 so every field is non-negative. Each field is `FIELD_BITS` wide,
which leaves room for sums over up to 2^`HEADROOM_BITS` rows before a field carries into the
next. A bin's sum unpacks exactly: its count gives the offset to take back off. Sums of the
rounded values are exact integers, so the label party can check a feature party's bins
against the node totals it already knows, to the last unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

FRACTION_BITS: Final = 60
HEADROOM_BITS: Final = 32
FIELD_BITS: Final = FRACTION_BITS + 2 + HEADROOM_BITS  # values below 4 before the headroom
COUNT_BITS: Final = HEADROOM_BITS + 1
PACKED_BITS: Final = 2 * FIELD_BITS + COUNT_BITS
MAX_ROWS: Final = 1 << HEADROOM_BITS
_SCALE: Final = 1 << FRACTION_BITS
_FIELD: Final = (1 << FIELD_BITS) - 1
_COUNT: Final = (1 << COUNT_BITS) - 1


class NotAHistogram(ValueError):
    """A decrypted value no sum of packed rows can be: the wrong key, or a changed
    ciphertext."""


@dataclass(frozen=True)
class Fixed:
    """Per row: the gradient (offset by +1) and hessian as whole multiples of 2^-60."""

    grad: np.ndarray  # object: Python ints
    hess: np.ndarray  # object: Python ints

    def totals(self, rows: np.ndarray) -> tuple[int, int, int]:
        """(sum of offset gradients, sum of hessians, count) over `rows`."""
        return int(self.grad[rows].sum()), int(self.hess[rows].sum()), len(rows)


def to_fixed(grad: np.ndarray, hess: np.ndarray) -> Fixed:
    g = np.asarray(grad, dtype=np.float64)
    h = np.asarray(hess, dtype=np.float64)
    if len(g) > MAX_ROWS or g.shape != h.shape:
        raise ValueError(f"one gradient and hessian per row, at most {MAX_ROWS} rows")
    if not (np.all(np.abs(g) <= 1.0) and np.all((h >= 0) & (h <= 1.0))):
        raise ValueError("log-loss gradients lie in [-1, 1] and hessians in [0, 1]")
    # Exact: a float64 times a power of two, rounded once to a whole number.
    gi = np.array([int(v) + _SCALE for v in np.rint(np.ldexp(g, FRACTION_BITS)).tolist()], object)
    hi = np.array([int(v) for v in np.rint(np.ldexp(h, FRACTION_BITS)).tolist()], object)
    return Fixed(gi, hi)


def pack(fixed: Fixed) -> list[int]:
    """One plaintext per row: [gradient | hessian | 1], most significant first."""
    return [
        (g << (FIELD_BITS + COUNT_BITS)) | (h << COUNT_BITS) | 1
        for g, h in zip(fixed.grad.tolist(), fixed.hess.tolist(), strict=True)
    ]


def unpack(sums: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decrypted sums of packed rows -> (offset-gradient sums, hessian sums, counts) as Python
    ints; raises `NotAHistogram` for a value no such sum can be."""
    g, h, c = [], [], []
    for v in sums:
        if v < 0 or v.bit_length() > PACKED_BITS:
            raise NotAHistogram("a decrypted histogram value out of range: wrong key or altered")
        count = v & _COUNT
        hess = (v >> COUNT_BITS) & _FIELD
        grad = v >> (FIELD_BITS + COUNT_BITS)
        if grad > 2 * _SCALE * count or hess > _SCALE * count:
            raise NotAHistogram("a decrypted bin sums more than its rows can: altered")
        g.append(grad)
        h.append(hess)
        c.append(count)
    return np.array(g, object), np.array(h, object), np.array(c, object)


def split_slots(values: list[int], per: int, n: int) -> list[int]:
    """Decrypted plaintexts of `per` sums each (`cipher.PublicKey.side_by_side`) -> the `n`
    sums in their original order; raises `NotAHistogram` for a plaintext wider than that."""
    if per < 1 or len(values) != -(-n // per):
        raise NotAHistogram(f"{len(values)} plaintexts cannot carry {n} sums {per} at a time")
    width = len(values)
    flat = [0] * (width * per)
    for q, v in enumerate(values):
        if v < 0 or v.bit_length() > per * PACKED_BITS:
            raise NotAHistogram("a decrypted histogram value out of range: wrong key or altered")
        for s in range(per):
            flat[s * width + q] = (v >> (s * PACKED_BITS)) & ((1 << PACKED_BITS) - 1)
    if any(flat[n:]):
        raise NotAHistogram("a sum beyond the histogram's end: altered")
    return flat[:n]


def to_float(grad: np.ndarray, hess: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Unpacked sums -> (..., 2) float64 (G, H), the offset taken back off exactly."""
    g = [(a - b * _SCALE) / _SCALE for a, b in zip(grad.tolist(), count.tolist(), strict=True)]
    h = [a / _SCALE for a in hess.tolist()]
    return np.stack([np.array(g, dtype=np.float64), np.array(h, dtype=np.float64)], axis=-1)
