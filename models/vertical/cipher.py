"""What the vertical trees need of an additively homomorphic scheme, so the tree code does
not depend on a library (`jointcredit.privacy.paillier` implements it with SecretFlow's HEU).

The label party holds a `SecretKey`; a feature party holds only the `PublicKey` the label
party sends it (its bytes), which can add ciphertexts but never read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

import numpy as np

# The most codes per feature a `bucket_sums` call takes (HEU's bucket sums take int8 codes):
# defined here once, for the models that send codes and the scheme that sums them.
MAX_BUCKETS: Final = 127


class Ciphertexts(Protocol):
    """A column of ciphertexts, opaque to whoever lacks the secret key."""

    def to_bytes(self) -> bytes: ...

    def __len__(self) -> int: ...

    def take(self, positions: np.ndarray) -> Ciphertexts:
        """The ciphertexts at `positions`, in that order (what is worth decrypting)."""
        ...


class PublicKey(Protocol):
    def to_bytes(self) -> bytes: ...

    def encrypt(self, values: Sequence[int]) -> Ciphertexts:
        """Non-negative whole numbers below the scheme's plaintext bound."""
        ...

    def load(self, data: bytes) -> Ciphertexts:
        """Ciphertexts from `Ciphertexts.to_bytes`; raises ValueError for bytes that are
        none."""
        ...

    def plaintext_bits(self) -> int:
        """Every whole number below 2^bits is a plaintext (what packing several counts into
        one plaintext may use)."""
        ...

    def sums_per_ciphertext(self, width: int) -> int:
        """How many `width`-bit sums a feature party puts side by side in one ciphertext: as
        many as the plaintext space holds where shifting them together costs less than the
        decryptions it saves, else 1 (each on its own)."""
        ...

    def side_by_side(self, values: Ciphertexts, width: int, per: int) -> Ciphertexts:
        """Ciphertexts of sum over s < `per` of v[s * m + q] * 2^(s * `width`), q < m =
        ceil(len / per): `per` values in one plaintext, so one decryption reads them all."""
        ...

    def bucket_sums(
        self, values: Ciphertexts, groups: Sequence[np.ndarray], codes: np.ndarray, buckets: int
    ) -> list[Ciphertexts]:
        """Per group (a boolean mask over the rows), per feature j, per code k < `buckets`:
        the sum of the values of the group's rows whose code for j is k, at position
        j * buckets + k; `codes` (rows, features) below `buckets`."""
        ...


class SecretKey(Protocol):
    @property
    def public(self) -> PublicKey: ...

    def decrypt(self, values: Ciphertexts) -> list[int]: ...
