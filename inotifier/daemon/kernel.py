"""The inotify binding: the instance, adding and removing watches safely, parsing events, limits.

Only this module talks to libc. Watches below a root are added through an
open descriptor (``/proc/self/fd/N``), never a name that may have been swapped
for a symbolic link since it was listed; ``WatchError`` says what failed and
what to do about it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import errno
import os
import resource
import struct
from collections.abc import Iterator

from ..masks import IN_DONT_FOLLOW

_LIBC = ctypes.util.find_library("c") or "libc.so.6"
_libc = ctypes.CDLL(_LIBC, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.inotify_rm_watch.restype = ctypes.c_int
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.fstatfs.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_CLONE_FS = 0x200
#: Added to the kernel mask of a watch that may exist already: the bits of its other owners stay.
IN_MASK_ADD = 0x20000000

#: ``inotify_add_watch(fd, path_bytes, mask)``: the wd, or -1 with the errno in ctypes.get_errno().
#: Called directly by the tree walk's hot loop, so without argtypes: ctypes passes an int and a
#: bytes as they are, 0.2 us a call sooner (50 000 directories: bench target 6).
raw_add_watch = ctypes.CDLL(_LIBC, use_errno=True).inotify_add_watch
raw_add_watch.restype = ctypes.c_int

_HEADER = struct.Struct("iIII")
HEADER_SIZE = _HEADER.size
#: How a directory below a watched root is opened: never through a symbolic link.
O_SUBDIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A directory held to be watched, not read: an O_PATH open raises no IN_OPEN on the watches
#: above it (the tree walk opens every directory; bench target 6, recursive set-up).
O_SUBDIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: File systems whose directories count their subdirectories in st_nlink (2 + subdirectories),
#: so a directory with st_nlink == 2 has none and need not be listed: ext2/3/4, tmpfs, XFS.
#: (btrfs reports 1, others make no promise: they are always listed.)
NLINK_COUNTS_SUBDIRS = frozenset({0xEF53, 0x01021994, 0x58465342})


def own_cwd() -> bool:
    """Give the calling thread a working directory no other thread shares; True if it has one.

    ``unshare(CLONE_FS)``: a ``chdir`` in this thread is then seen by no thread
    running now (the daemon's other threads may open relative paths). Threads it
    starts later share it again, so it is done before each use, not once: a
    copy of a few fields. False where the kernel refuses it.
    """
    return _libc.unshare(_CLONE_FS) == 0


def read_sysctl(name: str) -> int | None:
    """Return the integer value of ``/proc/sys/fs/inotify/<name>``, or None."""
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def watch_limit() -> tuple[str, int | None]:
    """Return the sysctl that limits inotify watches here, and its value.

    In a user namespace (containers) ``user.max_inotify_watches`` may be the
    lower, effective limit; otherwise it is ``fs.inotify.max_user_watches``.
    """
    system = read_sysctl("max_user_watches")
    try:
        with open("/proc/sys/user/max_inotify_watches") as fh:
            per_namespace: int | None = int(fh.read())
    except (OSError, ValueError):
        per_namespace = None
    if per_namespace is not None and (system is None or per_namespace < system):
        return "user.max_inotify_watches", per_namespace
    return "fs.inotify.max_user_watches", system


class Kind(enum.Enum):
    """Why a watch could not be added."""

    MISSING = "missing"  # ENOENT / ENOTDIR: not there (yet)
    NO_SPACE = "no_space"  # ENOSPC: out of kernel watches
    PERMISSION = "permission"  # EACCES
    LOOP = "loop"  # ELOOP: a link loop
    REPLACED = "replaced"  # moved or swapped for a link between being listed and opened
    OUTSIDE = "outside"  # it really is outside the directories the watch may use
    OTHER = "other"


_KINDS = {
    errno.ENOENT: Kind.MISSING,
    errno.ENOTDIR: Kind.MISSING,
    errno.ENOSPC: Kind.NO_SPACE,
    errno.EACCES: Kind.PERMISSION,
    errno.ELOOP: Kind.LOOP,
}


class WatchError(OSError):
    """A watch that could not be added: its ``kind``, and ``message()`` saying what to do.

    ``needed`` is how many more kernel watches a tree needed when the kind is
    NO_SPACE; ``detail`` is extra text for OUTSIDE (where it really is).
    """

    def __init__(
        self,
        code: int,
        path: str,
        kind: Kind | None = None,
        *,
        needed: int = 1,
        detail: str = "",
    ) -> None:
        super().__init__(code, os.strerror(code), path)
        self.path = path
        self.kind = kind or _KINDS.get(code, Kind.OTHER)
        self.needed = needed
        self.detail = detail

    @classmethod
    def of(cls, exc: OSError, path: str, needed: int = 1) -> WatchError:
        """Return ``exc`` as a WatchError about ``path`` (itself if it already is one)."""
        if isinstance(exc, WatchError):
            if needed > exc.needed:
                exc.needed = needed
            return exc
        return cls(exc.errno or errno.EIO, path, needed=needed)

    def message(self) -> str:
        """Return a sentence that says what failed and what to do about it."""
        path = self.path
        kind = self.kind
        if kind is Kind.NO_SPACE:
            name, limit = watch_limit()
            needed = self.needed
            return (
                f"{NO_SPACE_PREFIX} while watching {path!r}: the sysctl {name} "
                f"({limit}) is reached; at least {needed} more needed "
                f"(e.g. sysctl {name}={(limit or 8192) + needed + 1024})"
            )
        if kind is Kind.PERMISSION:
            return f"permission denied watching {path!r} (the daemon runs as uid {os.getuid()})"
        if kind is Kind.REPLACED:
            return f"{path!r} was moved or replaced by a link while being watched; not followed"
        if kind is Kind.OUTSIDE:
            return f"{path!r} {self.detail}"
        if kind is Kind.LOOP:
            return f"{path!r} is a symbolic link loop"
        if self.errno == errno.ENOENT:
            return f"{path!r} does not exist"
        if self.errno == errno.ENOTDIR:
            return f"{path!r} is not a directory"
        return f"cannot watch {path!r}: {self.strerror}"


#: How the sentence for "out of kernel watches" starts.
NO_SPACE_PREFIX = "out of inotify watches"


def _out_of_descriptors() -> bool:
    """Return True when this process cannot open one more file (EMFILE has two causes)."""
    try:
        os.close(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        return exc.errno == errno.EMFILE
    return False


class Inotify:
    """An inotify instance: add and remove watches; its fd is read by the ``Reader``."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EMFILE and _out_of_descriptors():
                soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                raise OSError(
                    err,
                    f"this process has no file descriptor left (RLIMIT_NOFILE {soft}): raise "
                    "LimitNOFILE= of the service (ulimit -n)",
                )
            if err == errno.EMFILE:
                raise OSError(
                    err,
                    "too many inotify instances: raise the sysctl fs.inotify.max_user_instances "
                    f"(now {read_sysctl('max_user_instances')})",
                )
            raise OSError(err, os.strerror(err))
        self.fd = fd

    def add_watch_fd(self, fd: int, mask: int, path: str = "") -> int:
        """Watch the inode open as ``fd`` (not a name that may be swapped); return the wd.

        The ``/proc/self/fd`` magic link reaches the open inode itself, so
        IN_DONT_FOLLOW is dropped from the mask (it would watch the link).
        ``path`` names the inode in an error.
        """
        wd = _libc.inotify_add_watch(self.fd, fd_path(fd), mask & ~IN_DONT_FOLLOW)
        if wd < 0:
            raise WatchError(ctypes.get_errno(), path or f"/proc/self/fd/{fd}")
        return int(wd)

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


# -- opening what is watched ------------------------------------------------------------


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
        # Deleted: no link left. Not told by the " (deleted)" the kernel appends to the name:
        # an uploader may name a live directory so, to have it taken for a deleted one.
        if not path.startswith("/") or os.fstat(fd).st_nlink == 0:
            return None
    except OSError:
        return None
    return path


def fs_type(fd: int) -> int:
    """Return the file system magic number (statfs ``f_type``) of an open file, 0 if unknown."""
    buf = ctypes.create_string_buffer(256)
    if _libc.fstatfs(fd, buf) != 0:
        return 0
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little", signed=True) & 0xFFFFFFFF


def open_root(path: str, mask: int) -> int:
    """Open a watch's root (a directory, else the file itself); symlinks in it are followed.

    A configured root may be a link (``/srv/current``): where it leads is checked
    against the watch's fence afterwards, on the opened inode. With
    IN_DONT_FOLLOW in the mask a link root is watched as the link itself.
    Raise WatchError.
    """
    nofollow = os.O_NOFOLLOW if mask & IN_DONT_FOLLOW else 0
    try:
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | nofollow)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
        # Not a directory: watched as a file, opened without reading it (no FIFO hangs).
        return os.open(path, os.O_PATH | os.O_CLOEXEC | nofollow)
    except OSError as exc:
        raise WatchError.of(exc, path) from None


def open_subdir(path: str, expected: str) -> int:
    """Open the directory ``path`` below a watched root, never through a link; return the fd.

    ``expected`` is where it really must be (the root's real path + the rest):
    the kernel's answer for the opened directory is compared with it, so a
    parent swapped for a symbolic link since the walk listed it is caught
    (WatchError of kind REPLACED), not followed.
    """
    try:
        fd = os.open(path, O_SUBDIR)
    except OSError as exc:
        raise WatchError.of(exc, path) from None
    if real_path(fd) != expected:
        os.close(fd)
        raise WatchError(errno.ELOOP, path, Kind.REPLACED)
    return fd
