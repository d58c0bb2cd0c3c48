"""The dispatcher: raw chunks from the reader routed to each watch's queue, served in fair turns."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..masks import IN_IGNORED, IN_Q_OVERFLOW
from .kernel import parse
from .reader import Reader
from .watchset import WatchSet

#: Longest turn one watch gets before the next watch with events is served.
TURN_SECONDS = 0.005
#: Raw chunks are parsed only while fewer events than this wait in the watch queues,
#: so memory stays bounded by the reader's byte limit.
ROUTE_LOW_WATER = 20_000
#: Bytes of raw events routed at once (about 2 000 events): joined chunks keep the
#: per-chunk overhead off the per-event cost (bench: drain).
ROUTE_BYTES = 64 * 1024


class Dispatcher:
    """Route the reader's raw chunks into the watch queues and run the watches' turns.

    A slow processor delays its own watch, not the others: the watches with
    events take turns of at most TURN_SECONDS. Order within a watch is kept.
    Settled watches' due paths are delivered after the turns, in turns too.
    ``on_overflow`` is called when the kernel says its queue overflowed.
    """

    def __init__(self, reader: Reader, watches: WatchSet, on_overflow: Callable[[], None]) -> None:
        self.reader = reader
        self.watches = watches
        self.on_overflow = on_overflow

    def has_work(self) -> bool:
        """Return True when events wait, read or routed."""
        return bool(self.reader.chunks or self.watches.ready or self.watches.catchup.scans)

    def process(self, deadline: float) -> int:
        """Process buffered events until there are none or ``deadline`` passes; return how many."""
        reader = self.reader
        watches = self.watches
        count = 0
        catchup = watches.catchup
        while True:
            chunk = reader.take_many(ROUTE_BYTES) if watches.queued < ROUTE_LOW_WATER else None
            if chunk is not None:
                self._route(chunk)
            elif not watches.ready:
                break
            if watches.ready:
                count += self._run_turns(deadline)
            if time.monotonic() >= deadline:
                break
        if watches.holding:
            # Due held paths get at least a turn per call, however busy the queues: a flood
            # cannot make them pile up; a million due paths are delivered a turn at a time.
            count += watches.release(max(deadline, time.monotonic() + TURN_SECONDS), TURN_SECONDS)
        drained = time.time()
        if not reader.chunks and not watches.ready:
            # Every event read until now was handed to its processor: a watermark candidate.
            stopped = reader.stopped_at
            catchup.marks.drained(drained if stopped is None else min(drained, stopped))
        if catchup.scans and reader.stopped_at is None:
            # Live events first; a scan still gets a turn when they use up the slice.
            catchup.step(max(deadline, time.monotonic() + TURN_SECONDS))
        elif not catchup.started:
            catchup.started = True  # the start's watches are in place: later adds are "added"
        return count

    def drain(self, deadline: float) -> None:
        """At a stop: process what was read (until ``deadline``), then deliver everything held."""
        self.process(deadline)
        self.watches.flush_holds()

    def _route(self, chunk: bytes) -> None:
        table = self.watches.table
        nodes = table.nodes
        ready = self.watches.ready
        queued = 0
        for wd, mask, cookie, name in parse(chunk):
            node = nodes.get(wd)
            if node is None:
                if mask & IN_Q_OVERFLOW:
                    self.on_overflow()
                continue
            for watch, path in node.owners.items():
                queue = watch.queue
                if not queue:
                    ready.append(watch)
                queue.append((wd, path, mask, cookie, name))
                queued += 1
            if mask & IN_IGNORED:
                # The kernel dropped this wd (directory deleted or unmounted).
                table.forget(wd)
        self.watches.queued += queued

    def _run_turns(self, deadline: float) -> int:
        ready = self.watches.ready
        table = self.watches.table
        monotonic = time.monotonic
        handled_total = 0
        for _ in range(len(ready)):
            if not ready:
                break
            watch = ready.popleft()
            queue = watch.queue
            handle = watch.handle
            turn_end = min(deadline, monotonic() + TURN_SECONDS)
            handled = 0
            while queue:
                wd, path, mask, cookie, name = queue.popleft()
                handle(table, wd, path, mask, cookie, name)
                handled += 1
                if monotonic() >= turn_end:
                    break
            handled_total += handled
            if queue:
                ready.append(watch)
        self.watches.queued -= handled_total
        return handled_total
