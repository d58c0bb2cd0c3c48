"""The event log: a bounded buffer filled by the read loop, written in batches by another process.

One role per module: ``rows`` (the row's layout), ``buffer`` (the bounded
buffer and its tally), ``config`` (``StoreConfig``, built once from the
settings), ``sql`` and ``store`` (writing, outages, bad rows, the row limit),
``feeder`` (the thread that ships rows), ``link`` / ``worker`` / ``protocol``
(the writer process and its pipe). ``EventLog`` puts them together for the
daemon.
"""

from __future__ import annotations

import time
from typing import Any

import pyinotify
from django.db import DEFAULT_DB_ALIAS

from .buffer import RowBuffer, Tally
from .config import StoreConfig
from .feeder import Feeder
from .rows import Flat, Tail

__all__ = ["EventLog", "RowBuffer", "StoreConfig", "Tally"]


class EventLog:
    """The daemon's event log: ``buffer`` (the read loop appends to it) and ``feeder`` (empties it).

    ``incoming`` and ``tail_key`` are what a watch needs to log its events
    (the ``LogSink`` of ``watchparts``); the loop calls ``poke()`` once per
    turn; ``start()`` and ``stop()`` run the feeder, ``stop()`` writing what
    is left first. ``host``, ``interval``, ``prune``, ``using``, ``process``
    and any ``StoreConfig`` field given by name override the settings.
    """

    def __init__(
        self,
        host: str,
        capacity: int | None = None,
        interval: float | None = None,
        *,
        max_bytes: int | None = None,
        using: str = DEFAULT_DB_ALIAS,
        **overrides: Any,
    ) -> None:
        if interval is not None:
            overrides["interval"] = max(0.01, float(interval))
        self.config = StoreConfig.from_settings(host, using, **overrides)
        self.buffer = RowBuffer(capacity, max_bytes)
        self.feeder = Feeder(self.buffer, self.config)

    @property
    def incoming(self) -> Flat:
        """Return the flat list the read loop appends its rows to."""
        return self.buffer.incoming

    def tail_key(self, watch_id: int | None, label: str) -> int:
        """Return the key bits of a watch's rows (see ``RowBuffer.tail_key``)."""
        return self.buffer.tail_key(watch_id, label)

    def offer(self, ts: float, event: pyinotify.Event, tail: Tail) -> bool:
        """Log one event seen at ``ts`` (``time.time()``) for the watch ``tail`` names; False if full.

        Exact about the bound, unlike the read loop's inlined append.
        """
        key = self.buffer.tail_key(*tail) | event.mask
        kept = self.buffer.offer(event.pathname, ts, key, getattr(event, "src_pathname", ""))
        self.poke()
        return kept

    def poke(self) -> None:
        """Keep the bound and wake the feeder when half of it waits (the loop, once per turn)."""
        if self.buffer.poke() and not self.feeder.wake.is_set():
            self.feeder.wake.set()

    def unlogged(self) -> int:
        """Return the rows that are not in the table: dropped, rejected, or lost."""
        return self.buffer.unlogged()

    def start(self) -> None:
        self.feeder.start()

    def flush(self, deadline: float | None = None) -> bool:
        """Write what waits from the calling thread; True when nothing is left (tests, tools)."""
        return self.feeder.store().flush(deadline)

    def stop(self, timeout: float | None = None) -> None:
        """Write what is buffered (retrying for a while during an outage) and stop the feeder.

        Called from the read loop's thread, once it appends no more.
        """
        feeder = self.feeder
        if timeout is None:
            timeout = self.config.final_flush_seconds + 2.0
        self.poke()
        feeder.stopping.set()
        feeder.wake.set()
        if not feeder.is_alive():
            # Never started (or already gone): write from this thread.
            feeder.store().final_flush()
            return
        started = time.monotonic()
        if feeder.finished.wait(timeout):
            feeder.join(1.0)  # ``finished`` is set in run()'s finally: it ends a moment later
        else:
            from ...escaping import get_logger

            get_logger("inotifier.daemon.eventlog").error(
                "event log: the writer did not finish within %.0f s; %d rows not written",
                time.monotonic() - started,
                self.buffer.pending,
            )
