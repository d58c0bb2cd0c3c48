"""What a watch is made of besides its behaviour: the config it derives, its health, its error log."""

from __future__ import annotations

from typing import Protocol

import pyinotify

from ..escaping import get_logger
from ..masks import (
    BITS,
    EVENT_BITS,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    VALID_BITS,
)
from ..specs import WatchSpec
from ..states import State
from .kernel import Kind

logger = get_logger("inotifier.daemon")

#: Events a tree watch needs to follow its subdirectories, whatever the user asked for.
TREE_BITS = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
#: Events every watch needs to notice its own root going away; also the events about a
#: watched inode itself, on which the kernel sets no IN_ISDIR.
ROOT_BITS = SELF_BITS = IN_DELETE_SELF | IN_MOVE_SELF
#: The two halves of a move (paired by cookie).
MOVE_BITS = IN_MOVED_FROM | IN_MOVED_TO
#: Asked of the kernel for a settled watch whatever its mask: every change to a path (not
#: the reads) starts its quiet period again; what the mask lacks is not delivered.
SETTLE_BITS = BITS["IN_MODIFY"] | BITS["IN_ATTRIB"] | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | MOVE_BITS
#: Bits the kernel accepts in inotify_add_watch (the rest it sets on its own).
KERNEL_BITS = VALID_BITS & ~(IN_IGNORED | IN_Q_OVERFLOW | IN_UNMOUNT)
#: Processor errors of one watch logged with their traceback per minute (then counted).
TRACEBACKS_PER_MINUTE = 10


class LogSink(Protocol):
    """The event log's side the read loop appends to (``eventlog`` rows, flat)."""

    @property
    def incoming(self) -> list[str | float | int]: ...

    def tail_key(self, watch_id: int | None, label: str) -> int: ...


class Config:
    """What a watch derives from its spec, kept in one place the hot path reads from."""

    __slots__ = ("deliver_mask", "excludes", "kernel_mask", "log_key", "log_rows", "root", "tree")

    def __init__(self, spec: WatchSpec, log: LogSink | None) -> None:
        self.root = spec.path
        self.excludes = spec.excludes
        self.tree = spec.recursive or spec.auto_add
        # IN_IGNORED always reaches the processor, whatever the mask (as with pyinotify).
        self.deliver_mask = (spec.mask & EVENT_BITS) | IN_UNMOUNT | IN_IGNORED
        kernel_mask = (spec.mask & KERNEL_BITS) | ROOT_BITS | (SETTLE_BITS if spec.settle else 0)
        self.kernel_mask = kernel_mask | TREE_BITS if self.tree else kernel_mask
        # The event log's list of rows (None: not logged), and the watch's part of each row's key.
        self.log_rows: list[str | float | int] | None = None
        self.log_key = 0
        if log is not None and spec.event_log:
            self.log_rows = log.incoming
            self.log_key = log.tail_key(spec.watch_id, spec.label)


class MovePairs:
    """The IN_MOVED_FROM halves seen, by cookie: an IN_MOVED_TO gets its ``src_pathname``."""

    __slots__ = ("sources",)

    def __init__(self) -> None:
        self.sources: dict[int, str] = {}  # cookie -> src pathname of a move in progress

    def pair(self, mask: int, cookie: int, pathname: str) -> str:
        """Return the source of an IN_MOVED_TO ("" when unseen); remember an IN_MOVED_FROM's."""
        sources = self.sources
        if mask & IN_MOVED_FROM:
            sources[cookie] = pathname
            if len(sources) > 1000:
                del sources[next(iter(sources))]
            return ""
        return sources.pop(cookie, "")


class Health:
    """A watch's state as reported: active, missing or error, why, and whether it is retried."""

    __slots__ = ("message", "retry", "state")

    def __init__(self, message: str) -> None:
        self.state = ""  # none yet: the first change always says what it became
        self.message = message
        #: Kind.NO_SPACE (tried again at each forced resync), Kind.OUTSIDE (at each poll), None.
        self.retry: Kind | None = None

    def change(self, spec: WatchSpec, state: str, message: str, retry: Kind | None) -> bool:
        """Record a state; log each change to error or missing once, with its reason; True if changed."""
        previous = self.state
        self.retry = retry
        if state == previous and message == self.message:
            return False
        label, key = spec.label, spec.key
        if state == State.ERROR:
            logger.error("watch %s (%s): %s", label, key, message)
        elif state == State.MISSING and previous != State.MISSING:
            logger.warning("watch %s (%s): %s", label, key, message)
        elif state == State.ACTIVE and previous != State.ACTIVE:
            if previous:  # back from missing or error: worth a line of its own
                logger.info("watching %s (%s) again", label, key)
            else:  # a new healthy watch: counted in the reconcile summary
                logger.debug("watching %s (%s)", label, key)
        self.state = state
        self.message = message
        return True


class ErrorLog:
    """Log a watch's processor errors: full tracebacks for the first of each minute, then a count.

    A receiver that fails on every event of a flood cannot drown the log.
    """

    __slots__ = ("in_window", "window")

    def __init__(self) -> None:
        self.window = 0.0  # start of the current minute
        self.in_window = 0

    def failed(self, spec: WatchSpec, event: pyinotify.Event, now: float, exc: Exception) -> None:
        if now - self.window > 60:
            if self.in_window > TRACEBACKS_PER_MINUTE:
                logger.error(
                    "watch %s: %d more processor errors in the last minute (tracebacks skipped)",
                    spec.label,
                    self.in_window - TRACEBACKS_PER_MINUTE,
                )
            self.window = now
            self.in_window = 0
        self.in_window += 1
        if self.in_window <= TRACEBACKS_PER_MINUTE:
            logger.error(
                "processor %s raised on %s %r (watch %s); the daemon goes on",
                spec.processor,
                getattr(event, "maskname", "?"),
                getattr(event, "pathname", "?"),
                spec.label,
                exc_info=exc,
            )
