"""The actual set of watches: kernel watch descriptors shared between ActiveWatch objects.

One inotify instance serves every watch. The kernel gives one descriptor (wd)
per inode, so two watches on the same directory share it: a ``Node`` holds the
owners of one wd and the kernel mask is the union of theirs.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pyinotify

from ..escaping import get_logger
from ..masks import BITS, EVENT_BITS, VALID_BITS, event_maskname
from ..specs import WatchSpec, is_excluded, is_within
from ..states import State
from .inotify import (
    IN_DONT_FOLLOW,
    NLINK_COUNTS_SUBDIRS,
    O_SUBDIR,
    Inotify,
    fd_path,
    fs_type,
    raw_add_watch,
    read_sysctl,
    real_path,
)

logger = get_logger("inotifier.daemon")

IN_ISDIR = BITS["IN_ISDIR"]
IN_CREATE = BITS["IN_CREATE"]
IN_CLOSE_WRITE = BITS["IN_CLOSE_WRITE"]
IN_DELETE = BITS["IN_DELETE"]
IN_MOVED_FROM = BITS["IN_MOVED_FROM"]
IN_MOVED_TO = BITS["IN_MOVED_TO"]
IN_DELETE_SELF = BITS["IN_DELETE_SELF"]
IN_MOVE_SELF = BITS["IN_MOVE_SELF"]
IN_IGNORED = BITS["IN_IGNORED"]
IN_UNMOUNT = BITS["IN_UNMOUNT"]
IN_ONLYDIR = BITS["IN_ONLYDIR"]
#: Events a tree watch needs to follow its subdirectories, whatever the user asked for.
TREE_BITS = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
#: Events every watch needs to notice its own root going away.
ROOT_BITS = IN_DELETE_SELF | IN_MOVE_SELF
#: Bits the kernel accepts in inotify_add_watch (the rest it sets on its own).
KERNEL_BITS = VALID_BITS & ~(IN_IGNORED | BITS["IN_Q_OVERFLOW"] | IN_UNMOUNT)
#: Events that are about a watched inode itself (the kernel sets no IN_ISDIR on them).
SELF_BITS = IN_DELETE_SELF | IN_MOVE_SELF
#: How the sentence for "out of kernel watches" starts (a tree walk returns sentences).
NO_SPACE_PREFIX = "out of inotify watches"
#: Deepest level of a tree walked with a descriptor open per level (beyond: skipped, said so).
MAX_DEPTH = 512

ACTIVE = State.ACTIVE
MISSING = State.MISSING
ERROR = State.ERROR


class Retry(enum.Enum):
    """Why a watch in error is tried again by itself (not only at a forced resync or reload)."""

    NO = "no"
    #: Out of kernel watches: some may be freed (tried at each forced resync).
    NO_SPACE = "no_space"
    #: Its root led outside the allowed roots: the link may be replaced (tried at each poll).
    OUTSIDE = "outside"


class Replaced(OSError):
    """A directory was moved or swapped for a link between being listed and being opened."""


class InotifierEvent(pyinotify.Event):
    """A pyinotify Event built without pyinotify's per-event costs.

    It has every attribute pyinotify's Event has (wd, mask, maskname, cookie,
    path, name, pathname, dir and, for paired moves, src_pathname), and
    ``synthetic``: True for an event the daemon made up for a file it found
    already there (a new or re-created directory listed once it is watched).
    """

    synthetic = False

    def __init__(self, **attrs: Any) -> None:  # for tests and users; the daemon uses make_event
        self.__dict__.update(attrs)


def make_event(
    wd: int, mask: int, cookie: int, name: str, path: str, pathname: str
) -> InotifierEvent:
    """Return an event; ``__new__`` + one dict keeps this at about a microsecond."""
    event = InotifierEvent.__new__(InotifierEvent)
    event.__dict__ = {
        "wd": wd,
        "mask": mask,
        "maskname": event_maskname(mask),
        "cookie": cookie,
        "path": path,
        "name": name,
        "pathname": pathname,
        "dir": bool(mask & IN_ISDIR),
    }
    return event


def watch_error_message(exc: OSError, path: str, needed: int = 1) -> str:
    """Return a sentence for a failed inotify_add_watch that says what to do about it."""
    if exc.errno == errno.ENOSPC:
        name, limit = watch_limit()
        return (
            f"{NO_SPACE_PREFIX} while watching {path!r}: the sysctl {name} "
            f"({limit}) is reached; at least {needed} more needed "
            f"(e.g. sysctl {name}={(limit or 8192) + needed + 1024})"
        )
    if exc.errno == errno.EACCES:
        return f"permission denied watching {path!r} (the daemon runs as uid {os.getuid()})"
    if exc.errno == errno.ENOENT:
        return f"{path!r} does not exist"
    if exc.errno == errno.ENOTDIR:
        return f"{path!r} is not a directory"
    if exc.errno == errno.ELOOP:
        return f"{path!r} is a symbolic link loop"
    if isinstance(exc, Replaced):
        return f"{path!r} was moved or replaced by a link while being watched; not followed"
    return f"cannot watch {path!r}: {exc.strerror or exc}"


def open_subdir(path: str, expected: str) -> int:
    """Open the directory ``path`` below a watched root, never through a link; return the fd.

    ``expected`` is where it really must be (the root's real path + the rest):
    the kernel's answer for the opened directory is compared with it, so a
    parent swapped for a symbolic link since the walk listed it is caught
    (``Replaced``), not followed.
    """
    fd = os.open(path, O_SUBDIR)
    if real_path(fd) != expected:
        os.close(fd)
        raise Replaced(errno.ELOOP, "moved or replaced by a link", path)
    return fd


def open_root(path: str, mask: int) -> int:
    """Open a watch's root (a directory, else the file itself); symlinks in it are followed.

    A configured root may be a link (``/srv/current``): where it leads is checked
    against the watch's fence afterwards, on the opened inode. With
    IN_DONT_FOLLOW in the mask a link root is watched as the link itself.
    """
    nofollow = os.O_NOFOLLOW if mask & IN_DONT_FOLLOW else 0
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | nofollow)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    # Not a directory: watched as a file, opened without reading it (no FIFO hangs).
    return os.open(path, os.O_PATH | os.O_CLOEXEC | nofollow)


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


class Node:
    """One kernel watch descriptor and the watches that own it (usually one)."""

    __slots__ = ("owners", "wd")

    def __init__(self, wd: int) -> None:
        self.wd = wd
        self.owners: dict[ActiveWatch, str] = {}  # watch -> path of this wd in that watch

    def kernel_mask(self) -> int:
        mask = 0
        for owner in self.owners:
            mask |= owner.kernel_mask
        return mask


class WatchTable:
    """Every kernel watch of the daemon, by wd, with reference counting across watches."""

    def __init__(self, inotify: Inotify) -> None:
        self.inotify = inotify
        self.nodes: dict[int, Node] = {}

    def attach(self, watch: ActiveWatch, path: str, fd: int, mask: int) -> int:
        """Watch the inode open as ``fd`` (at ``path``) for ``watch``; return the wd.

        Raise OSError from the kernel. Watching through the descriptor, never the
        name, is what keeps a name swapped for a link from being watched.
        """
        wd = self.inotify.add_watch_fd(fd, mask)
        node = self.nodes.get(wd)
        if node is None:
            node = self.nodes[wd] = Node(wd)
        elif watch not in node.owners and node.owners:
            # The inode is already watched for someone else: the add above replaced
            # the kernel mask, so set the union again.
            node.owners[watch] = path
            self.inotify.add_watch_fd(fd, node.kernel_mask() | (mask & IN_ONLYDIR))
            watch.paths[path] = wd
            return wd
        node.owners[watch] = path
        watch.paths[path] = wd
        return wd

    def detach(self, watch: ActiveWatch, wd: int) -> None:
        """Stop watching ``wd`` for ``watch``; remove the kernel watch when nobody owns it."""
        node = self.nodes.get(wd)
        if node is None:
            return
        path = node.owners.pop(watch, None)
        if path is not None and watch.paths.get(path) == wd:
            del watch.paths[path]
        if not node.owners:
            del self.nodes[wd]
            try:
                self.inotify.rm_watch(wd)
            except OSError as exc:
                logger.warning("removing kernel watch %s failed: %s", wd, exc)
        else:
            self._remask(node)

    def _remask(self, node: Node) -> None:
        """Set the union of the owners' masks on ``node``'s inode, reached by a checked open."""
        watch, path = next(iter(node.owners.items()))
        try:
            fd = watch.open_verified(path)
        except OSError as exc:
            logger.warning("updating the mask of %r failed: %s", path, watch_error_message(exc, path))
            return
        try:
            wd = self.inotify.add_watch_fd(fd, node.kernel_mask())
            if wd != node.wd:
                # Another inode answers to that name now: undo what the add did to it.
                other = self.nodes.get(wd)
                if other is None:
                    self.inotify.rm_watch(wd)
                else:
                    self.inotify.add_watch_fd(fd, other.kernel_mask())
                logger.warning("updating the mask of %r failed: it was replaced", path)
        except OSError as exc:
            logger.warning("updating the mask of %r failed: %s", path, exc)
        finally:
            os.close(fd)

    def remask(self, watch: ActiveWatch) -> None:
        """Apply a changed ``watch.kernel_mask`` to all its wds without removing any."""
        for wd in list(watch.paths.values()):
            node = self.nodes.get(wd)
            if node is not None:
                self._remask(node)

    def forget(self, wd: int) -> Node | None:
        """Drop a wd the kernel removed on its own (IN_IGNORED); return its node."""
        node = self.nodes.pop(wd, None)
        if node is not None:
            for watch, path in node.owners.items():
                if watch.paths.get(path) == wd:
                    del watch.paths[path]
        return node

    def detach_all(self, watch: ActiveWatch) -> None:
        """Remove every wd of ``watch``."""
        for wd in list(watch.paths.values()):
            self.detach(watch, wd)
        watch.paths.clear()

    def __len__(self) -> int:
        return len(self.nodes)


class ActiveWatch:
    """A WatchSpec being watched: its processor, its wds, its state and its counters."""

    def __init__(
        self,
        spec: WatchSpec,
        processor: Callable[[Any], Any] | None,
        daemon: Any,
    ) -> None:
        self.spec = spec
        self.processor = processor
        self.daemon = daemon
        self.paths: dict[str, int] = {}  # path -> wd, for every kernel watch it holds
        self.queue: deque[tuple[int, str, int, int, str]] = deque()  # routed, not yet handled
        self.state = ""  # none yet: the first set_state always says what it became
        self.message = spec.error
        self.retry = Retry.NO
        self.events = 0
        self.errors = 0
        self.last_event: float | None = None
        self.dirty = True  # status row needs writing
        self.tree = spec.recursive or spec.auto_add
        #: Where the root really is (symlinks resolved) and whether it is a directory,
        #: as found on the opened inode at the last (re)attach.
        self.root_real: str | None = None
        self.root_is_dir = True
        self._configure()
        self._moves: dict[int, str] = {}  # cookie -> src pathname of a move in progress
        self._dir_moves: dict[int, str] = {}  # cookie -> old path of a directory moved out
        self._error_window = 0.0
        self._errors_in_window = 0

    def _configure(self) -> None:
        spec = self.spec
        # IN_IGNORED always reaches the processor, whatever the mask (as with pyinotify).
        self.deliver_mask = (spec.mask & EVENT_BITS) | IN_UNMOUNT | IN_IGNORED
        kmask = (spec.mask & KERNEL_BITS) | ROOT_BITS
        if self.tree:
            kmask |= TREE_BITS
        self.kernel_mask = kmask
        self.root = spec.path
        self.excludes = spec.excludes
        log = self.daemon.event_log if spec.event_log else None
        # The event log's list of rows (None: not logged), and the watch's part of each row's key.
        self.log_rows = log.incoming if log is not None else None
        self.log_key = log.tail_key(spec.watch_id, spec.label) if log is not None else 0

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"<ActiveWatch {self.spec.key} {self.root!r} {self.state}>"

    # -- set-up ------------------------------------------------------------------

    def start(self, table: WatchTable, synthesize: bool = False) -> None:
        """Add the kernel watches; set the state to active, missing or error.

        With ``synthesize`` (a root that was missing and is back), what is already
        in it is delivered as IN_CREATE (and IN_CLOSE_WRITE for files when the mask
        asks for it): files written before the watch was back are not lost.
        """
        if self.spec.error or self.processor is None:
            self.set_state(ERROR, self.spec.error or self.message)
            return
        root = self.root
        try:
            fd = open_root(root, self.spec.mask)
        except OSError as exc:
            self._failed(exc, root)
            return
        try:
            self._attach_root(table, fd, synthesize)
        finally:
            os.close(fd)

    def _failed(self, exc: OSError, path: str, needed: int = 1) -> None:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            self.set_state(MISSING, f"{path!r} does not exist (yet); watched once it appears")
        else:
            retry = Retry.NO_SPACE if exc.errno == errno.ENOSPC else Retry.NO
            self.set_state(ERROR, watch_error_message(exc, path, needed), retry)

    def _attach_root(self, table: WatchTable, fd: int, synthesize: bool) -> None:
        root = self.root
        real = real_path(fd)
        if real is None:
            self.set_state(MISSING, f"{root!r} does not exist (yet); watched once it appears")
            return
        fence = self.spec.fence
        if fence is not None and not is_within(real, fence):
            # Checked on the opened directory, at every (re)attach: a root deleted and
            # re-created as a link to elsewhere is refused, not watched through the link.
            self.set_state(
                ERROR,
                f"{root!r} is really {real!r}, outside INOTIFIER_ALLOWED_ROOTS "
                f"({', '.join(fence)}); not watched (checked again at every poll)",
                Retry.OUTSIDE,
            )
            return
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        self.root_real = real
        self.root_is_dir = is_dir
        try:
            table.attach(self, root, fd, self.kernel_mask | (IN_ONLYDIR if is_dir else 0))
        except OSError as exc:
            needed = self._count_dirs([root]) if exc.errno == errno.ENOSPC and self.spec.recursive else 1
            self._failed(exc, root, needed)
            return
        if is_dir and (self.spec.recursive or synthesize):
            failure = self.add_tree(table, fd, root, synthesize, descend=self.spec.recursive)
            if failure:
                self._tree_failure(failure)
                return
        self.set_state(ACTIVE, "")

    def _tree_failure(self, failure: str) -> None:
        """Out of watches: error. A subdirectory that cannot be read is skipped, said so on the watch."""
        if failure.startswith(NO_SPACE_PREFIX):
            self.set_state(ERROR, failure, Retry.NO_SPACE)
        else:
            self.set_state(ACTIVE, failure)

    def expected_real(self, path: str) -> str:
        """Return where ``path`` (below the root, as this watch names it) really must be."""
        return (self.root_real or self.root) + path[len(self.root) :]

    def open_verified(self, path: str) -> int:
        """Open a directory this watch holds, checked to be the one it watches (see ``open_subdir``)."""
        if path == self.root:
            fd = open_root(path, self.spec.mask)
            if real_path(fd) != self.root_real:
                os.close(fd)
                raise Replaced(errno.ELOOP, "moved or replaced", path)
            return fd
        return open_subdir(path, self.expected_real(path))

    def add_tree(
        self, table: WatchTable, top_fd: int, top: str, synthesize: bool, descend: bool = True
    ) -> str:
        """Watch every directory below ``top`` (open as ``top_fd``, watched itself); return an error or "".

        Each directory is opened relative to its parent's descriptor, never
        following a link, and watched through that descriptor: a directory
        swapped for a link while the walk runs is skipped, not followed, so
        the tree never leads out of itself. With ``synthesize``, every entry
        found is delivered as IN_CREATE (IN_CLOSE_WRITE too for files when the
        mask asks for it), as they may have been written before their
        directory's watch existed. Without ``descend``, only ``top`` is listed.
        """
        excludes = self.excludes
        progress = self.daemon.progress
        started = time.monotonic()
        paths = self.paths
        nodes = table.nodes
        ifd = table.inotify.fd
        kernel_mask = (self.kernel_mask | IN_ONLYDIR) & ~IN_DONT_FOLLOW
        add = raw_add_watch
        opener = os.open
        fstat = os.fstat
        close = os.close
        scandir = os.scandir
        counts_subdirs: dict[int, bool] = {}  # st_dev -> does st_nlink count subdirectories?
        failure = ""
        added = 0
        try:
            first = list(scandir(top_fd))
        except OSError as exc:
            return self._walk_problem(exc, top)
        # One open descriptor per level of the current branch: (fd, path, entries left, owned).
        stack = [(top_fd, top, iter(first), False)]
        # The hot loop of a large recursive set-up (50 000 directories, bench target 6):
        # the common case (a directory nobody watches yet) is inlined, the rest goes through
        # table.attach; a leaf directory (st_nlink == 2) is never listed.
        try:
            while stack:
                pfd, ppath, entries, _owned = stack[-1]
                pwd = paths.get(ppath, -1)
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if not is_dir and not synthesize:
                        continue
                    name = entry.name
                    path = ppath + "/" + name
                    if excludes and is_excluded(path, excludes):
                        continue
                    if synthesize:
                        self._synthesize(pwd, entry, is_dir, ppath, path)
                    if not is_dir or not descend or path in paths:
                        continue
                    try:
                        cfd = opener(name, O_SUBDIR, dir_fd=pfd)
                    except OSError as exc:
                        # Gone, or swapped for a link since it was listed: never followed.
                        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                            failure = failure or self._walk_problem(exc, path)
                        continue
                    wd = add(ifd, fd_path(cfd), kernel_mask)
                    if wd >= 0 and wd not in nodes:
                        node = nodes[wd] = Node(wd)
                        node.owners[self] = path
                        paths[path] = wd
                    elif wd >= 0 and self in nodes[wd].owners:
                        close(cfd)  # the same directory again (a bind mount loop): once is enough
                        continue
                    else:
                        try:
                            if wd < 0:
                                err = ctypes.get_errno()
                                raise OSError(err, os.strerror(err), path)
                            table.attach(self, path, cfd, kernel_mask)  # shared with another watch
                        except OSError as exc:
                            close(cfd)
                            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                                continue  # gone already
                            if exc.errno == errno.ENOSPC:
                                message = watch_error_message(
                                    exc, path, needed=max(1, self._count_dirs([top]) - added)
                                )
                                logger.error("%s", message)
                                return message
                            failure = failure or self._walk_problem(exc, path)
                            continue
                    added += 1
                    if not added % 10000:
                        progress(self, added, started=started)
                    if not synthesize:
                        st = fstat(cfd)
                        if st.st_nlink == 2:
                            dev = st.st_dev
                            known = counts_subdirs.get(dev)
                            if known is None:
                                known = counts_subdirs[dev] = fs_type(cfd) in NLINK_COUNTS_SUBDIRS
                            if known:
                                close(cfd)  # a leaf: no subdirectory to watch
                                continue
                    if len(stack) >= MAX_DEPTH:
                        close(cfd)
                        failure = failure or self._walk_problem(
                            OSError(errno.EMLINK, f"deeper than {MAX_DEPTH} levels: not followed"), path
                        )
                        continue
                    try:
                        children = list(scandir(cfd))
                    except OSError as exc:
                        close(cfd)
                        failure = failure or self._walk_problem(exc, path)
                        continue
                    stack.append((cfd, path, iter(children), True))
                    break
                else:
                    stack.pop()
                    if _owned:
                        close(pfd)
        finally:
            for fd, _path, _entries, owned in stack:
                if owned:
                    close(fd)
        if added >= 10000:
            progress(self, added, done=True, started=started)
        return failure

    @staticmethod
    def _walk_problem(exc: OSError, path: str) -> str:
        """Log a directory of a tree that could not be watched; return the sentence."""
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return ""
        message = watch_error_message(exc, path)
        logger.warning("%s", message)
        return message

    def _synthesize(self, wd: int, entry: os.DirEntry[str], is_dir: bool, path: str, pathname: str) -> None:
        """Deliver what a new watch found already there: IN_CREATE, and IN_CLOSE_WRITE if asked for."""
        self.deliver(wd, IN_CREATE | (IN_ISDIR if is_dir else 0), 0, entry.name, path, pathname, True)
        if not is_dir and self.spec.mask & IN_CLOSE_WRITE:
            try:
                is_file = entry.is_file(follow_symlinks=False)
            except OSError:
                is_file = False
            if is_file:
                self.deliver(wd, IN_CLOSE_WRITE, 0, entry.name, path, pathname, True)

    @staticmethod
    def _count_dirs(tops: list[str]) -> int:
        count = 0
        for top in tops:
            for _dirpath, dirnames, _files in os.walk(top):
                count += len(dirnames) + 1
        return count

    def rescan(self, table: WatchTable) -> str:
        """Watch what appeared in the tree while events were lost (queue overflow); return an error."""
        for path in list(self.paths):
            try:
                fd = self.open_verified(path)
            except OSError:
                continue  # gone or replaced: its own events say so
            try:
                failure = self.add_tree(table, fd, path, synthesize=True)
            finally:
                os.close(fd)
            if failure.startswith(NO_SPACE_PREFIX):
                return failure
        return ""

    def stop(self, table: WatchTable) -> None:
        """Remove every kernel watch of this watch."""
        table.detach_all(self)

    def set_state(self, state: str, message: str = "", retry: Retry = Retry.NO) -> None:
        """Record the watch's state; log each change to error or missing once, with its reason."""
        previous = self.state
        self.retry = retry
        if state == previous and message == self.message:
            return
        label = self.spec.label
        if state == ERROR:
            logger.error("watch %s (%s): %s", label, self.spec.key, message)
        elif state == MISSING and previous != MISSING:
            logger.warning("watch %s (%s): %s", label, self.spec.key, message)
        elif state == ACTIVE and previous != ACTIVE:
            if previous:  # back from missing or error: worth a line of its own
                logger.info("watching %s (%s) again", label, self.spec.key)
            else:  # a new healthy watch: counted in the reconcile summary
                logger.debug("watching %s (%s)", label, self.spec.key)
        self.state = state
        self.message = message
        self.dirty = True

    # -- events ------------------------------------------------------------------

    def handle(self, table: WatchTable, wd: int, path: str, mask: int, cookie: int, name: str) -> None:
        """Process one kernel event of a wd this watch owns."""
        if name:
            pathname = path + "/" + name
        else:
            pathname = path
        if self.tree and mask & (IN_ISDIR | IN_DELETE_SELF | IN_MOVE_SELF):
            self._follow_tree(table, wd, path, mask, cookie, pathname)
        elif path == self.root and mask & ROOT_BITS and not name:
            self._root_gone(table, mask)
        if mask & self.deliver_mask:
            self.deliver(wd, mask, cookie, name, path, pathname)

    def deliver(
        self,
        wd: int,
        mask: int,
        cookie: int,
        name: str,
        path: str,
        pathname: str,
        synthetic: bool = False,
    ) -> None:
        """Build the event and hand it to the processor (and the event log)."""
        if self.excludes and is_excluded(pathname, self.excludes):
            return
        event = make_event(wd, mask, cookie, name, path, pathname)
        if synthetic:
            event.synthetic = True
        src = ""
        if mask & IN_MOVED_FROM:
            moves = self._moves
            moves[cookie] = pathname
            if len(moves) > 1000:
                del moves[next(iter(moves))]
        elif mask & IN_MOVED_TO:
            moved = self._moves.pop(cookie, None)
            if moved is not None:
                event.src_pathname = src = moved
        elif mask & SELF_BITS:
            # The kernel sets no IN_ISDIR on an event about the watched inode itself;
            # pyinotify takes it from the watch: every wd below the root is a directory.
            event.dir = path != self.root or self.root_is_dir
        now = time.time()
        self.last_event = now
        self.events += 1
        self.dirty = True
        rows = self.log_rows
        if rows is not None:
            # EventLogWriter.offer, inlined and without the bound check (poke enforces
            # it once per tick): this runs for every logged event.
            rows += (pathname, now, self.log_key | mask, src)
        try:
            self.processor(event)  # type: ignore[misc]
        except Exception as exc:
            self._processor_failed(event, now, exc)

    def _processor_failed(self, event: Any, now: float, exc: Exception) -> None:
        self.errors += 1
        self.daemon.errors += 1
        # Full tracebacks for the first errors of each minute, then a count, so a
        # receiver that fails on every event of a flood cannot drown the log.
        if now - self._error_window > 60:
            if self._errors_in_window > 10:
                logger.error(
                    "watch %s: %d more processor errors in the last minute (tracebacks skipped)",
                    self.spec.label, self._errors_in_window - 10,
                )
            self._error_window = now
            self._errors_in_window = 0
        self._errors_in_window += 1
        if self._errors_in_window <= 10:
            logger.error(
                "processor %s raised on %s %r (watch %s); the daemon goes on",
                self.spec.processor, getattr(event, "maskname", "?"),
                getattr(event, "pathname", "?"), self.spec.label,
                exc_info=exc,
            )

    def _root_gone(self, table: WatchTable, mask: int) -> None:
        what = "deleted" if mask & IN_DELETE_SELF else "moved away"
        if mask & IN_DELETE_SELF:
            # The kernel drops the root's wd itself and says so with IN_IGNORED, which
            # the processor gets (as with pyinotify): keep the root's node until then.
            root_wd = self.paths.get(self.root)
            for wd in list(self.paths.values()):
                if wd != root_wd:
                    table.detach(self, wd)
        else:
            table.detach_all(self)
        self.root_real = None
        self.set_state(MISSING, f"{self.root!r} was {what}; watched again once it reappears")
        self.daemon.check_missing_soon()

    def _follow_tree(
        self, table: WatchTable, wd: int, path: str, mask: int, cookie: int, pathname: str
    ) -> None:
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if path == self.root and pathname == path:
                self._root_gone(table, mask)
            return
        if not mask & IN_ISDIR:
            return
        if mask & IN_MOVED_FROM:
            self._dir_moves[cookie] = pathname
            self.daemon.pending_dir_moves.add(self)
            return
        if not mask & (IN_CREATE | IN_MOVED_TO) or not self.spec.auto_add:
            return
        if self.excludes and is_excluded(pathname, self.excludes):
            return
        old = self._dir_moves.pop(cookie, None) if mask & IN_MOVED_TO else None
        if old is not None:
            self._rename_subtree(table, old, pathname)
            return
        if self.root_real is None:
            return  # the root itself is gone
        try:
            fd = open_subdir(pathname, self.expected_real(pathname))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                logger.warning("%s", watch_error_message(exc, pathname))
            return
        try:
            table.attach(self, pathname, fd, (self.kernel_mask | IN_ONLYDIR) & ~IN_DONT_FOLLOW)
            # Files (and directories) created before the watch existed get an IN_CREATE.
            failure = self.add_tree(table, fd, pathname, synthesize=True)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                logger.warning("%s", watch_error_message(exc, pathname))
            return
        finally:
            os.close(fd)
        if failure:
            self._tree_failure(failure)

    def _rename_subtree(self, table: WatchTable, old: str, new: str) -> None:
        prefix = old + "/"
        for path, wd in list(self.paths.items()):
            if path == old or path.startswith(prefix):
                moved = new + path[len(old) :]
                del self.paths[path]
                self.paths[moved] = wd
                node = table.nodes.get(wd)
                if node is not None and self in node.owners:
                    node.owners[self] = moved

    def settle_dir_moves(self, table: WatchTable) -> None:
        """Drop the watches of directories moved out of the tree (no IN_MOVED_TO followed)."""
        moves, self._dir_moves = self._dir_moves, {}
        for old in moves.values():
            prefix = old + "/"
            for path, wd in list(self.paths.items()):
                if path == old or path.startswith(prefix):
                    table.detach(self, wd)
