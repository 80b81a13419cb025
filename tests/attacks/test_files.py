"""Attacks on files the service keeps (issue 19, items 6 and 7): the API keys file under
concurrent `apikey new` and with symlinks planted beside it; the decision database (every
applicant's features) readable by other users."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from test_audit_writer import _decision

from jointcredit.service.audit import AuditLog
from jointcredit.service.auth import load_keys, new_key
from jointcredit.trust.files import UnsafeFile


def test_ten_concurrent_new_keys_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    barrier = threading.Barrier(10)
    tokens: list[str] = []

    def add(k: int) -> None:
        barrier.wait()
        tokens.append(new_key(path, f"bank-{k}"))

    threads = [threading.Thread(target=add, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = load_keys(path).keys
    assert len(tokens) == 10 and len(kept) == 10
    assert {k.institution for k in kept} == {f"bank-{k}" for k in range(10)}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_symlink_planted_at_the_temporary_path_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = tmp_path / "api-keys.json"
    (tmp_path / "api-keys.json.tmp").symlink_to(victim)  # the old fixed temporary name
    new_key(path, "bank-a")
    assert victim.read_text() == "precious\n"
    assert len(load_keys(path).keys) == 1 and not path.is_symlink()


def test_a_keys_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = tmp_path / "api-keys.json"
    path.symlink_to(victim)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        new_key(path, "bank-a")
    assert victim.read_text() == "precious\n"


def test_the_decision_database_and_its_journal_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask: new files would be 0644
    try:
        db = tmp_path / "decisions.sqlite"
        log = AuditLog(f"sqlite:///{db}")
        log.append(_decision(1))
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")]
        assert all(f.exists() for f in files)
        modes = {f.name: stat.S_IMODE(os.stat(f).st_mode) for f in files}
        assert all(mode & 0o077 == 0 for mode in modes.values()), modes
        log.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "decisions.sqlite"
    AuditLog(f"sqlite:///{db}").close()
    os.chmod(db, 0o644)
    AuditLog(f"sqlite:///{db}").close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_the_trust_store_is_written_atomically_and_never_through_a_link(tmp_path: Path) -> None:
    """A trust store used to go through a fixed `trust.json.tmp`: a symlink planted there
    made `save_store` overwrite the link's target."""
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.keys import generate
    from jointcredit.trust.store import create, load_store, save_store

    store = create("fed", generate())
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    path = tmp_path / "trust.json"
    (tmp_path / "trust.json.tmp").symlink_to(victim)
    save_store(path, store)
    assert victim.read_text() == "untouched"
    assert load_store(path) == store
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    path.unlink()
    path.symlink_to(victim)
    with pytest.raises(TrustError, match="symbolic link"):
        save_store(path, store)
    assert victim.read_text() == "untouched"
