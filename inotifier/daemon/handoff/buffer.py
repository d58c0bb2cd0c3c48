"""The outbox's memory: rows the read loop appended, in order, until the writer made them durable."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ...conf import app_settings
from ...escaping import get_logger
from ...handoff import Pending

logger = get_logger("inotifier.daemon.handoff")


def _positive(name: str, value: Any, *, whole: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if ok and whole and int(value) != value:
        ok = False
    if not ok:
        kind = "a positive whole number" if whole else "a positive number"
        raise ImproperlyConfigured(f"{name} must be {kind}, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class OutboxConfig:
    """The outbox's settings, read once when the daemon starts (ImproperlyConfigured naming a bad one)."""

    capacity: int = 100_000
    interval: float = 0.1
    dispatch: bool | None = None
    poll_interval: float = 1.0
    publish_timeout: float = 10.0
    max_attempts: int = 5
    retry_cap: float = 60.0
    max_age: float = 7 * 24 * 3600.0
    max_rows: int = 100_000
    #: Rows per INSERT transaction, and rows the dispatcher claims at once.
    batch: int = 1000
    #: Seconds the writer keeps trying to write what it holds when the daemon stops
    #: (below the 10 s after which ``inotifier_stop`` sends SIGKILL).
    final_flush_seconds: float = 6.0
    #: Seconds between two retention passes, and the longest one.
    prune_interval: float = 60.0
    prune_budget: float = 0.25

    @classmethod
    def from_settings(cls, **overrides: Any) -> OutboxConfig:
        s = app_settings
        dispatch = s.INOTIFIER_OUTBOX_DISPATCH
        if dispatch not in (None, True, False):
            raise ImproperlyConfigured(
                f"INOTIFIER_OUTBOX_DISPATCH must be None, True or False, not {dispatch!r}"
            )
        values: dict[str, Any] = {
            "capacity": int(_positive("INOTIFIER_OUTBOX_BUFFER", s.INOTIFIER_OUTBOX_BUFFER, whole=True)),
            "interval": max(
                0.01, _positive("INOTIFIER_OUTBOX_FLUSH_INTERVAL", s.INOTIFIER_OUTBOX_FLUSH_INTERVAL)
            ),
            "dispatch": dispatch,
            "poll_interval": max(
                0.05, _positive("INOTIFIER_OUTBOX_POLL_INTERVAL", s.INOTIFIER_OUTBOX_POLL_INTERVAL)
            ),
            "publish_timeout": _positive(
                "INOTIFIER_OUTBOX_PUBLISH_TIMEOUT", s.INOTIFIER_OUTBOX_PUBLISH_TIMEOUT
            ),
            "max_attempts": int(
                _positive("INOTIFIER_OUTBOX_MAX_ATTEMPTS", s.INOTIFIER_OUTBOX_MAX_ATTEMPTS, whole=True)
            ),
            "retry_cap": _positive("INOTIFIER_OUTBOX_RETRY_CAP", s.INOTIFIER_OUTBOX_RETRY_CAP),
            "max_age": float(s.INOTIFIER_OUTBOX_MAX_AGE or 0),
            "max_rows": int(s.INOTIFIER_OUTBOX_MAX_ROWS or 0),
        }
        values.update(overrides)
        return cls(**values)


class OutboxBuffer:
    """The rows between the read loop and the writer; a ``handoff.Sink``.

    The loop appends (``append``: a deque append and a counter, no lock); the
    writer takes rows from the head and, once their transaction committed,
    moves ``committed``: every row whose sequence number is below it is
    durable. At ``capacity`` rows not yet durable, ``append`` waits for the
    writer (the loop, hence every watch, pauses; the reader thread keeps
    draining the kernel into the daemon's own queue) rather than drop a row;
    when the daemon is stopping it no longer waits.
    """

    def __init__(
        self,
        capacity: int,
        stopping: Callable[[], bool] = lambda: False,
        on_used: Callable[[], None] = lambda: None,
    ) -> None:
        self.capacity = max(1, int(capacity))
        self.rows: deque[Pending] = deque()
        self.appended = 0  # sequence number of the next row
        self._committed = 0
        self.rejected = 0  # rows the database refused (logged): never durable
        self.lost = 0  # rows still in memory when the writer gave up at stop
        self.wake = threading.Event()  # the writer: a batch waits
        self.room = threading.Event()  # the loop: rows were committed
        self.paused = 0  # times the loop waited for room
        self.peak = 0
        self._wake_every = max(1, min(1000, self.capacity // 4))
        self._stopping = stopping
        self._on_used = on_used

    # -- handoff.Sink --------------------------------------------------------------------

    @property
    def committed(self) -> int:
        return self._committed

    def append(self, row: Pending) -> int:
        waiting = self.appended - self._committed
        if waiting >= self.capacity:
            self._wait_for_room()
        seq = self.appended
        self.rows.append(row)
        self.appended = seq + 1
        if not (waiting + 1) % self._wake_every:
            self.wake.set()
            if waiting + 1 > self.peak:
                self.peak = waiting + 1
        return seq

    def used(self) -> None:
        self._on_used()

    # -- the writer's side ---------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Return the rows accepted and not durable yet."""
        return self.appended - self._committed

    def take(self, limit: int) -> list[Pending]:
        """Take up to ``limit`` rows from the head (the writer; ``put_back`` if they fail)."""
        rows = self.rows
        n = min(limit, len(rows))
        return [rows.popleft() for _ in range(n)]

    def put_back(self, batch: list[Pending]) -> None:
        """Return rows whose write failed to the head, in order."""
        self.rows.extendleft(reversed(batch))

    def settled(self, n: int, rejected: int = 0) -> None:
        """Count ``n`` rows from the head as done with (committed, or ``rejected``)."""
        self._committed += n
        self.rejected += rejected
        self.room.set()

    def _wait_for_room(self) -> None:
        self.paused += 1
        started = time.monotonic()
        logger.warning(
            "outbox: %d rows wait for the database (INOTIFIER_OUTBOX_BUFFER = %d); "
            "event delivery paused until they are written",
            self.appended - self._committed,
            self.capacity,
        )
        self.wake.set()
        while self.appended - self._committed >= self.capacity:
            if self._stopping():
                return  # stopping: keep the row in memory, the final flush tries to write it
            self.room.clear()
            self.room.wait(0.25)
        logger.warning("outbox: event delivery resumed after %.1f s", time.monotonic() - started)
