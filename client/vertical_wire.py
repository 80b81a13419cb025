"""The vertical trees' messages (`jointcredit.models.vertical.messages`) as Flower payloads and
back, both ways checked: every array's dtype, shape and size is validated before use (a
relayed message may be hostile), and a payload that is not what its action carries raises
`ProtocolError` naming it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import RecordDict

from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.models.trees.params import BinLayout
from jointcredit.models.vertical.messages import (
    EncryptedGradients,
    EncryptedHistograms,
    HistogramQuery,
    PartyColumns,
    SplitDone,
    SplitOrder,
)
from jointcredit.privacy.paillier import MAX_BUCKETS
from jointcredit.trust.store import TrustStore
from jointcredit.trust.updates import Accepted, Expected, Rejected, check_content

Arrays = dict[str, np.ndarray]
MAX_FEATURES = 10_000
MAX_NODES = 1 << 16


def verify_relayed(
    relayed: RecordDict, expected: Expected, trust: TrustStore, seen: set[bytes], noun: str
) -> Accepted:
    """A party's own signed message (`noun`: request or answer) as relayed: its signature by
    `expected.institution` for the run, step, node and kind expected, and a nonce not in
    `seen`. Anything else raises `ProtocolError`; the caller records the nonce once it has
    checked the rest."""
    party = expected.institution
    try:
        accepted = check_content(relayed, expected, trust)
    except Rejected as exc:
        raise ProtocolError(f"the {noun} relayed as {party}'s does not verify: {exc}") from exc
    if accepted.nonce in seen:
        raise ProtocolError(f"{party}'s {noun} was relayed before (a replay)")
    return accepted


def _bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _get(arrays: Arrays, name: str, dtype: str, ndim: int = 1) -> np.ndarray:
    a = arrays.get(name)
    if a is None:
        raise ProtocolError(f"the payload has no {name!r}")
    if a.dtype != np.dtype(dtype) or a.ndim != ndim:
        raise ProtocolError(f"{name!r}: expected {ndim}-D {dtype}, got {a.ndim}-D {a.dtype}")
    return a


def _scalar(arrays: Arrays, name: str) -> int:
    a = _get(arrays, name, "int64")
    if a.shape != (1,):
        raise ProtocolError(f"{name!r}: one value expected")
    return int(a[0])


def columns_arrays(layout: BinLayout) -> Arrays:
    return {
        v.N_BINS: np.array(layout.n_bins, dtype=np.int64),
        v.MISSING: np.array(layout.missing, dtype=np.int64),
        v.SPECIAL: np.array([layout.n_special(j) for j in range(layout.n_features)], np.int64),
        v.CATEGORICAL: np.array(
            [layout.is_categorical(j) for j in range(layout.n_features)], dtype=bool
        ),
    }


def columns_from(party: int, arrays: Arrays) -> PartyColumns:
    n_bins = _get(arrays, v.N_BINS, "int64")
    missing = _get(arrays, v.MISSING, "int64")
    special = _get(arrays, v.SPECIAL, "int64")
    categorical = _get(arrays, v.CATEGORICAL, "bool")
    n = len(n_bins)
    if not 0 < n <= MAX_FEATURES or {len(missing), len(special), len(categorical)} != {n}:
        raise ProtocolError("a party's columns: one bin count, missing code, special count each")
    if n_bins.max() > MAX_BUCKETS:
        raise ProtocolError(f"a party's columns: at most {MAX_BUCKETS} codes per feature")
    try:
        layout = BinLayout(
            tuple(n_bins.tolist()),
            tuple(missing.tolist()),
            tuple(special.tolist()),
            tuple(categorical.tolist()),
        )
    except ValueError as exc:
        raise ProtocolError(f"a party's columns: {exc}") from exc
    return PartyColumns(party, layout)


def gradients_arrays(m: EncryptedGradients) -> Arrays:
    return {
        v.PUBLIC_KEY: _bytes(m.public_key),
        v.CIPHERTEXTS: _bytes(m.ciphertexts),
        v.ROWS: np.array([m.rows], dtype=np.int64),
    }


def gradients_from(arrays: Arrays) -> EncryptedGradients:
    return EncryptedGradients(
        _get(arrays, v.PUBLIC_KEY, "uint8").tobytes(),
        _get(arrays, v.CIPHERTEXTS, "uint8").tobytes(),
        _scalar(arrays, v.ROWS),
    )


def query_arrays(q: HistogramQuery) -> Arrays:
    return {v.SLOT: np.asarray(q.slot, dtype=np.int64), v.N_SLOTS: np.array([q.n_slots], np.int64)}


def query_from(arrays: Arrays) -> HistogramQuery:
    n_slots = _scalar(arrays, v.N_SLOTS)
    if not 0 <= n_slots <= MAX_NODES:
        raise ProtocolError(f"{n_slots} node slots")
    return HistogramQuery(_get(arrays, v.SLOT, "int64"), n_slots)


def histograms_arrays(h: EncryptedHistograms) -> Arrays:
    out = {f"{v.NODE_PREFIX}{i}": _bytes(b) for i, b in enumerate(h.nodes)}
    out[v.BUCKETS] = np.array([h.buckets], dtype=np.int64)
    out[v.N_SLOTS] = np.array([len(h.nodes)], dtype=np.int64)
    return out


def histograms_from(arrays: Arrays) -> EncryptedHistograms:
    n = _scalar(arrays, v.N_SLOTS)
    if not 0 <= n <= MAX_NODES:
        raise ProtocolError(f"{n} nodes of histograms")
    nodes = tuple(_get(arrays, f"{v.NODE_PREFIX}{i}", "uint8").tobytes() for i in range(n))
    return EncryptedHistograms(nodes, _scalar(arrays, v.BUCKETS))


def order_arrays(o: SplitOrder) -> Arrays:
    return {
        v.FEATURE: np.array([o.feature], dtype=np.int64),
        v.THRESHOLD: np.array([o.threshold], dtype=np.int64),
        v.DEFAULT_LEFT: np.array([int(o.default_left)], dtype=np.int64),
        v.SPECIAL_LEFT: np.array([o.special_left], dtype=np.int64),
        v.CATEGORY_LEFT: np.asarray(o.category_left, dtype=bool),
        v.ROWS: np.asarray(o.rows, dtype=np.int64),
    }


def order_from(arrays: Arrays) -> SplitOrder:
    return SplitOrder(
        feature=_scalar(arrays, v.FEATURE),
        threshold=_scalar(arrays, v.THRESHOLD),
        default_left=bool(_scalar(arrays, v.DEFAULT_LEFT)),
        special_left=_scalar(arrays, v.SPECIAL_LEFT),
        category_left=_get(arrays, v.CATEGORY_LEFT, "bool"),
        rows=_get(arrays, v.ROWS, "int64"),
    )


def done_arrays(d: SplitDone) -> Arrays:
    return {
        v.SPLIT_ID: np.array([d.split_id], dtype=np.int64),
        v.LEFT: np.asarray(d.left, dtype=bool),
    }


def done_from(arrays: Arrays) -> SplitDone:
    return SplitDone(_scalar(arrays, v.SPLIT_ID), _get(arrays, v.LEFT, "bool"))


def rows_check(rows: np.ndarray, n: int, what: str) -> np.ndarray:
    """Row indices below `n`, distinct and ascending (a hostile message's otherwise)."""
    if rows.size and (rows[0] < 0 or rows[-1] >= n or np.any(np.diff(rows) <= 0)):
        raise ProtocolError(f"{what}: not ascending rows below {n}")
    return rows
