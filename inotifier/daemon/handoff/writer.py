"""The outbox writer: a thread that writes the buffer's rows to the database in batches."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, OperationalError, connections

from ...escaping import get_logger
from ...handoff import Pending
from ..dbguard import Backoff, refresh_connection
from .buffer import OutboxBuffer, OutboxConfig

logger = get_logger("inotifier.daemon.handoff")

#: Errors that mean "the database cannot be reached": the rows wait and are retried.
#: Any other DatabaseError is blamed on the rows (each is then tried alone).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


class OutboxWriter(threading.Thread):
    """Write the rows of an ``OutboxBuffer`` every ``interval`` (sooner when it fills).

    JSON rows are cheap to build, so a thread does it (the event log needs a
    process of its own for its volume): it shares memory with the loop, so a
    commit is seen by ``committed`` at once. While the database is down the
    rows stay in the buffer, in order, and are retried with ``Backoff``; one
    warning per outage. ``on_committed`` is told after each commit (the
    dispatcher wakes).
    """

    def __init__(
        self,
        buffer: OutboxBuffer,
        config: OutboxConfig,
        on_committed: Callable[[], None] = lambda: None,
        write: Callable[[list[Pending]], None] | None = None,
    ) -> None:
        super().__init__(name="inotifier-outbox", daemon=True)
        self.buffer = buffer
        self.config = config
        self.on_committed = on_committed
        self.stopping = threading.Event()
        self.backoff = Backoff(first=min(1.0, config.interval * 10), cap=min(5.0, config.retry_cap))
        self.written = 0
        if write is None:
            from ...outbox import write_rows

            write = write_rows
        self._write = write

    def run(self) -> None:
        buffer = self.buffer
        try:
            while not self.stopping.is_set():
                if self.backoff.since is None:
                    buffer.wake.wait(self.config.interval)
                    buffer.wake.clear()
                else:
                    self.stopping.wait(self.backoff.delay())
                try:
                    self.flush()
                except Exception:
                    logger.exception("outbox: unexpected error in the writer; going on")
                    self.stopping.wait(1.0)
            self.final_flush()
        finally:
            with contextlib.suppress(Exception):
                connections.close_all()

    def stop(self, timeout: float | None = None) -> None:
        """Write what is left (for a while during an outage) and end the thread."""
        self.stopping.set()
        self.buffer.wake.set()
        if self.is_alive():
            self.join(timeout if timeout is not None else self.config.final_flush_seconds + 2.0)
        else:
            self.final_flush()

    def final_flush(self) -> None:
        """Write what is buffered, retrying until ``final_flush_seconds``; count what is left as lost."""
        deadline = time.monotonic() + self.config.final_flush_seconds
        while not self.flush():
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        left = len(self.buffer.rows)
        if left:
            self.buffer.rows.clear()
            self.buffer.lost += left
            self.buffer.settled(left)
            logger.error(
                "outbox: %d rows could not be written before exit (the database is down); "
                "a watch with catch_up finds their files again at the next start",
                left,
            )

    def flush(self) -> bool:
        """Write every buffered row; True when none is left, False at once during an outage."""
        buffer = self.buffer
        while buffer.rows:
            batch = buffer.take(self.config.batch)
            try:
                refresh_connection()
                self._write(batch)
            except OUTAGE_ERRORS as exc:
                buffer.put_back(batch)
                self._outage(exc)
                return False
            except DatabaseError:
                rejected = self._one_by_one(batch)
                if rejected is None:
                    return False
                buffer.settled(len(batch), rejected)
            else:
                buffer.settled(len(batch))
            self.written += len(batch)
            self._recovered()
            self.on_committed()
        return True

    def _one_by_one(self, batch: list[Pending]) -> int | None:
        """Write the rows of a refused batch alone; return how many were refused (None: an outage)."""
        rejected = 0
        for i, row in enumerate(batch):
            try:
                self._write([row])
            except OUTAGE_ERRORS as exc:
                self.buffer.settled(i, rejected)
                self.buffer.put_back(batch[i:])
                self._outage(exc)
                return None
            except DatabaseError as exc:
                rejected += 1
                logger.error("outbox: the database refused the row of %r: %s", row.pathname, exc)
        return rejected

    def _outage(self, exc: BaseException) -> None:
        if self.backoff.since is None:
            logger.warning(
                "outbox: database unavailable (%s); %d rows wait in memory and are retried",
                str(exc).strip(),
                self.buffer.waiting,
            )
        self.backoff.failed()
        with contextlib.suppress(Exception):
            connections.close_all()

    def _recovered(self) -> None:
        lasted = self.backoff.recovered()
        if lasted is not None:
            logger.warning("outbox: database back after %.1f s; the waiting rows are written", lasted)
