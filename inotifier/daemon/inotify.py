"""A thin inotify binding and a reader thread that drains the kernel queue into our own memory.

pyinotify reads the kernel queue from the same thread that runs the processors,
so a fast writer overflows the kernel queue (16 384 events by default) while a
batch is being processed. Here a dedicated thread does nothing but ``read()``
the inotify fd into a bounded buffer of raw chunks (``os.read`` releases the
GIL, so it keeps up with the kernel); the daemon's loop parses and processes
from that buffer at its own pace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator

from ..escaping import get_logger

logger = get_logger("inotifier.daemon.inotify")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.inotify_rm_watch.restype = ctypes.c_int

_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.fstatfs.restype = ctypes.c_int

#: ``inotify_add_watch(fd, path_bytes, mask)``: the wd, or -1 with the errno in ctypes.get_errno().
raw_add_watch = _libc.inotify_add_watch

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")
HEADER_SIZE = _HEADER.size
#: Bytes asked for per read(): room for thousands of events.
READ_SIZE = 1 << 18
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
#: How a directory below a watched root is opened: never through a symbolic link.
O_SUBDIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: File systems whose directories count their subdirectories in st_nlink (2 + subdirectories),
#: so a directory with st_nlink == 2 has none and need not be listed: ext2/3/4, tmpfs, XFS.
#: (btrfs reports 1, others make no promise: they are always listed.)
NLINK_COUNTS_SUBDIRS = frozenset({0xEF53, 0x01021994, 0x58465342})


def fd_path(fd: int) -> bytes:
    """Return the ``/proc/self/fd`` name of an open file: a path that reaches exactly that inode."""
    return b"/proc/self/fd/%d" % fd


def real_path(fd: int) -> str | None:
    """Return where the open directory or file ``fd`` really is (symlinks resolved), or None if deleted.

    This is the kernel's own answer for the inode that is open, not for a name
    that may have been swapped since: the check the allowed roots need.
    """
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if path.endswith(" (deleted)") or not path.startswith("/"):
        return None
    return path


def fs_type(fd: int) -> int:
    """Return the file system magic number (statfs ``f_type``) of an open file, 0 if unknown."""
    buf = ctypes.create_string_buffer(256)
    if _libc.fstatfs(fd, buf) != 0:
        return 0
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little", signed=True) & 0xFFFFFFFF


def read_sysctl(name: str) -> int | None:
    """Return the integer value of ``/proc/sys/fs/inotify/<name>``, or None."""
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


class Inotify:
    """An inotify instance: add and remove watches, read raw event chunks."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EMFILE:
                raise OSError(
                    err,
                    "too many inotify instances: raise the sysctl fs.inotify.max_user_instances "
                    f"(now {read_sysctl('max_user_instances')})",
                )
            raise OSError(err, os.strerror(err))
        self.fd = fd

    def add_watch(self, path: str | bytes, mask: int) -> int:
        """Return the watch descriptor for ``path``; raise OSError with the errno on failure."""
        raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
        wd = _libc.inotify_add_watch(self.fd, raw, mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(raw))
        return int(wd)

    def add_watch_fd(self, fd: int, mask: int) -> int:
        """Watch the inode open as ``fd`` (not a name that may be swapped); return the wd.

        The ``/proc/self/fd`` magic link reaches the open inode itself, so
        IN_DONT_FOLLOW is dropped from the mask (it would watch the link).
        """
        return self.add_watch(fd_path(fd), mask & ~IN_DONT_FOLLOW)

    def rm_watch(self, wd: int) -> None:
        """Remove a watch; a watch the kernel already dropped is not an error."""
        if _libc.inotify_rm_watch(self.fd, wd) < 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, os.strerror(err))

    def close(self) -> None:
        """Close the inotify fd (the kernel drops every watch)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse(chunk: bytes) -> Iterator[tuple[int, int, int, str]]:
    """Yield ``(wd, mask, cookie, name)`` for each event of a raw chunk.

    Names are decoded as UTF-8 with ``surrogateescape`` (what ``os.fsdecode``
    does on Linux), so a name that is not valid UTF-8 survives unchanged
    (``os.fsencode`` gives the bytes back) instead of breaking the batch.
    """
    unpack = _HEADER.unpack_from
    end = len(chunk)
    pos = 0
    while pos < end:
        wd, mask, cookie, length = unpack(chunk, pos)
        pos += HEADER_SIZE
        if length:
            raw = chunk[pos : pos + length]
            pos += length
            yield wd, mask, cookie, raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
        else:
            yield wd, mask, cookie, ""


class Reader(threading.Thread):
    """Drain an inotify fd into a bounded in-memory queue of raw chunks.

    ``wake`` is called (from this thread) when the queue goes from empty to
    non-empty, so the consumer can sleep in ``select`` until there is work.
    When ``max_bytes`` are buffered the reader stops reading until the consumer
    catches up; the kernel queue then absorbs the difference.
    """

    def __init__(self, fd: int, wake: Callable[[], None], max_bytes: int) -> None:
        super().__init__(name="inotifier-reader", daemon=True)
        self.fd = fd
        self.wake = wake
        self.max_bytes = max_bytes
        self.chunks: deque[bytes] = deque()
        # Two counters, each written by one thread only, so no lock is needed.
        self.added = 0  # bytes appended (reader thread)
        self.removed = 0  # bytes taken (consumer thread)
        self.peak = 0
        self.reads = 0
        self._space = threading.Event()
        self._space.set()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False

    def run(self) -> None:
        fd = self.fd
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        read = os.read
        chunks = self.chunks
        while not self._stopping:
            if self.buffered >= self.max_bytes:
                self._space.clear()
                if self.buffered >= self.max_bytes:
                    self._space.wait(0.5)
                continue
            try:
                ready = poller.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if self._stopping:
                break
            for rfd, _ in ready:
                if rfd != fd:
                    continue
                while True:
                    try:
                        data = read(fd, READ_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:
                        logger.exception("reading the inotify fd failed")
                        return
                    if not data:
                        break
                    was_empty = not chunks
                    chunks.append(data)
                    self.reads += 1
                    self.added += len(data)
                    buffered = self.added - self.removed
                    if buffered > self.peak:
                        self.peak = buffered
                    if was_empty:
                        self.wake()
                    if self.buffered >= self.max_bytes:
                        break

    def take(self) -> bytes | None:
        """Return the oldest raw chunk, or None when the queue is empty (consumer side)."""
        try:
            data = self.chunks.popleft()
        except IndexError:
            return None
        self.removed += len(data)
        if not self._space.is_set() and self.buffered < self.max_bytes:
            self._space.set()
        return data

    def take_many(self, limit: int) -> bytes | None:
        """Return the oldest raw chunks joined, up to about ``limit`` bytes (consumer side).

        During a burst the reader produces many small chunks; handling them as
        one keeps the per-chunk overhead off the per-event cost.
        """
        first = self.take()
        if first is None or not self.chunks:
            return first
        parts = [first]
        size = len(first)
        while size < limit:
            data = self.take()
            if data is None:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    @property
    def buffered(self) -> int:
        """Return the bytes waiting in the queue."""
        return self.added - self.removed

    def stop(self) -> None:
        """Ask the thread to finish and wait for it."""
        self._stopping = True
        self._space.set()
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass


