"""ECDH private set intersection of two parties' identifiers, as pure message steps.

Diffie-Hellman PSI (as in FATE, SecretFlow and NVIDIA FLARE), semi-honest parties:

1. each party maps its distinct identifiers into the prime-order subgroup of Curve25519
   (SHA-512 under a domain tag, then libsodium's Elligator 2 map, which clears the cofactor),
   multiplies every point by its own secret scalar with X25519 and sends them shuffled
   (`PsiParty.blinded`);
2. each party multiplies the other's points by its scalar, keeping their order
   (`PsiParty.reblind`); scalar multiplication commutes, so a*(b*H(x)) == b*(a*H(x));
3. the label party compares the two doubly blinded sets (`LabelPsi.intersect`): it learns which
   of its rows are in the intersection, and tells the feature party only which positions of the
   feature party's own (shuffled) message matched, ascending (`FeaturePsi.aligned_rows`). Both
   then hold their intersection rows in the same order, that random order.

Neither party can undo the other's scalar, so a blinded point of an identifier outside the
intersection says nothing about it; no message carries an identifier or its hash. A secret
scalar lives only inside its party's object: pickling one (or the object) raises. Messages are
`(n, 32)` uint8 arrays (positions: uint32). X25519 clamps scalars to multiples of 8, so a point
of small order sent by a dishonest peer yields the all-zero output libsodium refuses, and a
point on the twist reveals nothing either (Curve25519 is twist-secure).

The curve work runs in libsodium through cffi, which releases the GIL, so `workers` threads
use that many cores without copying the scalar into another process.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from nacl._sodium import ffi, lib

POINT_BYTES = 32
_TAG = b"jointcredit/psi/v1\x00"
_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
_CHUNK = 4096
_MAX_SET = 2**32 - 1


class PsiError(ValueError):
    """A PSI message that cannot have come from a party following the protocol."""


class _Scalar:
    """A party's secret X25519 scalar: fresh per run, never serialized, never printed."""

    __slots__ = ("_key",)

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a PSI secret scalar is never serialized")

    def __repr__(self) -> str:
        return "_Scalar(<secret>)"


def _montgomery_u(ys: list[int]) -> list[int]:
    """u = (1 + y) / (1 - y) mod p for Edwards y's, one modular inverse for all (Montgomery)."""
    den = [(1 - y) % _P for y in ys]
    prefix = [0] * len(den)
    acc = 1
    for i, d in enumerate(den):
        prefix[i] = acc
        acc = acc * d % _P
    if acc == 0:
        raise PsiError("an identifier hashed to the neutral point")
    inv = pow(acc, -1, _P)
    out = [0] * len(den)
    for i in range(len(den) - 1, -1, -1):
        out[i] = (1 + ys[i]) * inv % _P * prefix[i] % _P
        inv = inv * den[i] % _P
    return out


def _hash_chunk(ids: Sequence[bytes]) -> bytes:
    """The curve points (Montgomery u, 32 bytes each) of `ids`, concatenated. Private data."""
    n = len(ids)
    edwards = ffi.new("unsigned char[]", POINT_BYTES * n)
    for i, x in enumerate(ids):
        digest = hashlib.sha512(_TAG + x).digest()[:POINT_BYTES]
        lib.crypto_core_ed25519_from_uniform(edwards + POINT_BYTES * i, digest)
    raw = bytes(ffi.buffer(edwards))
    ys = [
        int.from_bytes(raw[k : k + POINT_BYTES], "little") & _Y_MASK
        for k in range(0, len(raw), POINT_BYTES)
    ]
    return b"".join(u.to_bytes(POINT_BYTES, "little") for u in _montgomery_u(ys))


def _multiply_chunk(key: bytes, points: bytes) -> bytes:
    """X25519(key, point) for each 32-byte point of `points`, concatenated."""
    n = len(points) // POINT_BYTES
    out = ffi.new("unsigned char[]", POINT_BYTES * n)
    src = ffi.from_buffer("unsigned char[]", points)
    for i in range(n):
        if lib.crypto_scalarmult(out + POINT_BYTES * i, key, src + POINT_BYTES * i) != 0:
            raise PsiError("a point of small order, which no identifier hashes to")
    return bytes(ffi.buffer(out))


def _chunked(fn: Callable[[bytes], bytes], data: bytes, workers: int) -> bytes:
    step = _CHUNK * POINT_BYTES
    chunks = [data[k : k + step] for k in range(0, len(data), step)]
    if workers <= 1 or len(chunks) <= 1:
        return b"".join(fn(c) for c in chunks)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return b"".join(pool.map(fn, chunks))


def _as_points(message: object, what: str) -> np.ndarray:
    """`message` as a C-contiguous (n, 32) uint8 array, or a PsiError naming it."""
    if not isinstance(message, np.ndarray) or message.dtype != np.uint8:
        raise PsiError(f"{what}: expected a uint8 array, got {type(message).__name__}")
    if message.ndim != 2 or message.shape[1] != POINT_BYTES:
        raise PsiError(f"{what}: expected shape (n, {POINT_BYTES}), got {message.shape}")
    if message.shape[0] > _MAX_SET:
        raise PsiError(f"{what}: more than {_MAX_SET} points")
    return np.ascontiguousarray(message)


def _to_array(points: bytes) -> np.ndarray:
    return np.frombuffer(points, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()


@dataclass(frozen=True)
class PsiResult:
    """One party's side of the intersection: its own row indices, in the order both share."""

    rows: np.ndarray

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])


class PsiParty:
    """One party's identifiers and secret scalar, and the steps both parties run.

    Duplicated identifiers are sent once (the first row holding one stands for it), so the
    peer learns the number of distinct identifiers, not the duplicates.
    """

    def __init__(self, ids: Sequence[str], *, workers: int = 1) -> None:
        first: dict[str, int] = {}
        for row, ident in enumerate(ids):
            if not isinstance(ident, str):
                raise PsiError(f"identifier at row {row} is a {type(ident).__name__}, not a string")
            first.setdefault(ident, row)
        if len(first) > _MAX_SET:
            raise PsiError(f"more than {_MAX_SET} distinct identifiers")
        rng = np.random.default_rng(secrets.randbits(128))
        distinct = list(first)
        order = rng.permutation(len(distinct))
        self._rows = np.fromiter(
            (first[distinct[k]] for k in order), dtype=np.int64, count=len(order)
        )
        self._encoded = [distinct[k].encode("utf-8") for k in order]
        self._scalar = _Scalar()
        self._workers = max(1, workers)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a PSI party holds a secret scalar and is never serialized")

    @property
    def distinct(self) -> int:
        """How many distinct identifiers this party sends."""
        return len(self._encoded)

    def blinded(self) -> np.ndarray:
        """Step 1: own identifiers hashed to the curve and blinded, shuffled, (n, 32) uint8."""
        key = self._scalar._key
        step = _CHUNK
        groups = [self._encoded[k : k + step] for k in range(0, len(self._encoded), step)]

        def one(group: Sequence[bytes]) -> bytes:
            return _multiply_chunk(key, _hash_chunk(group))

        if self._workers <= 1 or len(groups) <= 1:
            out = b"".join(one(g) for g in groups)
        else:
            with ThreadPoolExecutor(max_workers=self._workers) as pool:
                out = b"".join(pool.map(one, groups))
        return _to_array(out)

    def reblind(self, peer_blinded: np.ndarray) -> np.ndarray:
        """Step 2: the peer's blinded points blinded again with own scalar, same order."""
        points = _as_points(peer_blinded, "peer's blinded set")
        key = self._scalar._key
        out = _chunked(lambda c: _multiply_chunk(key, c), points.tobytes(), self._workers)
        return _to_array(out)


class LabelPsi(PsiParty):
    """The label party: learns the intersection and tells the feature party its positions."""

    def intersect(
        self, own_double: np.ndarray, peer_double: np.ndarray
    ) -> tuple[PsiResult, np.ndarray]:
        """Step 3: own rows in the intersection, and the message for the feature party.

        `own_double`: the peer's `reblind` of this party's `blinded()` (same order);
        `peer_double`: this party's `reblind` of the peer's `blinded()`.
        """
        own = _as_points(own_double, "own set blinded by the peer")
        peer = _as_points(peer_double, "peer's set blinded again")
        if own.shape[0] != self.distinct:
            raise PsiError(
                f"own set blinded by the peer: {own.shape[0]} points for {self.distinct} sent"
            )
        raw = own.tobytes()
        index = {
            raw[k : k + POINT_BYTES]: k // POINT_BYTES for k in range(0, len(raw), POINT_BYTES)
        }
        if len(index) != own.shape[0]:
            raise PsiError("own set blinded by the peer: repeated points")
        praw = peer.tobytes()
        positions: list[int] = []
        mine: list[int] = []
        for j, k in enumerate(range(0, len(praw), POINT_BYTES)):
            i = index.get(praw[k : k + POINT_BYTES])
            if i is not None:
                positions.append(j)
                mine.append(i)
        rows = self._rows[np.asarray(mine, dtype=np.int64)]
        return PsiResult(rows=rows), np.asarray(positions, dtype=np.uint32)


class FeaturePsi(PsiParty):
    """A feature party: learns which of its rows are in the intersection, in the shared order."""

    def aligned_rows(self, positions: np.ndarray) -> PsiResult:
        """Step 4: own rows for the label party's matched positions (ascending, in range)."""
        if (
            not isinstance(positions, np.ndarray)
            or positions.dtype != np.uint32
            or positions.ndim != 1
        ):
            raise PsiError("matched positions: expected a 1-D uint32 array")
        pos = positions.astype(np.int64)
        if pos.size and (pos[-1] >= self.distinct or np.any(np.diff(pos) <= 0)):
            raise PsiError("matched positions: not ascending positions of own blinded set")
        return PsiResult(rows=self._rows[pos])
