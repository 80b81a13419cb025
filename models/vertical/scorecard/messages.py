"""What the label party (bank) and a feature party (platform) send each other while fitting
the vertical scorecard (in process now; a Flower exchange will carry the same contents).

Feature party -> label party, in plaintext and label-free: how many fine bins each of its
features has and its aligned training rows per fine bin (`FineColumns`: no edge, no level).
Label party -> feature party: per aligned training row, ciphertexts of its label and of the
one-hot of each of its own features' coarse bins, packed side by side (`EncryptedSlots`).
Feature party -> label party: those ciphertexts summed per its fine bins (`EncryptedTables`).
Label party -> feature party: its classing's merge maps (fine code -> coarse code per feature,
`merge_maps`). Feature party -> label party: per pair of its own features their joint
coarse-code counts (`PairCounts`), label-free: X'X needs no finer table, its inputs being
constant on coarse bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FineColumns:
    """Per feature of the feature party (its order in the vertical schema): whether it is
    categorical, its regular and special fine bins (missing is one more, the last code), and
    its aligned training rows per fine code."""

    names: tuple[str, ...]
    categorical: tuple[bool, ...]
    regular: tuple[int, ...]
    special: tuple[int, ...]
    rows: tuple[np.ndarray, ...]

    def n_bins(self, j: int) -> int:
        return self.regular[j] + self.special[j] + 1


@dataclass(frozen=True)
class PairCounts:
    """Per pair (j, k), j < k, of the feature party's features in order (j outer): its
    training rows per (coarse code of j, coarse code of k), by the label party's merge maps;
    `min_rows`, its `pair-min-rows` (None: unset), which the label party also holds the
    cross tables of its codes with another feature party's to."""

    tables: tuple[np.ndarray, ...]
    min_rows: int | None = None


@dataclass(frozen=True)
class EncryptedSlots:
    """`columns` ciphertexts per row, column-major: column q of row i at q * rows + i."""

    public_key: bytes
    ciphertexts: bytes
    rows: int
    columns: int


@dataclass(frozen=True)
class EncryptedTables:
    """Per ciphertext column, its sums over the rows of each fine bin: feature j's code k at
    j * buckets + k."""

    columns: tuple[bytes, ...]
    buckets: int
