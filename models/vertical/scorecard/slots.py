"""Several counts in one plaintext: per aligned row, the count 1, its label and the one-hot of
each of the label party's features' coarse bins, each in a slot of `width` bits, as many
slots per plaintext as it holds. A sum over any set of rows then carries every slot's count
exactly (a slot sums at most `rows` < 2^width ones), so one ciphertext addition adds them
all and one decryption reads them all.

Slot 0: the row (always 1); slot 1: the label (1 = bad); then, per own feature a, one slot
per coarse code c at `offsets[a] + c`. Slot s lies in plaintext s // per at bit
(s % per) * width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COUNT, BAD, FIRST = 0, 1, 2


@dataclass(frozen=True)
class SlotPlan:
    width: int
    per: int
    n_bins: tuple[int, ...]  # per own feature, its coarse codes

    @property
    def offsets(self) -> np.ndarray:
        return FIRST + np.concatenate([[0], np.cumsum(self.n_bins, dtype=np.int64)[:-1]]).astype(
            np.int64
        )

    @property
    def n_slots(self) -> int:
        return FIRST + sum(self.n_bins)

    @property
    def columns(self) -> int:
        """Plaintexts per row."""
        return -(-self.n_slots // self.per)


def plan(rows: int, n_bins: Sequence[int], plaintext_bits: int) -> SlotPlan:
    if rows < 1:
        raise ValueError("no rows to count")
    width = rows.bit_length()  # a sum of `rows` ones fits
    per = plaintext_bits // width
    if per < 1:
        raise ValueError(f"a {plaintext_bits}-bit plaintext cannot hold a {width}-bit count")
    if any(k < 1 for k in n_bins):
        raise ValueError("every feature has at least one bin")
    return SlotPlan(width, per, tuple(int(k) for k in n_bins))


def pack(p: SlotPlan, y: np.ndarray, codes: np.ndarray) -> list[int]:
    """The plaintexts of every row (`codes`: (rows, own features) coarse codes), column-major
    as `EncryptedSlots` lays them out."""
    n = len(y)
    if codes.shape != (n, len(p.n_bins)):
        raise ValueError(f"codes of shape {codes.shape} for {n} rows of {len(p.n_bins)} features")
    if len(p.n_bins) and (codes.min() < 0 or np.any(codes >= np.asarray(p.n_bins))):
        raise ValueError("a coarse code outside its feature's bins")
    weight = np.array([1 << ((s % p.per) * p.width) for s in range(p.n_slots)], dtype=object)
    column = np.arange(p.n_slots) // p.per
    out = np.zeros((p.columns, n), dtype=object)
    at = np.arange(n)
    slots = [np.full(n, COUNT), np.where(np.asarray(y) == 1, BAD, -1)]
    slots += [p.offsets[a] + codes[:, a] for a in range(len(p.n_bins))]
    for s in slots:
        on = s >= 0
        out[column[s[on]], at[on]] += weight[s[on]]
    return [int(v) for v in out.ravel().tolist()]


def unpack(p: SlotPlan, plain: Sequence[Sequence[int]]) -> np.ndarray:
    """Decrypted sums, per plaintext column one list over the same positions -> (positions,
    slots) int64; raises ValueError for a value no sum of packed rows can be."""
    if len(plain) != p.columns or len({len(c) for c in plain}) > 1:
        raise ValueError(f"{len(plain)} columns of sums, {p.columns} expected, equally long")
    n = len(plain[0]) if plain else 0
    out = np.zeros((n, p.n_slots), dtype=np.int64)
    mask = (1 << p.width) - 1
    for q, values in enumerate(plain):
        held = min(p.per, p.n_slots - q * p.per)
        for i, v in enumerate(values):
            if v < 0 or v.bit_length() > held * p.width:
                raise ValueError("a decrypted sum out of range: wrong key or altered")
            for r in range(held):
                out[i, q * p.per + r] = (v >> (r * p.width)) & mask
    return out
