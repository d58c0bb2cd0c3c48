"""The watch set: the active watches by key, the kernel table they share, their event queues."""

from __future__ import annotations

import enum
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..escaping import get_logger
from ..specs import WatchSpec
from ..states import State
from .catchup import CatchUp
from .events import Processor
from .kernel import Inotify, Kind
from .settle import flush, retune
from .table import WatchTable
from .watches import ActiveWatch, LogSink
from .watermarks import Watermarks

logger = get_logger("inotifier.daemon")

#: ``load(spec) -> (processor instance or None, why not)``: see ``DesiredState.processor``.
Loader = Callable[[WatchSpec], tuple[Processor | None, str]]


class UpdateKind(enum.Enum):
    """How a changed spec is applied to its active watch."""

    SWAP = "swap"  # no kernel change: processor, event log, label, settle times (held paths kept)
    REMASK = "remask"  # the same kernel watches with another mask
    REBUILD = "rebuild"  # another tree: a new watch replaces the old one


@dataclass(frozen=True)
class SetHooks:
    """What the watch set tells the rest of the daemon (all optional)."""

    #: (watch, directories added, time.monotonic() at start, done?) during a large set-up.
    progress: Callable[[ActiveWatch, int, float, bool], None] = lambda *args: None
    #: A watch's root went away: check for it again soon.
    root_gone: Callable[[], None] = lambda: None
    #: A watch is no longer held: its status row goes.
    removed: Callable[[ActiveWatch], None] = lambda watch: None


