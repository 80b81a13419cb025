"""Additively homomorphic encryption for the vertical trees: SecretFlow HEU's Okamoto-Uchiyama
(`OU`, the default) or Paillier (`ZPaillier`), 2048-bit modulus, behind the small interface
the trees need (`jointcredit.models.vertical.cipher`).

HEU was chosen by measured speed (docs/BENCHMARKS.md, `scripts/bench_paillier.py`): its
arrays encrypt, add and decrypt in C++ on both cores without a Python object per ciphertext,
and it sums ciphertexts into feature bins in one call (what the feature party does per node).
OU is the default for the same reason (about 10x Paillier's encryptions, 3x its additions;
SecretFlow's default for its trees); its plaintext space (about a third of the modulus, 682
bits) still holds a packed row with room to spare. Its security rests on factoring a 2048-bit
n = p^2 q (ARCHITECTURE.md, docs/PRIVACY.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from heu import numpy as hnp
from heu import phe as hphe

from jointcredit.models.vertical import packing
from jointcredit.models.vertical.cipher import MAX_BUCKETS as MAX_BUCKETS  # re-exported
from jointcredit.models.vertical.cipher import Ciphertexts

KEY_BITS: Final = 2048
MIN_KEY_BITS: Final = 2048  # below it, factoring the modulus is within reach
Scheme = Literal["paillier", "ou"]
_SCHEMES: Final = {"paillier": hphe.SchemaType.ZPaillier, "ou": hphe.SchemaType.OU}
_FORMAT: Final = hnp.MatrixSerializeFormat.Best


@dataclass(frozen=True)
class HeuCiphertexts:
    array: Any  # heu.numpy.CiphertextArray, shape (n, 1)

    def to_bytes(self) -> bytes:
        data: bytes = self.array.serialize(_FORMAT)
        return data

    def __len__(self) -> int:
        return int(self.array.rows)

    def take(self, positions: np.ndarray) -> HeuCiphertexts:
        idx = np.asarray(positions, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError("a position outside the ciphertexts")
        return HeuCiphertexts(self.array[idx.tolist()])


class HeuPublicKey:
    def __init__(self, kit: Any) -> None:
        self._kit = kit
        self._encoder = kit.bigint_encoder()
        self._bound = int(kit.public_key().plaintext_bound())
        if self._bound <= 1 << packing.PACKED_BITS:
            raise ValueError(f"a plaintext space below {packing.PACKED_BITS} bits: too small")

    def to_bytes(self) -> bytes:
        data: bytes = self._kit.public_key().serialize()
        return data

    def encrypt(self, values: Sequence[int]) -> HeuCiphertexts:
        column = np.array(list(values), dtype=object).reshape(-1, 1)
        if len(column) and (min(values) < 0 or max(values) >= self._bound):
            raise ValueError("plaintexts must be non-negative and below the plaintext bound")
        return HeuCiphertexts(self._kit.encryptor().encrypt(hnp.array(column, self._encoder)))

    def load(self, data: bytes) -> HeuCiphertexts:
        try:
            array = hnp.CiphertextArray.load_from(data, _FORMAT)
        except Exception as e:  # HEU raises its own error types from C++
            raise ValueError(f"not a ciphertext array: {e}") from e
        if array.ndim != 2 or array.cols != 1:
            raise ValueError(f"expected a column of ciphertexts, got shape {array.shape}")
        return HeuCiphertexts(array)

    def plaintext_bits(self) -> int:
        return self._bound.bit_length() - 1

    def sums_per_ciphertext(self, width: int) -> int:
        # Measured (docs/BENCHMARKS.md): shifting a sum into place costs more than an OU
        # decryption (mod p^2, a third of the modulus) saves, and less than a Paillier one.
        if self._kit.get_schema() == hphe.SchemaType.OU:
            return 1
        return max(1, (self._bound.bit_length() - 1) // width)

    def side_by_side(self, values: Ciphertexts, width: int, per: int) -> HeuCiphertexts:
        array = _heu(values).array
        n = int(array.rows)
        if per < 1 or width < 1 or per * width >= self._bound.bit_length():
            raise ValueError(f"{per} values of {width} bits do not fit one plaintext")
        m = -(-n // per)
        evaluator = self._kit.evaluator()
        shift = hnp.array(np.full((m, 1), 1 << width, dtype=object), self._encoder)
        # Horner: from the last slot down, shift the sum so far one width up and add the
        # next slot, so each ciphertext is raised to 2^width only per - 1 times.
        acc = None
        for s in reversed(range(per)):
            lo, hi = s * m, min((s + 1) * m, n)
            if acc is not None:
                acc = evaluator.mul(acc, shift)
            if lo >= hi:
                continue
            part = array[lo:hi]
            if acc is None:
                acc = part if hi - lo == m else _padded(evaluator, part, m, self)
            elif hi - lo == m:
                acc = evaluator.add(acc, part)
            else:
                acc[0 : hi - lo] = evaluator.add(acc[0 : hi - lo], part)
        return HeuCiphertexts(acc)

    def bucket_sums(
        self, values: Ciphertexts, groups: Sequence[np.ndarray], codes: np.ndarray, buckets: int
    ) -> list[Ciphertexts]:
        values = _heu(values)
        if not 0 < buckets <= MAX_BUCKETS:
            raise ValueError(f"1 to {MAX_BUCKETS} buckets per feature, not {buckets}")
        if codes.ndim != 2 or len(codes) != len(values):
            raise ValueError("one row of codes per ciphertext")
        if codes.size and (codes.min() < 0 or codes.max() >= buckets):
            raise ValueError("a code outside the buckets")
        order = np.ascontiguousarray(codes, dtype=np.int8)
        masks = [np.asarray(g, dtype=np.int8).reshape(1, -1) for g in groups]
        if not masks:
            return []
        sums = self._kit.evaluator().batch_feature_wise_bucket_sum(
            values.array, masks, order, buckets, False
        )
        return [HeuCiphertexts(s) for s in sums]


def _padded(evaluator: Any, part: Any, m: int, key: HeuPublicKey) -> Any:
    """`part` followed by encryptions of zero up to `m` ciphertexts."""
    zeros = key.encrypt([0] * m).array
    zeros[0 : int(part.rows)] = evaluator.add(zeros[0 : int(part.rows)], part)
    return zeros


def _heu(values: Ciphertexts) -> HeuCiphertexts:
    if not isinstance(values, HeuCiphertexts):
        raise TypeError(f"HEU ciphertexts expected, not {type(values).__name__}")
    return values


class HeuSecretKey:
    def __init__(self, scheme: Scheme = "ou", key_bits: int = KEY_BITS) -> None:
        if key_bits < MIN_KEY_BITS:
            raise ValueError(f"a key of at least {MIN_KEY_BITS} bits, not {key_bits}")
        self.scheme: Scheme = scheme
        self._kit = hnp.setup(_SCHEMES[scheme], key_bits)
        self._public = HeuPublicKey(self._kit)

    @property
    def public(self) -> HeuPublicKey:
        return self._public

    def decrypt(self, values: Ciphertexts) -> list[int]:
        plain = self._kit.decryptor().decrypt(_heu(values).array)
        return [int(v) for v in plain.to_numpy(self._public._encoder).ravel().tolist()]


def public_key(data: bytes) -> HeuPublicKey:
    """A feature party's view of the label party's key: encrypt and add, never decrypt."""
    try:
        key = hphe.PublicKey.load_from(data)
    except Exception as e:  # HEU raises its own error types from C++
        raise ValueError(f"not a public key: {e}") from e
    return HeuPublicKey(hnp.setup(key))
