"""A directory that holds a node's sockets and state is its user's alone: made 0700, and
refused when it is a symlink, not a directory, another user's or open to others (whoever may
enter it could replace the socket or the session registry). The node's vertical session host
uses one under the node's state directory and refuses an unsafe one before it starts."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from jointcredit.deploy.session_host import HOST_DIR, session_host
from jointcredit.trust.files import UnsafeFile, private_directory


def test_a_missing_directory_is_made_private(tmp_path: Path) -> None:
    made = private_directory(tmp_path / "host")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert private_directory(made) == made  # and reused as it is


def test_an_unsafe_directory_is_refused(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o700)
    wide.chmod(0o755)
    with pytest.raises(UnsafeFile, match="mode 0755, open to other users"):
        private_directory(wide)
    (tmp_path / "own").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "own")
    with pytest.raises(UnsafeFile, match="symbolic link"):
        private_directory(tmp_path / "link")
    (tmp_path / "file").write_text("")
    with pytest.raises(UnsafeFile, match="not a directory"):
        private_directory(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UnsafeFile, match="owned by uid 65534"):
        private_directory(theirs)


def test_the_session_host_refuses_an_unsafe_directory_before_it_starts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (state / HOST_DIR).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeFile, match="symbolic link"), session_host(state):
        pass
    assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing made through the link


def test_a_parent_others_may_write_is_refused(tmp_path: Path) -> None:
    """Whoever may write the parent (`KIT/state`) could rename the checked directory away
    and put their own in its place: refused before anything is made in it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0o770)
    with pytest.raises(UnsafeFile, match=r"state: mode 0770, open to other users"):
        private_directory(state / HOST_DIR)
    assert list(state.iterdir()) == []
    state.chmod(0o755)  # readable by others is fine: only writing it lets them swap
    assert private_directory(state / HOST_DIR) == state / HOST_DIR


def test_a_symlink_swapped_in_while_checking_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory is replaced by a symlink to another one right after it is examined
    (`lstat` or `fstat`, whichever looks at it): what the caller would then use is not what
    was checked, so it is refused."""
    target = tmp_path / "host"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    real_lstat, real_fstat = os.lstat, os.fstat

    def swap() -> None:
        if target.is_dir() and not target.is_symlink():
            target.rmdir()
            target.symlink_to(elsewhere)

    def lstat(p: Any, *a: Any, **k: Any) -> os.stat_result:
        st = real_lstat(p, *a, **k)
        if Path(p) == target:
            swap()
        return st

    def fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        with contextlib.suppress(FileNotFoundError):  # the parent's is looked at first
            seen = real_lstat(target)
            if (st.st_dev, st.st_ino) == (seen.st_dev, seen.st_ino):
                swap()
        return st

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "fstat", fstat)
    with pytest.raises(UnsafeFile, match="replaced while it was being checked"):
        private_directory(target)
