"""The sampler: the daemon's counters copied, in the loop, into a ``Sample`` other threads may read."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from ..escaping import printable
from .budget import WatchBudget
from .dbguard import DatabaseGuard
from .eventlog import EventLog
from .reader import Reader
from .sample import (
    DatabaseFigures,
    Durations,
    Family,
    KernelFigures,
    LogFigures,
    QueueFigures,
    Sample,
    WatchFigures,
)
from .watches import ActiveWatch
from .watchset import WatchSet


class StatusFigures(Protocol):
    """What the status reporter counts and the metrics show, and its kernel watch budget."""

    started: datetime
    version_applied: int
    overflows: int
    written_at: float
    budget: WatchBudget


class SeenVersion(Protocol):
    """The desired state's last reading of the configuration counter."""

    seen: int | None


class Sampler:
    """Take the daemon's figures as a ``Sample``; check the kernel watches against the limit.

    Runs in the loop, the only thread that changes what it reads: every
    mapping is copied here, so the metrics server's thread reads plain tuples.
    ``reconciles`` is where the loop counts how long each reconcile took.
    """

    def __init__(
        self,
        watches: WatchSet,
        reader: Reader,
        status: StatusFigures,
        desired: SeenVersion,
        guard: DatabaseGuard | None,
        log: EventLog | None,
    ) -> None:
        self.watches = watches
        self.reader = reader
        self.status = status
        self.desired = desired
        self.guard = guard
        self.log = log
        self.budget = status.budget
        self.reconciles = Durations()
        self._labels: dict[str, str] = {}  # a watch's label -> its printable form
        self._previous: dict[ActiveWatch, tuple[tuple[Any, ...], WatchFigures]] = {}

    def check(self) -> bool:
        """Read the kernel's limit, warn once past 90 % of it; True while past it."""
        return self.budget.check(self.watches.kernel_watches())

    def take(self, up: bool = True, extra: tuple[Family, ...] = ()) -> Sample:
        """Return the figures as they are now (``up`` False: the last sample, at the stop)."""
        status = self.status
        reader = self.reader
        guard = self.guard
        database = None
        if guard is not None:
            database = DatabaseFigures(
                not guard.down, status.written_at, self.desired.seen, status.version_applied
            )
        return Sample(
            taken=time.time(),
            up=up,
            started=status.started.timestamp(),
            database=database,
            kernel=KernelFigures(self.watches.kernel_watches(), self.budget.name, self.budget.limit),
            queue=QueueFigures(reader.buffered, reader.peak, reader.max_bytes, self.watches.queued),
            overflows=status.overflows,
            rescans=self.watches.rescans + self.watches.catchup.done,
            reconciles=self.reconciles.figures(),
            log=self._log_figures(),
            watches=self._watch_figures(),
            extra=extra + self._held(),
            catchup_events=self.watches.catchup.delivered,
        )

    def _held(self) -> tuple[Family, ...]:
        """Return the gauge of the paths each settled watch holds (none without such a watch)."""
        held = tuple(
            ((w.spec.label, key), float(len(w.hold)))
            for key, w in self.watches.watches.items()
            if w.hold is not None
        )
        if not held:
            return ()
        doc = "Paths whose events a settled watch holds until they are quiet."
        return (Family("inotifier_settle_held_paths", "gauge", doc, ("path", "watch"), held),)

    def _watch_figures(self) -> tuple[WatchFigures, ...]:
        labels = self._labels
        if len(labels) > 2 * len(self.watches.watches) + 100:
            labels.clear()  # labels of watches long gone
        previous = self._previous
        current: dict[ActiveWatch, tuple[tuple[Any, ...], WatchFigures]] = {}
        for key, watch in self.watches.watches.items():
            # Unchanged since the last sample (no event, no error, same state and spec):
            # its figures are reused rather than copied again.
            mark = (watch.spec, watch.events, watch.errors, watch.state)  # counts only grow
            kept = previous.get(watch)
            if kept is not None and kept[0] == mark:
                current[watch] = kept
                continue
            label = watch.spec.label
            shown = labels.get(label)
            if shown is None:
                # A metric label is UTF-8 text: a name with undecodable bytes or control
                # characters is shown as the commands show it.
                shown = labels[label] = printable(label)
            figures = WatchFigures(key, shown, watch.state, tuple(watch.counts.items()), watch.errors)
            current[watch] = (mark, figures)
        self._previous = current
        return tuple(figures for _mark, figures in current.values())

    def _log_figures(self) -> LogFigures | None:
        if self.log is None:
            return None
        buffer = self.log.buffer
        tally = buffer.tally
        return LogFigures(
            tally.written, buffer.dropped, tally.rejected, tally.lost, tally.pruned, max(0, buffer.pending)
        )
