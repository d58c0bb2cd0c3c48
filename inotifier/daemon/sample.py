"""The daemon's figures at one moment, as plain data: taken by the loop, read by the exporters.

The loop alone changes its counters; another thread (the metrics server, the
textfile writer) only ever reads a ``Sample`` the loop took, never the live
parts, so it cannot see a dictionary change size under it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple

#: Upper bounds (seconds) of the reconcile duration histogram: a diff of a few rows takes
#: milliseconds, setting up a tree of a million directories takes minutes.
RECONCILE_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class HistogramFigures(NamedTuple):
    """A histogram as Prometheus wants it: cumulative counts per upper bound, sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then +Inf (== observed)
    sum: float
    observed: int


class Durations:
    """Durations in seconds, counted per bucket; written by the loop only, so no lock."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = RECONCILE_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def figures(self) -> HistogramFigures:
        """Return the histogram as it is now."""
        cumulative = []
        total = 0
        for n in self.counts:
            total += n
            cumulative.append(total)
        return HistogramFigures(self.bounds, tuple(cumulative), self.sum, self.count)


class WatchFigures(NamedTuple):
    """One watch's figures: its state, its events by mask (``IN_ISDIR`` kept), its processor errors."""

    key: str
    path: str  # the watch's label, printable (a metric label must be valid UTF-8 text)
    state: str
    events: tuple[tuple[int, int], ...]  # (mask, events delivered with that mask)
    errors: int


class DatabaseFigures(NamedTuple):
    """What the daemon knows of the database: reachable, last heartbeat, versions."""

    up: bool
    heartbeat: float  # time.time() of the last status written; 0.0: none yet
    version: int | None  # the configuration counter as last read (None: never read)
    version_applied: int


class KernelFigures(NamedTuple):
    """Kernel watches held by this daemon, and the limit they count against."""

    watches: int
    limit_name: str  # the sysctl that limits them here
    limit: int | None


class QueueFigures(NamedTuple):
    """The reader's buffer of raw events (bytes) and the events routed but not yet handled."""

    bytes: int
    peak_bytes: int
    limit_bytes: int
    events: int


class LogFigures(NamedTuple):
    """What became of the event log's rows (counters since the start), and those waiting."""

    written: int
    dropped: int
    rejected: int
    lost: int
    pruned: int
    pending: int


@dataclass(frozen=True)
class Family:
    """A metric family some other part adds to the sample (the outbox of issue 13, say).

    ``kind`` is "counter" or "gauge"; a counter's ``name`` has no ``_total`` (added
    when exported); ``samples`` are (label values, value), in the order of ``labels``.
    """

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], float], ...] = ()


@dataclass(frozen=True)
class Sample:
    """Everything the metrics say about the daemon, taken by the loop at one moment."""

    taken: float  # time.time()
    up: bool  # False in the last sample, taken as the daemon stops
    started: float  # time.time() of the start
    database: DatabaseFigures | None  # None: a daemon without a database (tests)
    kernel: KernelFigures
    queue: QueueFigures
    overflows: int
    rescans: int
    reconciles: HistogramFigures
    log: LogFigures | None  # None: the event log is off
    watches: tuple[WatchFigures, ...]
    extra: tuple[Family, ...] = ()
    catchup_events: int = 0  # synthetic events the catch-ups delivered
