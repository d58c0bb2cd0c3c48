"""find(1) as a child process: the entries of a tree changed since a time, listed off the loop's core."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess

from ..escaping import get_logger

logger = get_logger("inotifier.daemon.catchup")

#: Where find(1) is (None: not installed; the catch-up then lists the tree itself).
FIND = shutil.which("find")
#: Bytes read from the child at once (about 4 000 entries: one step of the loop).
READ_BYTES = 64 * 1024
#: The pipe's size, asked of the kernel: find runs ahead while the loop delivers.
PIPE_BYTES = 1 << 20


class Finder:
    """List, in a ``find -P`` child, the entries below an open directory changed since ``since``.

    The child gets the directory as a descriptor (``/proc/self/fd/N/``: the
    directory the caller opened and checked, never a path that could have
    been swapped) and never follows a symbolic link (``-P``; GNU find opens
    each subdirectory with ``O_NOFOLLOW`` and checks it is the one it listed).
    It prints ``<type><path relative to the directory>\\0`` for each entry whose
    mtime or ctime is at or after ``since``. The pipe is bounded, so a child
    ahead of its reader waits: memory stays flat whatever the tree.
    """

    def __init__(self, fd: int, since: float, recursive: bool) -> None:
        assert FIND is not None
        self.program = FIND
        stamp = f"@{since - 1e-6:.6f}"  # find's -newer is strict: at or after the mark
        args = [FIND, "-P", f"/proc/self/fd/{fd}/", "-mindepth", "1"]
        if not recursive:
            args += ["-maxdepth", "1"]
        args += ["(", "-newermt", stamp, "-o", "-newerct", stamp, ")", "-printf", "%y%P\\0"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            pass_fds=(fd,),
            env={"LC_ALL": "C", "PATH": os.defpath},
        )
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.fileno()
        os.set_blocking(self.out, False)
        try:
            fcntl.fcntl(self.out, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for an unprivileged process: the default
        self._tail = b""
        #: True once it ended in error without printing anything: not a find that can do this
        #: (busybox's has no -newermt / -printf); the caller lists the tree itself.
        self.failed = False
        self._printed = False

    def read(self, timeout: float) -> list[bytes] | None:
        """Return the entries that arrived within ``timeout`` seconds ([] if none yet), None at the end."""
        ready, _, _ = select.select([self.out], [], [], max(0.0, timeout))
        if not ready:
            return []
        try:
            data = os.read(self.out, READ_BYTES)
        except BlockingIOError:
            return []
        if not data:
            self._finish()
            return None
        self._printed = True
        parts = (self._tail + data).split(b"\0")
        self._tail = parts.pop()
        return parts

    def _finish(self) -> None:
        code = self.proc.wait()
        if code and not self._printed:
            self.failed = True
        elif code:
            # A subdirectory it could not read (permissions), or one gone meanwhile.
            logger.warning("catch-up: find exited with status %d; some entries may be missing", code)

    def close(self) -> None:
        """Stop the child (a scan cancelled or finished) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
