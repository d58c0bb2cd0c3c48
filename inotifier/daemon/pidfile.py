"""The pid file: created without following symlinks, locked while the daemon lives."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from django.utils.translation import gettext as _

#: struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.
_FLOCK = struct.Struct("hhqqi4x")


class PidFileError(Exception):
    """The pid file cannot be used; the message says why."""


class AlreadyRunning(PidFileError):
    """Another daemon holds the pid file."""

    def __init__(self, path: str, pid: int | None):
        self.pid = pid
        super().__init__(
            _("inotifier is already running (pid %(pid)s, pid file %(path)s)") % {"pid": pid, "path": path}
        )


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            message = _("refusing pid file %(path)s: it is a symbolic link") % {"path": path}
            raise PidFileError(message) from None
        raise PidFileError(
            _("cannot open pid file %(path)s: %(error)s") % {"path": path, "error": exc.strerror}
        ) from None


def lock_holder(path: str) -> int | None:
    """Return the pid of the process holding the lock on ``path``, or None."""
    try:
        fd = _open(path, os.O_RDONLY)
    except PidFileError:
        return None
    try:
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        result = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        l_type, _w, _s, _l, pid = _FLOCK.unpack(result)
        return int(pid) if l_type != fcntl.F_UNLCK else None
    finally:
        os.close(fd)


def read_pid(path: str) -> int | None:
    """Return the pid written in ``path``, or None when absent or unreadable."""
    try:
        fd = _open(path, os.O_RDONLY)
    except PidFileError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def running_pid(path: str) -> int | None:
    """Return the pid of the live inotifier daemon owning ``path``, or None.

    A daemon holds a lock on its pid file for as long as it lives, so a pid
    file nobody locks is stale (the daemon was killed), and a pid in the file
    that is not the lock holder is a stranger's: never trust the number alone.
    """
    holder = lock_holder(path)
    if holder is None:
        return None
    written = read_pid(path)
    if written is not None and written != holder:
        return None
    return holder


class PidFile:
    """Hold the pid file of the running daemon."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create (or take over a stale) pid file, lock it and write our pid.

        Raise AlreadyRunning when a live daemon holds it, PidFileError when the
        path is a symlink or cannot be written. Two daemons racing for it: the
        lock lets exactly one win.
        """
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            raise PidFileError(
                _("cannot create pid file %(path)s: %(dir)s is not a directory")
                % {"path": self.path, "dir": directory}
            )
        fd = _open(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AlreadyRunning(self.path, running_pid(self.path)) from None
        st = os.fstat(fd)
        if st.st_mode & 0o002:
            os.fchmod(fd, 0o644)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Remove the pid file (while still holding the lock) and close it."""
        if self.fd is None:
            return
        try:
            st = os.stat(self.path, follow_symlinks=False)
            if st.st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
