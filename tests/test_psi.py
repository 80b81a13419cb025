"""ECDH-PSI (privacy/psi.py): exact intersections, alignment, and what the messages do not carry."""

from __future__ import annotations

import copy
import hashlib
import pickle

import nacl.bindings as sodium
import numpy as np
import pytest

from jointcredit.privacy import psi
from jointcredit.privacy.psi import FeaturePsi, LabelPsi, PsiError, PsiResult


def run(
    label_ids: list[str], feature_ids: list[str], workers: int = 1
) -> tuple[PsiResult, PsiResult, list[np.ndarray]]:
    """The protocol's four steps; returns both parties' results and every message sent."""
    label, feature = LabelPsi(label_ids, workers=workers), FeaturePsi(feature_ids, workers=workers)
    m_label = label.blinded()
    m_feature = feature.blinded()
    m_label_double = feature.reblind(m_label)
    label_result, positions = label.intersect(m_label_double, label.reblind(m_feature))
    return (
        label_result,
        feature.aligned_rows(positions),
        [m_label, m_feature, m_label_double, positions],
    )


def ids(numbers: range | list[int]) -> list[str]:
    return [f"+86 138{n:08d}" for n in numbers]


def check_aligned(a: list[str], b: list[str], ra: PsiResult, rb: PsiResult) -> None:
    assert [a[i] for i in ra.rows] == [b[j] for j in rb.rows]


@pytest.mark.parametrize("workers", [1, 2])
def test_exact_intersection_with_known_overlap(workers: int) -> None:
    a, b = ids(range(0, 5000)), ids(range(3500, 5500))  # 1500 shared; two chunks
    ra, rb, _ = run(a, b, workers)
    assert ra.size == rb.size == 1500
    assert {a[i] for i in ra.rows} == set(a) & set(b)
    check_aligned(a, b, ra, rb)


def test_order_of_the_shared_rows_is_not_either_partys_row_order() -> None:
    a, b = ids(range(0, 400)), ids(range(0, 400))
    ra, _, _ = run(a, b)
    assert sorted(ra.rows.tolist()) == list(range(400))
    assert ra.rows.tolist() != list(range(400))  # shuffled: 1/400! to fail by chance


def test_duplicates_are_sent_once_and_the_first_row_stands_for_them() -> None:
    a = ids([1, 2, 2, 3, 3, 3])
    b = ids([3, 3, 4, 2])
    label, feature = LabelPsi(a), FeaturePsi(b)
    assert (label.distinct, feature.distinct) == (3, 3)
    assert label.blinded().shape == (3, 32)
    ra, rb, _ = run(a, b)
    assert sorted(ra.rows.tolist()) == [1, 3]  # first rows of ids 2 and 3
    assert sorted(rb.rows.tolist()) == [0, 3]
    check_aligned(a, b, ra, rb)


@pytest.mark.parametrize(("a", "b"), [([], []), ([], ids([1, 2])), (ids([1, 2]), [])])
def test_empty_sets(a: list[str], b: list[str]) -> None:
    ra, rb, messages = run(a, b)
    assert ra.size == rb.size == 0
    assert messages[0].shape == (len(set(a)), 32) and messages[3].dtype == np.uint32


def test_disjoint_sets() -> None:
    ra, rb, _ = run(ids(range(0, 500)), ids(range(500, 900)))
    assert ra.size == rb.size == 0


def test_blinding_commutes() -> None:
    a, b = LabelPsi(["x", "y"]), FeaturePsi(["z"])
    points = np.frombuffer(psi._hash_chunk([b"x", b"y"]), dtype=np.uint8).reshape(-1, 32)
    assert np.array_equal(a.reblind(b.reblind(points)), b.reblind(a.reblind(points)))


def test_hashed_points_are_in_the_prime_order_subgroup() -> None:
    """The map lands on the curve's prime-order subgroup (not the twist): the Edwards form of
    each point is valid in libsodium's sense, which includes the subgroup check."""
    for ident in (b"a", b"+86 13800000001", b""):
        digest = hashlib.sha512(psi._TAG + ident).digest()[:32]
        edwards = sodium.crypto_core_ed25519_from_uniform(digest)
        assert sodium.crypto_core_ed25519_is_valid_point(edwards)
        assert sodium.crypto_sign_ed25519_pk_to_curve25519(edwards) == psi._hash_chunk([ident])


def forbidden_strings(identifiers: list[str]) -> list[bytes]:
    """An identifier's bytes, its hashes and its unblinded point: none may appear in a message."""
    out: list[bytes] = []
    for ident in identifiers:
        raw = ident.encode()
        tagged = psi._TAG + raw
        out += [raw, hashlib.sha256(raw).digest(), hashlib.sha512(raw).digest()[:32]]
        out += [hashlib.sha256(tagged).digest(), hashlib.sha512(tagged).digest()[:32]]
        out.append(sodium.crypto_core_ed25519_from_uniform(hashlib.sha512(tagged).digest()[:32]))
        out.append(psi._hash_chunk([raw]))
    return out


def test_no_message_carries_an_identifier_or_a_plain_hash_of_one() -> None:
    a, b = ids(range(0, 300)), ids(range(200, 450))
    _, _, messages = run(a, b)
    wire = b"".join(m.tobytes() for m in messages)
    rows = {m.tobytes()[k : k + 32] for m in messages[:3] for k in range(0, m.nbytes, 32)}
    for needle in forbidden_strings(a + b):
        assert needle not in rows
        assert needle[:16] not in wire  # not even a prefix of one


def test_secret_scalars_differ_per_run_and_are_never_serialized() -> None:
    first, second = LabelPsi(["x"]), LabelPsi(["x"])
    assert first._scalar._key != second._scalar._key
    assert not np.array_equal(first.blinded(), second.blinded())
    for thing in (first, first._scalar):
        with pytest.raises(TypeError, match="never serialized"):
            pickle.dumps(thing)
        with pytest.raises(TypeError, match="never serialized"):
            copy.deepcopy(thing)
    assert first._scalar._key.hex() not in repr(first._scalar)


def test_bad_messages_are_refused() -> None:
    label, feature = LabelPsi(ids([1, 2])), FeaturePsi(ids([2]))
    with pytest.raises(PsiError, match="shape"):
        feature.reblind(np.zeros((2, 31), dtype=np.uint8))
    with pytest.raises(PsiError, match="uint8"):
        feature.reblind(np.zeros((2, 32), dtype=np.int64))
    with pytest.raises(PsiError, match="small order"):
        feature.reblind(np.zeros((1, 32), dtype=np.uint8))  # u = 0 has order 2
    double = feature.reblind(label.blinded())
    with pytest.raises(PsiError, match="1 points for 2"):
        label.intersect(double[:1], label.reblind(feature.blinded()))
    with pytest.raises(PsiError, match="repeated"):
        label.intersect(np.repeat(double[:1], 2, axis=0), label.reblind(feature.blinded()))
    with pytest.raises(PsiError, match="ascending"):
        feature.aligned_rows(np.array([1], dtype=np.uint32))
    with pytest.raises(PsiError, match="uint32"):
        feature.aligned_rows(np.array([0], dtype=np.int64))
    with pytest.raises(PsiError, match="row 1"):
        LabelPsi(["a", 7])
