"""What the kernel really holds, for tests that check the daemon's parts against it.

The inotify watches of an instance as ``/proc/<pid>/fdinfo`` lists them, an
inode's identity, a bare owner for a ``WatchTable``, and a forked child for
work that needs another uid or a user namespace of its own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inotifier.daemon.kernel import Inotify

Identity = tuple[int, int]  # (st_dev, st_ino)
CLONE_NEWUSER = 0x10000000


def identity(path: Path | str) -> Identity:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def inotify_watches(fdinfo: str) -> dict[int, tuple[Identity, int]]:
    """Return ``{wd: ((st_dev, st_ino), mask)}`` of the watches an inotify fd's fdinfo text lists."""
    watches = {}
    for line in fdinfo.splitlines():
        if line.startswith("inotify "):
            fields = dict(part.split(":", 1) for part in line.split()[1:])
            dev = int(fields["sdev"], 16)
            # sdev is the kernel's dev_t (major << 20 | minor); st_dev is glibc's encoding.
            inode = (os.makedev(dev >> 20, dev & 0xFFFFF), int(fields["ino"], 16))
            watches[int(fields["wd"], 16)] = (inode, int(fields["mask"], 16))
    return watches


def kernel_watches(inotify: Inotify) -> dict[int, tuple[Identity, int]]:
    """Return ``{wd: ((st_dev, st_ino), mask)}`` of every watch the kernel holds on ``inotify``."""
    return inotify_watches(Path(f"/proc/self/fdinfo/{inotify.fd}").read_text())


def watched(inotify: Inotify) -> set[Identity]:
    """Return the inodes the kernel watches for ``inotify``."""
    return {inode for inode, _mask in kernel_watches(inotify).values()}


class Watch:
    """A watch as the table sees it (the ``Owner`` protocol): its paths, its mask, a checked open."""

    def __init__(self, mask: int) -> None:
        self.paths: dict[str, int] = {}
        self.mask = mask

    @property
    def kernel_mask(self) -> int:
        return self.mask

    def open_verified(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def modify(directory: Path, count: int) -> None:
    """Write ``count`` times to ``a`` and ``b`` in turn: as many IN_MODIFY, none merged by the kernel."""
    fds = [os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600) for name in "ab"]
    try:
        for i in range(count):
            os.write(fds[i & 1], b"x")
    finally:
        for fd in fds:
            os.close(fd)


def in_child(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a forked child and return what it returned (plain data).

    ``pytest.skip()`` in the child skips the test; any other exception in the child fails it.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            try:
                result: tuple[str, Any] = ("ok", work())
            except pytest.skip.Exception as exc:
                result = ("skip", str(exc.msg))
            except BaseException:
                result = ("error", traceback.format_exc())
            with os.fdopen(w, "wb") as fh:
                fh.write(pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == "skip":
        pytest.skip(value)
    assert status == "ok", f"in the child:\n{value}"
    return value


def in_a_user_namespace(watch_limit: int, work: Callable[[], Any]) -> Any:
    """Return what ``work()`` returns run in a forked child, in a user namespace of ``watch_limit`` watches.

    ``user.max_inotify_watches`` is per user namespace: lowering it there
    leaves the machine's own limit alone.
    """

    def limited() -> Any:
        logging.getLogger("inotifier.daemon").disabled = True
        uid, gid = os.getuid(), os.getgid()
        if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:
            pytest.skip(f"no user namespace here (unshare: {os.strerror(ctypes.get_errno())})")
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        Path("/proc/sys/user/max_inotify_watches").write_text(str(watch_limit))
        return work()

    return in_child(limited)
