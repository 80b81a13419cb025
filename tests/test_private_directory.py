"""A directory that holds a node's sockets and state is its user's alone: made 0700, and
refused when it is a symlink, not a directory, another user's or open to others (whoever may
enter it could replace the socket or the session registry). The node's vertical session host
uses one under the node's state directory and refuses an unsafe one before it starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
