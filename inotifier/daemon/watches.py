"""The actual set of watches: kernel watch descriptors shared between ActiveWatch objects.

One inotify instance serves every watch. The kernel gives one descriptor (wd)
per inode, so two watches on the same directory share it: a ``Node`` holds the
owners of one wd and the kernel mask is the union of theirs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pyinotify

from ..escaping import get_logger
from ..masks import BITS, EVENT_BITS, VALID_BITS, event_maskname
from ..specs import WatchSpec, is_excluded
from .inotify import Inotify, raw_add_watch, read_sysctl

logger = get_logger("inotifier.daemon")

IN_ISDIR = BITS["IN_ISDIR"]
IN_CREATE = BITS["IN_CREATE"]
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

ACTIVE = "active"
MISSING = "missing"
ERROR = "error"


class InotifierEvent(pyinotify.Event):
    """A pyinotify Event built without pyinotify's per-event costs.

    It has every attribute pyinotify's Event has (wd, mask, maskname, cookie,
    path, name, pathname, dir and, for paired moves, src_pathname).
    """

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
            f"out of inotify watches while watching {path!r}: the sysctl {name} "
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
    return f"cannot watch {path!r}: {exc.strerror or exc}"


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

    def attach(self, watch: ActiveWatch, path: str) -> int:
        """Watch ``path`` for ``watch``; return the wd. Raise OSError from the kernel."""
        wd = self.inotify.add_watch(path, watch.kernel_mask)
        node = self.nodes.get(wd)
        if node is None:
            node = self.nodes[wd] = Node(wd)
        elif watch not in node.owners and node.owners:
            # The inode is already watched for someone else: the add above replaced
            # the kernel mask, so set the union again.
            node.owners[watch] = path
            self.inotify.add_watch(path, node.kernel_mask())
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
        path = next(iter(node.owners.values()))
        try:
            self.inotify.add_watch(path, node.kernel_mask())
        except OSError as exc:
            logger.warning("updating the mask of %r failed: %s", path, exc)

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
        self.state = ERROR if spec.error else MISSING
        self.message = spec.error
        self.events = 0
        self.errors = 0
        self.last_event: float | None = None
        self.dirty = True  # status row needs writing
        self.tree = spec.recursive or spec.auto_add
        self._configure()
        self._moves: dict[int, str] = {}  # cookie -> src pathname of a move in progress
        self._dir_moves: dict[int, str] = {}  # cookie -> old path of a directory moved out
        self._error_window = 0.0
        self._errors_in_window = 0

    def _configure(self) -> None:
        spec = self.spec
        self.deliver_mask = (spec.mask & EVENT_BITS) | IN_UNMOUNT
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

    def start(self, table: WatchTable) -> None:
        """Add the kernel watches; set the state to active, missing or error."""
        if self.spec.error or self.processor is None:
            self.set_state(ERROR, self.spec.error or self.message)
            return
        root = self.root
        if not os.path.lexists(root):
            self.set_state(MISSING, f"{root!r} does not exist (yet); watched once it appears")
            return
        try:
            table.attach(self, root)
        except OSError as exc:
            state = MISSING if exc.errno in (errno.ENOENT, errno.ENOTDIR) else ERROR
            needed = 1
            if exc.errno == errno.ENOSPC and self.spec.recursive:
                needed = self._count_dirs([root])
            self.set_state(state, watch_error_message(exc, root, needed))
            return
        if self.spec.recursive and os.path.isdir(root):
            failure = self.add_tree(table, root, synthesize=False)
            if failure:
                # Out of watches: error. A subdirectory that cannot be read is
                # skipped, and said so on the active watch.
                self.set_state(ERROR if failure.startswith("out of") else ACTIVE, failure)
                return
        self.set_state(ACTIVE, "")

    def add_tree(self, table: WatchTable, top: str, synthesize: bool) -> str:
        """Watch every directory under ``top`` (already watched itself); return an error or "".

        With ``synthesize``, send IN_CREATE for every entry found, as the files
        may have been written before their directory's watch existed.
        """
        stack = [top]
        excludes = self.excludes
        progress = self.daemon.progress
        started = time.monotonic()
        paths = self.paths
        nodes = table.nodes
        fd = table.inotify.fd
        kernel_mask = self.kernel_mask
        add = raw_add_watch
        scandir = os.scandir
        failure = ""
        added = 0
        # The hot loop of a large recursive set-up (50 000 directories): the common
        # case (a directory nobody watches yet) is inlined, the rest goes through
        # table.attach.
        while stack:
            current = stack.pop()
            try:
                entries = list(scandir(current))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    message = watch_error_message(exc, current)
                    logger.warning("%s", message)
                    failure = failure or message
                continue
            cwd = paths.get(current, -1)
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if not is_dir and not synthesize:
                    continue
                path = entry.path
                if excludes and is_excluded(path, excludes):
                    continue
                if synthesize:
                    self.deliver(
                        cwd, IN_CREATE | (IN_ISDIR if is_dir else 0), 0, entry.name, current, path
                    )
                if not is_dir or path in paths:
                    continue
                wd = add(fd, path.encode("utf-8", "surrogateescape"), kernel_mask)
                if wd >= 0 and wd not in nodes:
                    node = nodes[wd] = Node(wd)
                    node.owners[self] = path
                    paths[path] = wd
                else:
                    try:
                        if wd < 0:
                            err = ctypes.get_errno()
                            raise OSError(err, os.strerror(err), path)
                        table.attach(self, path)  # shared with another watch
                    except OSError as exc:
                        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                            continue  # gone already
                        message = watch_error_message(
                            exc, path, needed=self._count_dirs(stack) + 1
                        )
                        if exc.errno == errno.ENOSPC:
                            logger.error("%s", message)
                            return message
                        logger.warning("%s", message)
                        failure = failure or message
                        continue
                added += 1
                if not added % 10000:
                    progress(self, added, started=started)
                stack.append(path)
        if added >= 10000:
            progress(self, added, done=True, started=started)
        return failure

    @staticmethod
    def _count_dirs(stack: list[str]) -> int:
        count = 0
        for top in stack:
            for _dirpath, dirnames, _files in os.walk(top):
                count += len(dirnames) + 1
        return count

    def stop(self, table: WatchTable) -> None:
        """Remove every kernel watch of this watch."""
        table.detach_all(self)

    def set_state(self, state: str, message: str = "") -> None:
        if state != self.state or message != self.message:
            if state == ERROR:
                logger.error("watch %s (%s): %s", self.spec.label, self.spec.key, message)
            elif state == MISSING and self.state != MISSING:
                logger.warning("watch %s (%s): %s", self.spec.label, self.spec.key, message)
            elif state == ACTIVE and self.state != ACTIVE:
                logger.info("watching %s (%s)", self.spec.label, self.spec.key)
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

    def deliver(self, wd: int, mask: int, cookie: int, name: str, path: str, pathname: str) -> None:
        """Build the event and hand it to the processor (and the event log)."""
        if self.excludes and is_excluded(pathname, self.excludes):
            return
        event = make_event(wd, mask, cookie, name, path, pathname)
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
        table.detach_all(self)
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
        try:
            table.attach(self, pathname)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                logger.warning("%s", watch_error_message(exc, pathname))
            return
        # Files (and directories) created before the watch existed get an IN_CREATE.
        failure = self.add_tree(table, pathname, synthesize=True)
        if failure:
            self.set_state(ERROR if failure.startswith("out of") else ACTIVE, failure)

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
