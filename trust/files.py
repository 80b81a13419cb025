"""Files that hold secrets or that several processes rewrite: written whole or not at all, never
through a symlink, readable by the owner only; directories only their owner may enter
(`private_directory`).

`replace_file` writes a fresh temporary file beside the target (`mkstemp`: a new, randomly
named file created exclusively, so nothing planted at a predictable temporary path is followed
or overwritten), syncs it and renames it over the target; a crash leaves the old file or the
new one. `locked` serialises read-modify-write cycles of one file across processes
(`filelock`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout


class UnsafeFile(OSError):
    """The target is something it must not be (a symlink, not a regular file)."""


def refuse_symlink(path: Path) -> None:
    """Raise UnsafeFile if `path` exists and is a symlink or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFile(f"{path}: is a symbolic link; refusing to write through it")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path}: not a regular file")


def _open_directory(name: str | Path, dir_fd: int | None, shown: Path) -> int:
    """A descriptor of the directory `name` itself (never a symlink's target): every check is
    then made on what was opened, not on a path that may name something else by then."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise UnsafeFile(f"{shown}: is a symbolic link; refusing to use it") from exc
        if exc.errno == errno.ENOTDIR:
            raise UnsafeFile(f"{shown}: not a directory") from exc
        raise


def _owned(fd: int, shown: Path, forbidden: int, need: str) -> os.stat_result:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise UnsafeFile(f"{shown}: owned by uid {st.st_uid}, not by this user ({os.geteuid()})")
    if st.st_mode & forbidden:
        mode = stat.S_IMODE(st.st_mode)
        raise UnsafeFile(f"{shown}: mode {mode:04o}, open to other users (must be {need})")
    return st


def private_directory(path: Path) -> Path:
    """`path` as a directory only this user may enter: made (0700) when absent; refused
    (UnsafeFile) when it is a symlink, not a directory, another user's, or open to group or
    others, since whoever may enter it could replace what this user keeps there. Its parent
    must be this user's and writable by no one else: whoever may write the parent could
    rename the checked directory away and put their own in its place after the checks."""
    parent_fd = _open_directory(path.parent, None, path.parent)
    try:
        _owned(parent_fd, path.parent, 0o022, "writable by its owner only")
        # Made and opened through the checked parent's descriptor, not its path.
        with contextlib.suppress(FileExistsError):
            os.mkdir(path.name, 0o700, dir_fd=parent_fd)
        fd = _open_directory(path.name, parent_fd, path)
        try:
            st = _owned(fd, path, 0o077, "0700")
        finally:
            os.close(fd)
        # Still the directory checked (not swapped for another, or a symlink, meanwhile).
        now = os.stat(path.name, dir_fd=parent_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafeFile(f"{path}: replaced while it was being checked")
    finally:
        os.close(parent_fd)
    return path


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically and durably replace (or create) `path` with `data`, with `mode`."""
    refuse_symlink(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold `<path>.lock` (created 0600, never through a symlink) for a read-modify-write."""
    lock_path = path.with_name(path.name + ".lock")
    refuse_symlink(lock_path)
    lock = FileLock(lock_path, timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except Timeout as exc:
        raise UnsafeFile(f"{path}: {lock_path} held by another process for {timeout:g} s") from exc
    try:
        yield
    finally:
        lock.release()


MAX_READ_BYTES = 2 << 30  # a file larger than this is refused, not read


def read_regular(path: Path, limit: int = MAX_READ_BYTES) -> bytes:
    """A regular file's bytes, refusing anything else without blocking: a FIFO in a file's
    place would block the reader forever, a device would never end, a symlink may point
    anywhere. FileNotFoundError when absent; UnsafeFile otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a symlink (ELOOP), a directory opened for reading is fine here
        raise UnsafeFile(f"{path}: cannot be read as a file ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(f"{path}: {st.st_size} bytes, over the {limit} allowed")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read()
