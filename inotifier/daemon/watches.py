"""One watch being watched: its kernel watches, its tree as it changes, its events to its processor."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import defaultdict, deque
from typing import Protocol, TypeAlias

from ..escaping import get_logger
from ..masks import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE_SELF,
    IN_ISDIR,
    IN_ONLYDIR,
)
from ..specs import WatchSpec, is_excluded, is_within
from ..states import State
from .events import InotifierEvent, Processor, make_event
from .kernel import Kind, WatchError, open_root, open_subdir, real_path
from .settle import IMMEDIATE_BITS, hold_for, retune
from .table import WatchTable
from .tree import Tree
from .walk import count_dirs, walk_tree
from .watchparts import MOVE_BITS, ROOT_BITS, SELF_BITS, Config, ErrorLog, Health, LogSink, MovePairs

__all__ = ["ActiveWatch", "InotifierEvent", "LogSink", "WatchHost"]

logger = get_logger("inotifier.daemon")

#: The kernel table, as the watches that own its nodes see it.
Table: TypeAlias = "WatchTable[ActiveWatch]"


class WatchHost(Protocol):
    """What a watch asks of the watch set that holds it (never the whole daemon)."""

    def progress(self, watch: ActiveWatch, added: int, started: float, done: bool) -> None: ...

    def root_gone(self, watch: ActiveWatch) -> None: ...

    def dir_moved_out(self, watch: ActiveWatch) -> None: ...

    def processor_failed(self, watch: ActiveWatch) -> None: ...

    def hold_started(self, watch: ActiveWatch) -> None: ...


class ActiveWatch:
    """A WatchSpec being watched: its processor, its wds, its state and its counters."""

    def __init__(
        self,
        spec: WatchSpec,
        processor: Processor | None,
        host: WatchHost,
        log: LogSink | None = None,
        error: str = "",
    ) -> None:
        self.spec = spec
        self.processor = processor
        self.host = host
        self.cfg = Config(spec, log)
        self.health = Health(spec.error or error)
        self.paths: dict[str, int] = {}  # path -> wd, for every kernel watch it holds
        self.queue: deque[tuple[int, str, int, int, str]] = deque()  # routed, not yet handled
        #: Events delivered, by mask (IN_ISDIR kept): ``events`` is their sum, the metrics give
        #: them by type. One ``[mask] += 1`` in place of a plain ``+= 1`` costs about 40 ns
        #: per event (measured: bench/metrics_cost.py).
        self.counts: defaultdict[int, int] = defaultdict(int)
        self.errors = 0
        self.last_event: float | None = None
        self.dirty = True  # its status row needs writing
        #: Where the root really is (symlinks resolved; None: not attached) and whether it is
        #: a directory, as found on the opened inode at the last (re)attach.
        self.where: tuple[str | None, bool] = (None, True)
        self._moves = MovePairs()  # the halves of moves in progress (an IN_MOVED_TO's source)
        self.tree = Tree()  # the directories moved out of its tree, not yet dropped
        self.hold = hold_for(spec)  # settle: events held per path (None: delivered at once)
        self._error_log = ErrorLog()

    def reconfigure(self, spec: WatchSpec, processor: Processor | None, log: LogSink | None) -> None:
        """Take a changed spec that needs no new kernel watches (processor, mask, event log)."""
        self.spec = spec
        self.processor = processor
        self.cfg = Config(spec, log)
        self.hold = retune(self.hold, spec, self.deliver)
        self.dirty = True

    def __repr__(self) -> str:
        return f"<ActiveWatch {self.spec.key} {self.cfg.root!r} {self.state}>"

    @property
    def state(self) -> str:
        return self.health.state

    @property
    def events(self) -> int:
        """Return the events delivered to the processor since the watch was made."""
        return sum(self.counts.values())

    @property
    def message(self) -> str:
        return self.health.message

    @property
    def kernel_mask(self) -> int:
        return self.cfg.kernel_mask

    @property
    def root(self) -> str:
        return self.cfg.root

    # -- set-up ------------------------------------------------------------------

    def start(self, table: Table, synthesize: bool = False) -> None:
        """Add the kernel watches; set the state to active, missing or error.

        With ``synthesize`` (a root that was missing and is back), what is already
        in it is delivered as IN_CREATE (and IN_CLOSE_WRITE for files when the mask
        asks for it): files written before the watch was back are not lost.
        """
        if self.spec.error or self.processor is None:
            self.set_state(State.ERROR, self.spec.error or self.message)
            return
        root = self.root
        try:
            fd = open_root(root, self.spec.mask)
        except WatchError as exc:
            self._failed(exc)
            return
        try:
            self._attach_root(table, fd, synthesize)
        finally:
            os.close(fd)

    def _failed(self, exc: WatchError) -> None:
        if exc.kind is Kind.MISSING:
            self.set_state(State.MISSING, f"{exc.path!r} does not exist (yet); watched once it appears")
        else:
            self.set_state(State.ERROR, exc.message(), exc.kind)

    def _attach_root(self, table: Table, fd: int, synthesize: bool) -> None:
        root = self.root
        real = real_path(fd)
        if real is None:
            self.set_state(State.MISSING, f"{root!r} does not exist (yet); watched once it appears")
            return
        fence = self.spec.fence
        if fence is not None and not is_within(real, fence):
            # Checked on the opened directory, at every (re)attach: a root deleted and
            # re-created as a link to elsewhere is refused, not watched through the link.
            detail = (
                f"is really {real!r}, outside INOTIFIER_ALLOWED_ROOTS ({', '.join(fence)}); "
                "not watched (checked again at every poll)"
            )
            self._failed(WatchError(errno.EPERM, root, Kind.OUTSIDE, detail=detail))
            return
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        self.where = (real, is_dir)
        try:
            table.attach(self, root, fd, self.kernel_mask | (IN_ONLYDIR if is_dir else 0))
        except WatchError as exc:
            if exc.kind is Kind.NO_SPACE and self.spec.recursive:
                exc.needed = count_dirs(root)
            self._failed(exc)
            return
        if is_dir and (self.spec.recursive or synthesize):
            problem = self.walk(table, fd, root, synthesize, descend=self.spec.recursive)
            if problem is not None:
                self.tree_problem(problem)
                return
        self.set_state(State.ACTIVE, "")

    def walk(
        self, table: Table, fd: int, top: str, synthesize: bool, descend: bool = True
    ) -> WatchError | None:
        """Watch the directories below ``top`` (open as ``fd``); ``synthesize``: deliver what is there."""
        cfg = self.cfg
        return walk_tree(
            table,
            self,
            fd,
            top,
            excludes=cfg.excludes,
            kernel_mask=cfg.kernel_mask,
            found=self._synthesize if synthesize else None,
            progress=lambda added, started, done: self.host.progress(self, added, started, done),
            descend=descend,
        )

    def tree_problem(self, problem: WatchError) -> None:
        """Out of watches: error. A subdirectory that cannot be read is skipped, said so on the watch."""
        if problem.kind is Kind.NO_SPACE:
            self._failed(problem)
        else:
            self.set_state(State.ACTIVE, problem.message())

    def expected_real(self, path: str) -> str:
        """Return where ``path`` (below the root, as this watch names it) really must be."""
        return (self.where[0] or self.root) + path[len(self.root) :]

    def open_verified(self, path: str) -> int:
        """Open a directory this watch holds, checked to be the one it watches (see ``open_subdir``)."""
        if path == self.root:
            fd = open_root(path, self.spec.mask)
            if real_path(fd) != self.where[0]:
                os.close(fd)
                raise WatchError(errno.ELOOP, path, Kind.REPLACED)
            return fd
        return open_subdir(path, self.expected_real(path))

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

    def stop(self, table: Table) -> None:
        """Remove every kernel watch of this watch."""
        table.detach_all(self)

    def set_state(self, state: str, message: str = "", retry: Kind | None = None) -> None:
        """Record the watch's state; log each change to error or missing once, with its reason."""
        if self.health.change(self.spec, state, message, retry):
            self.dirty = True

    # -- events ------------------------------------------------------------------

    def handle(self, table: Table, wd: int, path: str, mask: int, cookie: int, name: str) -> None:
        """Process one kernel event of a wd this watch owns."""
        pathname = path + "/" + name if name else path
        cfg = self.cfg
        follow = 0
        if mask & ROOT_BITS:  # a watched directory itself went: only the root's end is handled here
            if not name and path == cfg.root:
                self._root_gone(table, mask)
        elif cfg.tree:
            follow = mask & IN_ISDIR
        if mask & cfg.deliver_mask:
            self.deliver(wd, mask, cookie, name, path, pathname)
        elif self.hold is not None:  # not delivered, but a change: the path is not quiet yet
            self.hold.touch(pathname)
        # After the delivery: what a new directory already holds follows its own IN_CREATE,
        # as pyinotify's auto_add queues it after the event.
        if follow and self.tree.dir_event(self, table, mask, cookie, pathname):
            self.host.dir_moved_out(self)

    def deliver(
        self,
        wd: int,
        mask: int,
        cookie: int,
        name: str,
        path: str,
        pathname: str,
        synthetic: bool = False,
        src: str | None = None,
        count: int = 1,
    ) -> None:
        """Build the event and hand it to the processor (and the event log), or hold it (settle).

        ``src`` None: an event as it comes (excludes, the move's halves paired,
        settle); a string: one the hold hands back, ``count`` events of its type.
        """
        cfg = self.cfg
        if src is None:
            if cfg.excludes and is_excluded(pathname, cfg.excludes):
                return
            src = self._moves.pair(mask, cookie, pathname) if mask & MOVE_BITS else ""
            hold = self.hold
            if hold is not None:  # (one test here, not a call more: bench/metrics_cost.py deliver)
                if not mask & IMMEDIATE_BITS:  # one update of the path's entry (bench/settle.py)
                    if hold.add(pathname, mask, wd, cookie, path, src, synthetic):
                        self.host.hold_started(self)  # the first held: the watch set minds its deadline
                    return
                hold.release_path(pathname, self.deliver)  # what was held for the path goes first
        event = make_event(wd, mask, cookie, name, path, pathname)
        if synthetic:
            event.synthetic = True
        if src:
            event.src_pathname = src
        if count != 1:
            event.count = count
        if mask & SELF_BITS:
            # The kernel sets no IN_ISDIR on an event about the watched inode itself;
            # pyinotify takes it from the watch: every wd below the root is a directory.
            event.dir = path != cfg.root or self.where[1]
        now = time.time()
        self.last_event = now
        self.counts[mask] += 1
        self.dirty = True
        rows = cfg.log_rows
        if rows is not None:
            # The event log's append, inlined and without a bound check (the buffer
            # enforces it once per tick): this runs for every logged event (bench 3a).
            rows += (pathname, now, cfg.log_key | mask, src)
        try:
            self.processor(event)  # type: ignore[misc]
        except Exception as exc:
            self.errors += 1
            self.host.processor_failed(self)
            self._error_log.failed(self.spec, event, now, exc)

    def held_since(self) -> float | None:
        """Return the ``time.time()`` of the oldest event settle holds now (None: none held)."""
        return None if self.hold is None else self.hold.held_since()

    # -- the root going away; the directories moved out of the tree (see tree.Tree) -----------

    def _root_gone(self, table: Table, mask: int) -> None:
        if mask & IN_DELETE_SELF:
            # The kernel drops the root's wd itself and says so with IN_IGNORED, which
            # the processor gets (as with pyinotify): keep the root's node until then.
            table.detach_all(self, keep=self.paths.get(self.root))
            what = "deleted"
        else:
            table.detach_all(self)
            what = "moved away"
        self.where = (None, self.where[1])
        self.set_state(State.MISSING, f"{self.root!r} was {what}; watched again once it reappears")
        self.host.root_gone(self)

    def settle_dir_moves(self, table: Table) -> None:
        """Drop the watches of directories moved out of the tree (no IN_MOVED_TO followed)."""
        self.tree.drop_moved_out(self, table)
