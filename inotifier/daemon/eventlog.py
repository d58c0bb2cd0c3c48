"""The event log: a bounded buffer filled by the read loop, written in batches by a thread."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connections,
    transaction,
)
from django.utils import timezone

from ..conf import app_settings

logger = logging.getLogger("inotifier.daemon.eventlog")

#: Rows per transaction (split into statements as the backend's parameter limit needs).
BATCH_SIZE = 2000
#: Rows deleted per DELETE when pruning, so no statement holds locks for long.
PRUNE_BATCH = 1000
#: Seconds between two retention passes of the daemon (the first one runs soon after start).
PRUNE_INTERVAL = 60.0
#: Seconds after start before the first retention pass.
FIRST_PRUNE_DELAY = 1.0
#: Longest stretch of pruning per writer cycle; an unfinished pass goes on next cycle,
#: so a big backlog of old rows never keeps new rows waiting for long.
PRUNE_BUDGET = 0.25
#: Longest stretch of writing per cycle before drops are reported and pruning is considered.
DRAIN_SLICE = 1.0
#: Seconds between two warnings about dropped rows while rows keep being dropped.
DROP_REPORT_INTERVAL = 5.0
#: Seconds the writer keeps trying to write what is buffered when the daemon stops.
#: Below the 10 s after which ``inotifier_stop`` sends SIGKILL.
FINAL_FLUSH_SECONDS = 8.0
#: Seconds without rows after which the writer closes its database connection.
IDLE_CLOSE_SECONDS = 10.0
#: Errors that mean "the database cannot be reached (or is not ready)": the rows wait.
#: Any other error is blamed on the rows themselves (see ``EventLogWriter._store``).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, ProgrammingError)

Row = tuple[float, str, str, int, str, bool, "int | None", str]


def prune_step(
    max_age: float | None = None,
    max_rows: int | None = None,
    batch: int = PRUNE_BATCH,
    deadline: float | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> tuple[int, bool]:
    """Delete old EventLog rows, oldest first, ``batch`` rows per DELETE; return (deleted, done).

    Rows older than ``max_age`` seconds go, then every row beyond the newest
    ``max_rows`` (None: the settings; 0: no limit). Each DELETE is its own short
    statement (no long lock). When ``deadline`` (a ``time.monotonic()`` value)
    passes, stop after the current batch and return ``done=False``.
    """
    from ..models import EventLog

    if max_age is None:
        max_age = float(app_settings.INOTIFIER_EVENT_LOG_MAX_AGE or 0)
    if max_rows is None:
        max_rows = int(app_settings.INOTIFIER_EVENT_LOG_MAX_ROWS or 0)
    batch = max(1, int(batch))
    objects = EventLog.objects.using(using)
    deleted = 0

    def delete_oldest(qs: Any) -> int:
        ids = list(qs.order_by("timestamp", "id").values_list("pk", flat=True)[:batch])
        if ids:
            objects.filter(pk__in=ids).delete()
        return len(ids)

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if max_age and max_age > 0:
        cutoff = timezone.now() - timedelta(seconds=max_age)
        while True:
            n = delete_oldest(objects.filter(timestamp__lt=cutoff))
            deleted += n
            if n < batch:
                break
            if out_of_time():
                return deleted, False
    if max_rows and max_rows > 0:
        # The newest row beyond the first max_rows: it and everything older goes.
        first_gone = list(
            objects.order_by("-timestamp", "-id").values_list("timestamp", "id")[max_rows : max_rows + 1]
        )
        if first_gone:
            ts, pk = first_gone[0]
            older = objects.filter(timestamp__lte=ts).exclude(timestamp=ts, id__gt=pk)
            while True:
                n = delete_oldest(older)
                deleted += n
                if n < batch:
                    break
                if out_of_time():
                    return deleted, False
    return deleted, True


def prune_events(
    max_age: float | None = None,
    max_rows: int | None = None,
    batch: int = PRUNE_BATCH,
    using: str = DEFAULT_DB_ALIAS,
) -> int:
    """Delete EventLog rows older than ``max_age`` s and beyond ``max_rows``; return the count.

    None means the setting (INOTIFIER_EVENT_LOG_MAX_AGE / _MAX_ROWS), 0 no limit.
    Deletes in batches of ``batch`` rows, each its own short statement.
    """
    return prune_step(max_age, max_rows, batch, None, using)[0]


#: EventLog columns written by the writer, in the order of its value tuples.
INSERT_FIELDS = (
    "timestamp", "pathname", "src_pathname", "escaped", "mask", "maskname", "is_dir",
    "watch", "watch_label", "host",
)


def _insert(connection: Any, model: Any, values: list[tuple[Any, ...]]) -> None:
    """INSERT ``values`` as multi-row statements: the SQL bulk_create emits, without models.

    The writer shares the GIL with the read loop; building one model instance
    per row (and bulk_create's per-field preparation) cost the loop a third of
    its rate with the log on. Values are already adapted for the database.
    """
    opts = model._meta
    fields = [opts.get_field(name) for name in INSERT_FIELDS]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw = cursor.cursor
            if hasattr(raw, "copy"):  # psycopg 3: COPY is several times cheaper than INSERT
                sql = f"COPY {quote(opts.db_table)} ({columns}) FROM STDIN"
                # Through Django's debug cursor when queries are being logged, so
                # CaptureQueriesContext and connection.queries see the statement.
                debug = getattr(cursor, "debug_sql", None)
                logged = debug(sql) if debug is not None else contextlib.nullcontext()
                # wrap_database_errors: driver errors become Django's (an outage is
                # an OperationalError, as from cursor.execute).
                with logged, connection.wrap_database_errors, raw.copy(sql) as copy:
                    for row in values:
                        copy.write_row(row)
                return
    per_statement = max(1, min(BATCH_SIZE, connection.ops.bulk_batch_size(fields, values)))
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start : start + per_statement]
            sql = f"INSERT INTO {quote(opts.db_table)} ({columns}) VALUES " + ", ".join(
                [row_sql] * len(chunk)
            )
            cursor.execute(sql, [value for row in chunk for value in row])


def _time_formatter(connection: Any) -> Any:
    """Return ``f(ts) -> value`` for the timestamp column of ``connection``.

    With USE_TZ on SQLite (connection time zone UTC) or PostgreSQL, the text is
    built from a per-second prefix cache (rows of a batch share their second):
    Django's datetime adaptation costs several microseconds per row, paid on
    the GIL the read loop needs. It writes what Django writes
    (``YYYY-MM-DD HH:MM:SS[.ffffff]``, ``+00:00`` on PostgreSQL).
    """
    postgres = connection.vendor == "postgresql"
    fast = settings.USE_TZ and (
        postgres or (connection.vendor == "sqlite" and connection.timezone_name == "UTC")
    )
    if not fast:
        adapt = connection.ops.adapt_datetimefield_value
        if settings.USE_TZ:
            return lambda ts: adapt(datetime.fromtimestamp(ts, UTC))
        return lambda ts: adapt(datetime.fromtimestamp(ts))
    suffix = "+00:00" if postgres else ""
    prefixes: dict[int, str] = {}

    def when(ts: float) -> str:
        second = int(ts)
        micro = round((ts - second) * 1_000_000)
        if micro >= 1_000_000:
            second += 1
            micro -= 1_000_000
        prefix = prefixes.get(second)
        if prefix is None:
            if len(prefixes) > 4096:
                prefixes.clear()
            prefix = prefixes[second] = datetime.fromtimestamp(second, UTC).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
        return f"{prefix}.{micro:06d}{suffix}" if micro else prefix + suffix

    return when


def _escape_pair(pathname: str, src: str) -> tuple[str, str, bool]:
    """Return (pathname, src_pathname, escaped) as stored: both escaped or neither.

    ``EventLog.escaped`` covers both columns, so when one name needs escaping
    the other is escaped too (for valid UTF-8 that only doubles backslashes).
    """
    from ..models import escape_path

    path_text, path_escaped = escape_path(pathname)
    src_text, src_escaped = escape_path(src) if src else ("", False)
    if path_escaped != src_escaped and src:
        if not path_escaped:
            path_text = pathname.replace("\\", "\\\\")
        else:
            src_text = src.replace("\\", "\\\\")
    return path_text, src_text, path_escaped or src_escaped


class EventLogWriter(threading.Thread):
    """Buffer EventLog rows and write them in multi-row INSERT batches, off the read loop.

    ``offer`` is called by the read loop and never touches the database: it
    appends a tuple to a deque. At most ``capacity`` rows wait (rows being
    written count as waiting); beyond that new rows are dropped and counted in
    ``dropped``. The thread writes what waits every ``interval`` seconds (sooner
    when the buffer is half full), one transaction per batch of up to
    BATCH_SIZE rows. An unreachable database keeps the rows and retries with
    backoff; rows the database rejects are isolated, logged and counted in
    ``rejected``, so one bad row cannot hold the others back. The thread also
    enforces the retention settings, a little at a time. ``stop`` writes what
    is buffered before returning.

    Counters are each written by one thread only (``accepted``, ``dropped`` by
    the read loop; ``finished``, ``written``, ``rejected``, ``lost`` by the
    writer), so no lock is needed on the hot path.
    """

    def __init__(
        self,
        host: str,
        capacity: int | None = None,
        interval: float | None = None,
        *,
        prune: bool = True,
        using: str = DEFAULT_DB_ALIAS,
    ) -> None:
        super().__init__(name="inotifier-eventlog", daemon=True)
        self.host = host[:255]
        self.capacity = max(1, int(capacity or app_settings.INOTIFIER_EVENT_LOG_BUFFER))
        # A floor, so a zero or negative setting cannot make the thread spin.
        self.interval = max(0.01, float(interval or app_settings.INOTIFIER_EVENT_LOG_FLUSH_INTERVAL))
        self.prune = prune
        self.using = using
        self.rows: deque[Row] = deque()
        self.accepted = 0  # rows taken by offer (read loop)
        self.dropped = 0  # rows refused by offer because the buffer was full (read loop)
        self.finished = 0  # rows written, rejected or lost (writer)
        self.written = 0
        self.rejected = 0
        self.lost = 0
        self.pruned = 0
        self._wake_at = max(1, self.capacity // 2)
        self._wake = threading.Event()
        self._stop_event = threading.Event()
        self._flushed = threading.Event()
        self._outage_since: float | None = None
        self._next_prune = time.monotonic() + FIRST_PRUNE_DELAY
        self._last_db_use = 0.0
        self._prune_running = 0
        self._dropped_reported = 0
        self._next_drop_report = 0.0

    @property
    def pending(self) -> int:
        """Return the number of rows accepted and not yet written (or given up)."""
        return self.accepted - self.finished

    # -- read-loop side -------------------------------------------------------------

    def offer(self, now: float, event: Any, watch: Any) -> None:
        """Queue one row for ``event`` seen at ``now`` (a time.time() value) through ``watch``.

        Called by the read loop for every logged event: no database, no lock.
        """
        spec = watch.spec
        self.push(
            (
                now,
                event.pathname,
                getattr(event, "src_pathname", ""),
                event.mask,
                event.maskname,
                event.dir,
                spec.watch_id,
                spec.label,
            )
        )

    def push(self, row: Row) -> None:
        """Queue one ready-made row (the read loop's fast path; see ``offer``)."""
        pending = self.accepted - self.finished
        if pending >= self.capacity:
            self.dropped += 1
            return
        self.accepted += 1
        self.rows.append(row)
        if pending + 1 == self._wake_at:
            self._wake.set()  # half full: write now rather than at the next tick

    # -- writer thread ----------------------------------------------------------------

    def run(self) -> None:
        """Write, report and prune until stopped, then write what is left."""
        last = time.monotonic()
        try:
            while not self._stop_event.is_set():
                if self._outage_since is None:
                    timeout = self.interval - (time.monotonic() - last)
                else:
                    timeout = self._backoff()
                if timeout > 0:
                    self._wake.wait(timeout)
                self._wake.clear()
                last = time.monotonic()
                try:
                    self._cycle()
                except Exception:
                    # Never die: a dead writer would silently turn into drops.
                    logger.exception("event log: unexpected error in the writer; going on")
                    self._stop_event.wait(1.0)
            self._final_flush()
        except Exception:
            logger.exception("event log: unexpected error while stopping the writer")
        finally:
            with contextlib.suppress(Exception):
                connections.close_all()
            self._flushed.set()

    def _refresh_connection(self) -> None:
        """Drop this thread's connection if an error left it unusable.

        The connection is kept between flushes (CONN_MAX_AGE is about requests;
        reconnecting four times a second would cost more than the inserts) and
        closed after IDLE_CLOSE_SECONDS without rows (see ``_close_if_idle``).
        Never inside an atomic block: a test may call ``flush`` from its own
        thread, inside the test's transaction.
        """
        connection = connections[self.using]
        if (
            connection.connection is not None
            and not connection.in_atomic_block
            and connection.errors_occurred
            and not connection.is_usable()
        ):
            connection.close()

    def _close_if_idle(self) -> None:
        connection = connections[self.using]
        if (
            connection.connection is not None
            and not connection.in_atomic_block
            and time.monotonic() - self._last_db_use >= IDLE_CLOSE_SECONDS
        ):
            with contextlib.suppress(Exception):
                connection.close()

    def _backoff(self) -> float:
        assert self._outage_since is not None
        return min(5.0, max(self.interval, (time.monotonic() - self._outage_since) / 4))

    def _cycle(self) -> None:
        self._report_drops()
        self.flush(deadline=time.monotonic() + DRAIN_SLICE)
        if self.prune and self._outage_since is None and time.monotonic() >= self._next_prune:
            self._prune()
        if not self.rows:
            self._close_if_idle()

    def _prune(self) -> None:
        now = time.monotonic()
        self._next_prune = now + PRUNE_INTERVAL
        try:
            self._refresh_connection()
            self._last_db_use = now
            deleted, done = prune_step(deadline=now + PRUNE_BUDGET, using=self.using)
        except DatabaseError as exc:
            with contextlib.suppress(Exception):
                connections[self.using].close()
            logger.warning("event log: pruning failed, retried in %.0f s: %s", PRUNE_INTERVAL, exc)
            return
        self.pruned += deleted
        self._prune_running += deleted
        if not done:
            self._next_prune = now  # go on at the next cycle, after the new rows
        elif self._prune_running:
            logger.info("event log: pruned %d old rows", self._prune_running)
            self._prune_running = 0

    def _report_drops(self, force: bool = False) -> None:
        dropped = self.dropped
        now = time.monotonic()
        if dropped != self._dropped_reported and (force or now >= self._next_drop_report):
            logger.warning(
                "event log buffer full (INOTIFIER_EVENT_LOG_BUFFER = %d rows): %d rows dropped"
                " (%d in total); raise the setting or check the database",
                self.capacity,
                dropped - self._dropped_reported,
                dropped,
            )
            self._dropped_reported = dropped
            self._next_drop_report = now + DROP_REPORT_INTERVAL

    def flush(self, deadline: float | None = None) -> bool:
        """Write the buffered rows until none is left or ``deadline`` passes; True when empty.

        Returns False at once when the database is unavailable (the rows stay).
        The writer thread calls it; tests may call it directly on a writer that
        was never started.
        """
        rows = self.rows
        while rows:
            n = min(BATCH_SIZE, len(rows))
            batch = [rows.popleft() for _ in range(n)]
            leftover = self._store(batch)
            if leftover:
                # Back at the front, in order: nothing accepted is lost.
                rows.extendleft(reversed(leftover))
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return not rows
        return True

    def _final_flush(self) -> None:
        deadline = time.monotonic() + FINAL_FLUSH_SECONDS
        while not self.flush(deadline) and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        left = len(self.rows)
        if left:
            self.rows.clear()
            self.lost += left
            self.finished += left
            logger.error(
                "event log: %d buffered rows could not be written before exit "
                "(database unavailable for %.0f s)",
                left,
                FINAL_FLUSH_SECONDS,
            )
        self._report_drops(force=True)

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
        self.rejected += 1
        self.finished += 1
        logger.error(
            "event log: row rejected by the database and dropped (%s: %s): %s %r",
            type(error).__name__,
            error,
            row[4],
            row[1],
        )

    def _write(self, batch: list[Row]) -> BaseException | None:
        """Insert ``batch`` in one transaction; return the error, None when written."""
        from ..models import EventLog

        connection = connections[self.using]
        try:
            host = self.host
            when = _time_formatter(connection)
            labels: dict[str, str] = {}
            values: list[tuple[Any, ...]] = []
            append = values.append
            # This loop shares the GIL with the read loop: keep it to a few
            # microseconds per row (ASCII names need no escaping at all).
            for ts, pathname, src, mask, maskname, is_dir, watch_id, label in batch:
                if pathname.isascii() and (not src or src.isascii()):
                    path_text, src_text, escaped = pathname, src, False
                else:
                    path_text, src_text, escaped = _escape_pair(pathname, src)
                label_text = labels.get(label)
                if label_text is None:
                    label_text = labels[label] = _escape_pair(label, "")[0][:4096]
                append(
                    (
                        when(ts),
                        path_text,
                        src_text,
                        escaped,
                        mask,
                        maskname[:64],
                        bool(is_dir),
                        watch_id,
                        label_text,
                        host,
                    )
                )
        except Exception as exc:  # a row we cannot even build
            return exc
        for attempt in (1, 2):
            reused = connection.connection is not None
            self._last_db_use = time.monotonic()
            try:
                self._refresh_connection()
                with transaction.atomic(using=self.using):
                    _insert(connection, EventLog, values)
            except OUTAGE_ERRORS as exc:
                if not connection.in_atomic_block:
                    with contextlib.suppress(Exception):
                        connection.close()
                if attempt == 1 and reused and self._outage_since is None:
                    continue  # a connection the server dropped while idle: one retry, at once
                return self._outage(exc)
            except Exception as exc:
                return exc
            break
        if self._outage_since is not None:
            logger.warning(
                "event log: database back after %.1f s; writing %d waiting rows",
                time.monotonic() - self._outage_since,
                self.pending,
            )
            self._outage_since = None
        self.written += len(values)
        self.finished += len(values)
        return None

    def _outage(self, exc: BaseException) -> BaseException:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "event log: database unavailable (%s); %d rows wait and are retried",
                str(exc).strip(),
                self.pending,
            )
        return exc

    def stop(self, timeout: float = FINAL_FLUSH_SECONDS + 2.0) -> None:
        """Write what is buffered (retrying up to FINAL_FLUSH_SECONDS) and stop the thread."""
        self._stop_event.set()
        self._wake.set()
        if self.is_alive():
            if not self._flushed.wait(timeout):
                logger.error(
                    "event log: the writer did not finish within %.0f s; %d rows not written",
                    timeout,
                    self.pending,
                )
            else:
                # _flushed is set in run()'s finally: the thread ends a moment later.
                self.join(1.0)
        elif self.rows:
            # Never started (or already gone): write from this thread.
            self._final_flush()
