"""The event log's store: rows written in batches, outages waited out, bad rows isolated, limits kept."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connections,
    transaction,
)

from ...escaping import get_logger
from ..dbguard import Backoff
from .buffer import Tally
from .config import StoreConfig
from .rows import Row
from .sql import insert_rows, row_values

logger = get_logger("inotifier.daemon.eventlog")

#: Errors that mean "the database cannot be reached (or is not ready)": the rows wait.
#: Any other error is blamed on the rows themselves (see ``EventLogStore._store``).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, ProgrammingError)


class EventLogStore:
    """Write rows to the database: batches, outage retries, rejected rows, retention.

    One thread uses it: the writer process's, or the daemon's feeder thread
    when there is no writer process. Rows wait in ``rows`` until written. An
    unreachable database keeps the rows and retries with backoff; rows the
    database rejects are isolated, logged and counted, so one bad row cannot
    hold the others back. The row limit is kept by each write (``_trim``);
    the age limit, and any large excess, a little at a time between batches.
    What happens to the rows is counted in ``tally``; ``refill`` (when given)
    is asked for more rows before each write (the daemon's buffer).
    """

    def __init__(
        self,
        config: StoreConfig,
        tally: Tally | None = None,
        refill: Callable[[], list[Row]] | None = None,
    ) -> None:
        self.config = config
        self.tally = tally if tally is not None else Tally()
        self.refill = refill
        self.rows: deque[Row] = deque()
        self.backoff = Backoff(first=config.interval, cap=config.retry_cap)
        #: Rows in the whole table (all hosts) as far as this writer knows; None: not counted yet.
        self.table_rows: int | None = None
        self._next_count = 0.0
        self._next_prune = time.monotonic() + config.first_prune_delay
        self._prune_running = 0
        self._last_db_use = 0.0

    def loop(
        self,
        wake: threading.Event,
        stop: threading.Event,
        after_cycle: Callable[[], None] | None = None,
    ) -> None:
        """Write, prune and report until ``stop`` is set, then write what is left.

        Rows are written every ``interval`` seconds, or as soon as ``wake`` is
        set; while the database is unreachable, retries back off (``wake`` does
        not hurry them).
        """
        last = time.monotonic()
        try:
            while not stop.is_set():
                if self.backoff.since is None:
                    timeout = self.config.interval - (time.monotonic() - last)
                    if timeout > 0:
                        wake.wait(timeout)
                else:
                    stop.wait(self.backoff.delay())
                wake.clear()
                last = time.monotonic()
                try:
                    self._cycle()
                except Exception:
                    # Never die: a dead writer would silently turn into drops.
                    logger.exception("event log: unexpected error in the writer; going on")
                    stop.wait(1.0)
                if after_cycle is not None:
                    after_cycle()
            self.final_flush()
        except Exception:
            logger.exception("event log: unexpected error while stopping the writer")
        finally:
            with contextlib.suppress(Exception):
                connections.close_all()

    def _cycle(self) -> None:
        self.flush(deadline=time.monotonic() + self.config.drain_slice)
        if self.config.prune and self.backoff.since is None and time.monotonic() >= self._next_prune:
            self._prune()
        if not self.rows:
            self._close_if_idle()

    def _refresh_connection(self) -> None:
        """Drop this thread's connection if an error left it unusable.

        The connection is kept between flushes (reconnecting four times a second
        would cost more than the inserts) and closed after ``idle_close_seconds``
        without rows. Never inside an atomic block: a test may call ``flush``
        from its own thread, inside the test's transaction.
        """
        connection = connections[self.config.using]
        if (
            connection.connection is not None
            and not connection.in_atomic_block
            and connection.errors_occurred
            and not connection.is_usable()
        ):
            connection.close()

    def _close_if_idle(self) -> None:
        connection = connections[self.config.using]
        if (
            connection.connection is not None
            and not connection.in_atomic_block
            and time.monotonic() - self._last_db_use >= self.config.idle_close_seconds
        ):
            with contextlib.suppress(Exception):
                connection.close()

    def _prune(self) -> None:
        from ...models import EventLog

        config = self.config
        now = time.monotonic()
        self._next_prune = now + config.prune_interval
        try:
            self._refresh_connection()
            self._last_db_use = now
            deleted, done = EventLog.objects.using(config.using).prune(
                config.max_age, config.max_rows, config.prune_batch, now + config.prune_budget
            )
        except (DatabaseError, InterfaceError) as exc:
            with contextlib.suppress(Exception):
                connections[config.using].close()
            logger.warning("event log: pruning failed, retried in %.0f s: %s", config.prune_interval, exc)
            return
        self.tally.add(pruned=deleted)
        self._prune_running += deleted
        if self.table_rows is not None:
            self.table_rows = max(0, self.table_rows - deleted)
        if not done:
            self._next_prune = now  # go on at the next cycle, after the new rows
        elif self._prune_running:
            logger.info("event log: pruned %d old rows", self._prune_running)
            self._prune_running = 0

    def flush(self, deadline: float | None = None) -> bool:
        """Write the rows until none is left or ``deadline`` passes; True when empty.

        Returns False at once when the database is unavailable (the rows stay).
        """
        rows = self.rows
        if self.refill is not None:
            while more := self.refill():
                rows.extend(more)
        while rows:
            n = min(self.config.batch_size, len(rows))
            batch = [rows.popleft() for _ in range(n)]
            leftover = self._store(batch)
            if leftover:
                # Back at the front, in order: nothing accepted is lost.
                rows.extendleft(reversed(leftover))
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return not rows
        return True

    def final_flush(self) -> None:
        """Write what is left, retrying for ``final_flush_seconds``; count the rest as lost."""
        seconds = self.config.final_flush_seconds
        deadline = time.monotonic() + seconds
        while not self.flush(deadline) and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        left = len(self.rows)
        if left:
            self.rows.clear()
            self.tally.add(lost=left)
            logger.error(
                "event log: %d buffered rows could not be written before exit "
                "(database unavailable for %.0f s)",
                left,
                seconds,
            )

    def _store(self, batch: list[Row]) -> list[Row]:
        """Write ``batch``; return the rows still to write (non-empty only on an outage).

        When the database rejects the batch for another reason, write halves of
        it until the offending rows are alone; those are logged and counted.
        """
        todo = [batch]
        while todo:
            chunk = todo.pop()
            error = self._write(chunk)
            if error is None:
                continue
            if isinstance(error, OUTAGE_ERRORS):
                return [row for part in (*todo, chunk) for row in part]
            if len(chunk) == 1:
                self._reject(chunk[0], error)
            else:
                mid = len(chunk) // 2
                todo.append(chunk[mid:])
                todo.append(chunk[:mid])
        return []

    def _reject(self, row: Row, error: BaseException) -> None:
        self.tally.add(rejected=1)
        logger.error(
            "event log: row rejected by the database and dropped (%s: %s): %s %r",
            type(error).__name__,
            error,
            row[4],
            row[1],
        )

    def _write(self, batch: list[Row]) -> BaseException | None:
        """Insert ``batch`` in one transaction, keeping the row limit; return the error (None: written)."""
        from ...models import EventLog

        config = self.config
        connection = connections[config.using]
        try:
            values = row_values(batch, config.host, connection)
        except Exception as exc:  # a row we cannot even build
            return exc
        for attempt in (1, 2):
            reused = connection.connection is not None
            self._last_db_use = time.monotonic()
            try:
                self._refresh_connection()
                with transaction.atomic(using=config.using):
                    insert_rows(connection, EventLog, values, config.batch_size)
                    table_rows, trimmed = self._trim(EventLog, len(values))
            except OUTAGE_ERRORS as exc:
                if not connection.in_atomic_block:
                    with contextlib.suppress(Exception):
                        connection.close()
                if attempt == 1 and reused and self.backoff.since is None:
                    continue  # a connection the server dropped while idle: one retry, at once
                return self._outage(exc, len(self.rows) + len(values))
            except Exception as exc:
                return exc
            break
        lasted = self.backoff.recovered()
        if lasted is not None:
            logger.warning(
                "event log: database back after %.1f s; writing %d waiting rows",
                lasted,
                len(self.rows) + len(values),
            )
        self.tally.add(written=len(values), pruned=trimmed)
        if table_rows is not None:
            self.table_rows = table_rows
        return None

    def _trim(self, model: Any, inserted: int) -> tuple[int | None, int]:
        """Keep the table within the row limit, in the transaction of a write.

        Called right after ``inserted`` rows were inserted, before the commit:
        when the table now holds more than the limit plus ``trim_slack``, delete
        the oldest rows beyond the limit (at most ``trim_backlog`` more than were
        inserted; the budgeted pruning pass takes the rest), in a savepoint: a
        DELETE the database refuses costs the trim, never the rows. Return (rows
        in the table after the commit as far as known, rows deleted); the caller
        keeps them once the commit succeeded.
        """
        config = self.config
        if not config.max_rows:
            return None, 0
        objects = model.objects.using(config.using)
        started = time.monotonic()
        if self.table_rows is None or started >= self._next_count:
            rows = objects.count()  # the rows just inserted included
            self._next_count = started + max(config.recount_interval, 100 * (time.monotonic() - started))
        else:
            rows = self.table_rows + inserted
        excess = rows - config.max_rows
        if excess <= config.max_rows * config.trim_slack:
            return rows, 0
        todo = min(excess, inserted + config.trim_backlog)
        if todo < excess:
            self._next_prune = started
        deleted = 0
        try:
            with transaction.atomic(using=config.using):
                while deleted < todo:
                    n = objects.delete_oldest(min(config.prune_batch, todo - deleted))
                    if not n:
                        self._next_count = 0.0  # fewer rows than counted: count again next time
                        break
                    deleted += n
        except OUTAGE_ERRORS:
            raise  # the whole write is retried
        except DatabaseError as exc:
            logger.warning("event log: deleting rows beyond INOTIFIER_EVENT_LOG_MAX_ROWS failed: %s", exc)
            return rows, 0
        return rows - deleted, deleted

    def _outage(self, exc: BaseException, waiting: int) -> BaseException:
        if self.backoff.since is None:
            logger.warning(
                "event log: database unavailable (%s); %d rows wait and are retried",
                str(exc).strip(),
                waiting,
            )
        self.backoff.failed()
        return exc
