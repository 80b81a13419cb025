"""Two `serve` processes started together on a fresh directory both create the audit anchor
key: exactly one key must win, and both must sign with it (no "already exists" error, no
half-written key read by the other)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from jointcredit.service.anchors import anchor_key
from jointcredit.trust import keys

pytestmark = pytest.mark.unit
PROCESSES = 8


def _create(path: str, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        out.put(keys.key_id(anchor_key(Path(path))))  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the test, which names it
        out.put(f"error: {exc}")  # type: ignore[attr-defined]


def test_simultaneous_creators_agree_on_one_key(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"try-{attempt}" / "audit-anchor.key"
        barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [
            ctx.Process(target=_create, args=(str(path), barrier, out)) for _ in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        ids = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert not [i for i in ids if i.startswith("error")], ids
        assert len(set(ids)) == 1, ids
        on_disk = keys.key_id(keys.load_private_key(path))
        assert ids[0] == on_disk
        assert keys.key_id(keys.load_public_key(path.with_name(path.name + ".pub"))) == on_disk


def test_a_key_left_without_its_public_half_gets_it(tmp_path: Path) -> None:
    """A crash between writing the private key and its public half must not leave the service
    unable to start or the verifier without a public key."""
    path = tmp_path / "audit-anchor.key"
    key = keys.generate()
    keys.write_private_key(path, key)
    assert keys.key_id(anchor_key(path)) == keys.key_id(key)
    assert keys.key_id(keys.load_public_key(path.with_name(path.name + ".pub"))) == keys.key_id(key)