class WatchSet:
    """The active watches, by key, on one inotify instance; add, remove and update them by spec.

    Each watch has its own queue of routed events (``ActiveWatch.queue``);
    ``ready`` lists the watches with queued events in turn order (the
    dispatcher serves them), ``queued`` counts the events waiting.
    """

    def __init__(
        self,
        inotify: Inotify,
        load: Loader,
        log: LogSink | None = None,
        hooks: SetHooks | None = None,
        marks: Watermarks | None = None,
    ) -> None:
        self.table: WatchTable[ActiveWatch] = WatchTable(inotify)
        self.watches: dict[str, ActiveWatch] = {}
        self.ready: deque[ActiveWatch] = deque()
        self.queued = 0
        self.errors = 0  # processor errors of every watch since the daemon started
        #: Scans of the watched trees for what the kernel could not report (the overflow rescan
        #: below; a catch-up scan at start or re-arm counts here too): inotifier_rescans_total.
        self.rescans = 0
        self.moved_out: set[ActiveWatch] = set()  # watches with directories moved out, to settle
        #: Settled watches holding events, in turn order (a dict used as an ordered set).
        self.holding: dict[ActiveWatch, None] = {}
        self._load = load
        self._log = log
        self._hooks = hooks or SetHooks()
        #: The catch-up scans (``catch_up``), with the watermarks they start from.
        self.catchup = CatchUp(marks or Watermarks("", None))

    # -- by spec ------------------------------------------------------------------------

    def specs(self) -> dict[str, WatchSpec]:
        """Return the spec of every active watch, by key."""
        return {key: watch.spec for key, watch in self.watches.items()}

    def add(self, spec: WatchSpec) -> ActiveWatch:
        """Watch ``spec`` (its processor loaded first); the watch reports its own state."""
        watch = self._make(spec)
        self.watches[spec.key] = watch
        watch.start(self.table)
        self.catchup.arm(watch)
        return watch

    def remove(self, key: str) -> None:
        """Stop watching ``key``; its queued events are dropped, its held events delivered.

        Held events of an exclusive watch are dropped (and said so): it may be
        removed because another daemon holds it now.
        """
        watch = self.watches.pop(key)
        self._drop_queue(watch)
        self._let_go(watch, "stopped watching")
        self.moved_out.discard(watch)
        self.catchup.forget(watch)
        try:
            watch.stop(self.table)
        finally:
            self._hooks.removed(watch)

    def update(self, spec: WatchSpec, kind: UpdateKind) -> None:
        """Apply a changed ``spec`` to its watch as ``kind`` says; no queued event is lost."""
        old = self.watches[spec.key]
        if kind is UpdateKind.REBUILD:
            # Build the new watch before dropping the old one: directories both
            # watch keep their kernel watch (shared node), so nothing is missed.
            new = self._make(spec)
            new.start(self.table)
            old.stop(self.table)
            if new.processor is None:
                self._drop_undeliverable(old, spec)
            self._transfer_queue(old, new)
            self.moved_out.discard(old)
            if old.hold is not None:  # held paths move over too (or are delivered: settle is off)
                new.hold = retune(old.hold, spec, new.deliver)
                self.holding.pop(old, None)
                if new.hold:
                    self.holding[new] = None
            new.counts, new.errors, new.last_event = old.counts, old.errors, old.last_event
            self.watches[spec.key] = new
            self.catchup.forget(old)
            self.catchup.arm(new, "added")  # another tree: caught up as a new one
            return
        processor = old.processor
        error = ""
        if spec.processor != old.spec.processor or processor is None:
            processor, error = self._load(spec)
        if processor is None:
            self._unusable(old, spec, error)
            return
        turned_on = spec.catch_up != old.spec.catch_up
        if turned_on:
            self.catchup.forget(old)
        old.reconfigure(spec, processor, self._log)
        if not old.hold:
            self.holding.pop(old, None)
        if kind is UpdateKind.REMASK:
            self.table.remask(old)
        if turned_on:
            self.catchup.arm(old, "added")

    def _unusable(self, watch: ActiveWatch, spec: WatchSpec, error: str) -> None:
        """Stop a watch whose new processor cannot be used: what it read and did not deliver is dropped.

        Handed to no processor, never to ``None``: the events routed to it and the
        paths settle held for it are dropped, with a WARNING that counts them.
        """
        self._drop_undeliverable(watch, spec)
        watch.reconfigure(spec, None, self._log)
        watch.stop(self.table)
        watch.set_state(State.ERROR, error or "unusable processor")

    def _drop_undeliverable(self, watch: ActiveWatch, spec: WatchSpec) -> None:
        dropped = len(watch.queue) + (len(watch.hold) if watch.hold else 0)
        self._drop_queue(watch)
        self.holding.pop(watch, None)
        watch.hold = None
        self.catchup.forget(watch)
        if dropped:
            logger.warning(
                "watch %s (%s): %d events read but not delivered: its processor cannot be used",
                spec.label,
                spec.key,
                dropped,
            )

    def _make(self, spec: WatchSpec) -> ActiveWatch:
        processor, error = (None, "") if spec.error else self._load(spec)
        return ActiveWatch(spec, processor, self, self._log, error)

    # -- what the loop asks for ----------------------------------------------------------

    def check_missing(self) -> None:
        """Start watches whose path was missing and now exists, delivering what is already in it.

        A watch refused because its root led outside INOTIFIER_ALLOWED_ROOTS is
        checked again too: the link may have been replaced by the real directory.
        """
        for watch in self.watches.values():
            health = watch.health
            waiting = health.state == State.MISSING or (
                health.state == State.ERROR and health.retry is Kind.OUTSIDE
            )
            if waiting and os.path.lexists(watch.root):
                before = watch.events
                watch.start(self.table, synthesize=True)
                if watch.state == State.ACTIVE:
                    self.catchup.reappeared(watch, watch.events - before)

    def retry_failed(self) -> None:
        """Try again the watches that ran out of kernel watches (some may have been freed)."""
        for watch in self.watches.values():
            if watch.health.retry is Kind.NO_SPACE and watch.processor is not None:
                watch.stop(self.table)
                watch.start(self.table)
                if watch.state == State.ACTIVE:
                    self.catchup.arm(watch, "added")  # watched at last: what it missed meanwhile

    def rescan(self) -> None:
        """Find what changed while events were lost (overflow).

        Every directory a tree watch holds is listed again: new directories are
        watched, and what is found is delivered; a watch with ``catch_up`` gets
        a catch-up scan from its watermark instead.
        """
        self.rescans += 1
        for watch in list(self.watches.values()):
            if watch.state == State.ACTIVE and watch.spec.catch_up:
                self._rewatch(watch, synthesize=False)  # the catch-up delivers what changed
                self.catchup.arm(watch, "overflow")
            elif watch.state == State.ACTIVE and watch.spec.auto_add:
                self._rewatch(watch, synthesize=True)

    def _rewatch(self, watch: ActiveWatch, synthesize: bool) -> None:
        """List again every directory a tree watch holds: new directories are watched."""
        if watch.spec.auto_add:
            for path in list(watch.paths):
                try:
                    fd = watch.open_verified(path)
                except OSError:
                    continue  # gone or replaced: its own events say so
                try:
                    problem = watch.walk(self.table, fd, path, synthesize=synthesize)
                finally:
                    os.close(fd)
                if problem is not None and problem.kind is Kind.NO_SPACE:
                    watch.tree_problem(problem)
                    break

    def settle_moves(self) -> None:
        """Drop directories moved out of their tree (no IN_MOVED_TO came for them)."""
        for watch in self.moved_out:
            watch.settle_dir_moves(self.table)
        self.moved_out.clear()

    # -- settle: the watches holding events ---------------------------------------------

    def next_due(self) -> float:
        """Return the ``time.monotonic()`` at which a held path is due (inf: none held)."""
        return min((w.hold.next_due() for w in self.holding if w.hold is not None), default=math.inf)

    def release(self, until: float, turn: float) -> int:
        """Deliver the due held paths, each watch a turn of at most ``turn`` s; return the events."""
        holding = self.holding
        delivered = 0
        for watch in list(holding):
            hold = watch.hold
            now = time.monotonic()
            if now >= until:
                break
            if hold is not None:
                delivered += hold.release(watch.deliver, min(until, now + turn))
            del holding[watch]
            if hold:
                holding[watch] = None  # still holding: its next turn comes after the others'
        return delivered

    def flush_holds(self, why: str = "the daemon stops") -> int:
        """Deliver every held event of every watch (a clean stop loses nothing); return how many."""
        delivered = 0
        for watch in list(self.holding):
            delivered += flush(watch.hold, watch.deliver, watch.spec, why)
        self.holding.clear()
        return delivered

    def _let_go(self, watch: ActiveWatch, why: str) -> None:
        self.holding.pop(watch, None)
        hold, watch.hold = watch.hold, None
        if not hold:
            return
        if not watch.spec.exclusive:
            flush(hold, watch.deliver, watch.spec, why)
            return
        logger.warning(
            "watch %s (%s): %s; %d held paths dropped (an exclusive watch: another daemon may hold it"
            " now; catch_up finds them again)",
            watch.spec.label,
            watch.spec.key,
            why,
            len(hold),
        )

    def kernel_watches(self) -> int:
        """Return the kernel watches held (one per inode, however many watches share it)."""
        return len(self.table.nodes)

    def counts(self) -> dict[str, int]:
        """Return how many watches are in each state."""
        counts = dict.fromkeys(State.values, 0)
        for watch in self.watches.values():
            counts[watch.state] = counts.get(watch.state, 0) + 1
        return counts

    # -- WatchHost: what a watch asks of its set -------------------------------------------

    def progress(self, watch: ActiveWatch, added: int, started: float, done: bool) -> None:
        self._hooks.progress(watch, added, started, done)

    def root_gone(self, watch: ActiveWatch) -> None:
        self._hooks.root_gone()

    def dir_moved_out(self, watch: ActiveWatch) -> None:
        self.moved_out.add(watch)

    def processor_failed(self, watch: ActiveWatch) -> None:
        self.errors += 1

    def hold_started(self, watch: ActiveWatch) -> None:
        self.holding[watch] = None

    # -- queues ----------------------------------------------------------------------------

    def _drop_queue(self, watch: ActiveWatch) -> None:
        self.queued -= len(watch.queue)
        watch.queue.clear()
        if watch in self.ready:
            self.ready.remove(watch)

    def _transfer_queue(self, old: ActiveWatch, new: ActiveWatch) -> None:
        """Hand the queued events of a rebuilt watch to its replacement (nothing is lost)."""
        if not old.queue:
            return
        new.queue.extend(old.queue)
        old.queue.clear()
        for i, watch in enumerate(self.ready):
            if watch is old:
                self.ready[i] = new
                break
        else:
            self.ready.append(new)
