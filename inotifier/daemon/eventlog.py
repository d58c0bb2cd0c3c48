"""The event log: a bounded buffer filled by the read loop, written in batches by another process."""

from __future__ import annotations

import contextlib
import marshal
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
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
from ..escaping import get_logger
from ..masks import BITS, event_maskname

if TYPE_CHECKING:
    from .logworker import WorkerLink

logger = get_logger("inotifier.daemon.eventlog")

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
#: INOTIFIER_EVENT_LOG_MAX_ROWS is kept in step with writing: a write that takes the
#: table beyond the limit by more than this fraction of it also deletes the oldest
#: rows beyond the limit, in the same transaction (see ``EventLogStore._trim``), so
#: nobody ever sees the table above limit + slack, whatever the write rate. The slack
#: spares a trickle of rows a DELETE per flush.
TRIM_SLACK = 0.02
#: Most rows one write's transaction deletes beyond the rows it inserts: a bigger excess
#: (a lowered limit, rows of other hosts found by a count) is left to the budgeted
#: pruning pass (``prune_step``), started at once, so no transaction runs long.
TRIM_BACKLOG = 10_000
#: Seconds between two exact counts of the table while rows are written; between
#: counts the writer adds what it inserts and subtracts what it deletes. The count is
#: what sees other hosts' rows (the row limit counts the whole table), and rows deleted
#: by hand or by ``inotifier_prune_events``. Stretched so counting takes at most
#: 1 % of the time (COUNT(*) reads the whole table on PostgreSQL).
RECOUNT_INTERVAL = 10.0
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

#: Seconds before a writer process that ended (or could not start) is replaced;
#: doubled after each failure in a row, up to MAX_RESTART_DELAY.
WORKER_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
#: Writer processes in a row that end (or fail to start) without confirming a row,
#: after which the daemon writes from its own thread instead.
FALLBACK_AFTER = 3

IN_ISDIR = BITS["IN_ISDIR"]

#: One logged event: (time.time(), pathname, src_pathname or "", mask, maskname, (watch id, label)).
#: The last item is the watch's entry of ``EventLogWriter.tails``, shared by its rows.
Row = tuple[float, str, str, int, str, tuple["int | None", str]]


def delete_oldest(qs: Any, batch: int) -> int:
    """Delete the ``batch`` oldest rows of ``qs`` (by time, then id) in one short DELETE; return the count.

    The one batched delete of the event log's retention: ``prune_step`` and the
    writer's trimming (``EventLogStore._trim``) both go through it.
    """
    ids = list(qs.order_by("timestamp", "id").values_list("pk", flat=True)[:batch])
    if not ids:
        return 0
    rows = qs.model._base_manager.using(qs.db)
    # The id range lets PostgreSQL take the primary key's index: for the id list alone
    # its planner chose a scan of the whole table, 9x slower (10 ms per 1 000 rows of
    # 100 000; measured with EXPLAIN ANALYZE). The oldest rows' ids are close together.
    doomed = rows.filter(pk__range=(min(ids), max(ids))).filter(pk__in=ids)
    # What this statement deleted: another host's writer may have taken some of these first.
    deleted, _per_model = doomed.delete()
    return int(deleted)


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

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if max_age and max_age > 0:
        cutoff = timezone.now() - timedelta(seconds=max_age)
        while True:
            n = delete_oldest(objects.filter(timestamp__lt=cutoff), batch)
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
                n = delete_oldest(older, batch)
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
    from ..escaping import escape_path

    path_text, path_escaped = escape_path(pathname)
    src_text, src_escaped = escape_path(src) if src else ("", False)
    if path_escaped != src_escaped and src:
        if not path_escaped:
            path_text = pathname.replace("\\", "\\\\")
        else:
            src_text = src.replace("\\", "\\\\")
    return path_text, src_text, path_escaped or src_escaped


_MASKNAMES: dict[int, str] = {}


def maskname_of(mask: int) -> str:
    """``event.maskname`` for ``mask`` (cached: a handful of masks make up all events)."""
    name = _MASKNAMES.get(mask)
    if name is None:
        try:
            name = event_maskname(mask)
        except Exception:
            name = f"0x{mask:x}"
        if len(_MASKNAMES) < 4096:
            _MASKNAMES[mask] = name
    return name


#: Items per row in ``EventLogWriter.incoming``: pathname, time, key, src pathname.
ROW_ITEMS = 4
#: Rows per frame sent to the writer process.
FRAME_ROWS = 4000
MASK_BITS = 0xFFFFFFFF

#: Bytes a buffered row costs besides its path strings (``sys.getsizeof`` of the path,
#: and of the source path of a move), measured with tracemalloc on 100 000 rows
#: (see ``tests/test_eventlog.py::test_the_row_size_estimate_matches_what_rows_cost``):
#: 89 B in the read loop's flat list (four list slots, a float, an int), 118 B as a
#: ``Row`` in the writer process's deque (the tuple, a float, an int, a slot). The larger
#: of the two with some room (tracemalloc varies by a byte or two), so the estimate
#: holds in whichever process a row waits.
ROW_OVERHEAD = 128
#: Path size assumed until rows are seen: ``sys.getsizeof`` of a 60-character ASCII path.
INITIAL_PATH_BYTES = 109
#: Newest rows whose path sizes ``poke`` samples at each tick (a few microseconds).
SIZE_SAMPLE_ROWS = 8
#: Weight of a tick's sample in the running mean when paths get shorter (longer paths
#: count at once: the bound errs on the side of memory).
SIZE_SAMPLE_WEIGHT = 0.1
#: ``poke`` samples row sizes only while more than 1/SAMPLE_FROM of the bound is pending
#: (with a nearly empty buffer the estimate does not matter), and once per SAMPLE_EVERY
#: rows: a sample costs about 5 us, and during a burst the loop may turn every few events.
SAMPLE_FROM = 8
SAMPLE_EVERY = 1024


def positive_setting(name: str, value: Any) -> int:
    """Return ``value`` as an int; ImproperlyConfigured naming setting ``name`` unless it is >= 1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 1
    ):
        raise ImproperlyConfigured(f"{name} must be a positive whole number, not {value!r}")
    return int(value)


def buffer_limits(rows: Any = None, max_bytes: Any = None) -> tuple[int | None, int]:
    """Return the buffer's bounds: (row cap or None, bytes), from the arguments or the settings.

    ``rows`` defaults to INOTIFIER_EVENT_LOG_BUFFER (None or 0: no row cap, the
    memory bound only), ``max_bytes`` to INOTIFIER_EVENT_LOG_BUFFER_BYTES.
    Raise ImproperlyConfigured naming the setting when a value is not a
    positive whole number.
    """
    if rows is None:
        rows = app_settings.INOTIFIER_EVENT_LOG_BUFFER
    if max_bytes is None:
        max_bytes = app_settings.INOTIFIER_EVENT_LOG_BUFFER_BYTES
    row_cap = None if rows is None or rows == 0 else positive_setting("INOTIFIER_EVENT_LOG_BUFFER", rows)
    return row_cap, positive_setting("INOTIFIER_EVENT_LOG_BUFFER_BYTES", max_bytes)


def rows_from_flat(flat: list[Any], tails: list[tuple[int | None, str]]) -> list[Row]:
    """Rows from the read loop's flat list (see ``EventLogWriter.incoming``)."""
    if len(flat) % ROW_ITEMS:
        raise ValueError("a row list whose length is not a multiple of ROW_ITEMS")
    rows: list[Row] = []
    append = rows.append
    it = iter(flat)
    for pathname, ts, key, src in zip(it, it, it, it, strict=True):
        mask = key & MASK_BITS
        append((ts, pathname, src, mask, maskname_of(mask), tails[key >> 32]))
    return rows


def pack_rows(flat: list[Any], new_tails: list[tuple[int | None, str]]) -> bytes:
    return marshal.dumps((new_tails, flat))


def unpack_rows(payload: bytes, tails: list[tuple[int | None, str]]) -> list[Row]:
    """Rows of a frame packed by ``pack_rows``; ``tails`` (the receiver's table) is extended first."""
    new_tails, flat = marshal.loads(payload)
    tails.extend(tuple(tail) for tail in new_tails)
    return rows_from_flat(flat, tails)


class EventLogStore:
    """Write buffered rows to the database: batches, outage retries, rejected rows, retention.

    One thread uses it: the writer process's (see ``logworker``), or the
    writer thread of an ``EventLogWriter`` that runs in-process. Rows wait in
    ``rows`` until written. An unreachable database keeps the rows and retries
    with backoff; rows the database rejects are isolated, logged and counted in
    ``rejected``, so one bad row cannot hold the others back. The row limit
    is kept by each write (``_trim``); the age limit, and any large excess,
    a little at a time between batches (``_prune``).
    """

    def __init__(
        self,
        host: str,
        interval: float | None = None,
        *,
        prune: bool = True,
        using: str = DEFAULT_DB_ALIAS,
    ) -> None:
        self.host = host[:255]
        # A floor, so a zero or negative setting cannot make the loop spin.
        self.interval = max(0.01, float(interval or app_settings.INOTIFIER_EVENT_LOG_FLUSH_INTERVAL))
        self.prune = prune
        self.using = using
        self.rows: deque[Row] = deque()
        self.finished = 0  # rows written, rejected or lost
        self.written = 0
        self.rejected = 0
        self.lost = 0
        self.pruned = 0
        self._outage_since: float | None = None
        self._next_prune = time.monotonic() + FIRST_PRUNE_DELAY
        self._last_db_use = 0.0
        self._prune_running = 0
        #: INOTIFIER_EVENT_LOG_MAX_ROWS, enforced at each write (0: no row limit).
        limit = app_settings.INOTIFIER_EVENT_LOG_MAX_ROWS
        self.max_rows = positive_setting("INOTIFIER_EVENT_LOG_MAX_ROWS", limit) if prune and limit else 0
        #: Rows in the whole table (all hosts) as far as this writer knows; None: not counted yet.
        self.table_rows: int | None = None
        self._next_count = 0.0

    def _finish(self, n: int) -> None:
        """``n`` rows taken are done with: written, rejected or lost."""
        self.finished += n

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
                if self._outage_since is None:
                    timeout = self.interval - (time.monotonic() - last)
                    if timeout > 0:
                        wake.wait(timeout)
                else:
                    stop.wait(self._backoff())
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
            self._final_flush()
        except Exception:
            logger.exception("event log: unexpected error while stopping the writer")
        finally:
            with contextlib.suppress(Exception):
                connections.close_all()

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
            deleted, done = prune_step(
                max_rows=self.max_rows, deadline=now + PRUNE_BUDGET, using=self.using
            )
        except DatabaseError as exc:
            with contextlib.suppress(Exception):
                connections[self.using].close()
            logger.warning("event log: pruning failed, retried in %.0f s: %s", PRUNE_INTERVAL, exc)
            return
        self.pruned += deleted
        self._prune_running += deleted
        if self.table_rows is not None:
            self.table_rows = max(0, self.table_rows - deleted)
        if not done:
            self._next_prune = now  # go on at the next cycle, after the new rows
        elif self._prune_running:
            logger.info("event log: pruned %d old rows", self._prune_running)
            self._prune_running = 0

    def flush(self, deadline: float | None = None) -> bool:
        """Write the buffered rows until none is left or ``deadline`` passes; True when empty.

        Returns False at once when the database is unavailable (the rows stay).
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
            self._finish(left)
            logger.error(
                "event log: %d buffered rows could not be written before exit "
                "(database unavailable for %.0f s)",
                left,
                FINAL_FLUSH_SECONDS,
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
        self.rejected += 1
        self._finish(1)
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
            # Kept to a few microseconds per row (ASCII names need no escaping at all):
            # in-process, this loop shares the GIL with the read loop.
            for ts, pathname, src, mask, maskname, (watch_id, label) in batch:
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
                        bool(mask & IN_ISDIR),
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
                    table_rows, trimmed = self._trim(EventLog, len(values))
            except OUTAGE_ERRORS as exc:
                if not connection.in_atomic_block:
                    with contextlib.suppress(Exception):
                        connection.close()
                if attempt == 1 and reused and self._outage_since is None:
                    continue  # a connection the server dropped while idle: one retry, at once
                return self._outage(exc, len(self.rows) + len(values))
            except Exception as exc:
                return exc
            break
        if self._outage_since is not None:
            logger.warning(
                "event log: database back after %.1f s; writing %d waiting rows",
                time.monotonic() - self._outage_since,
                len(self.rows) + len(values),
            )
            self._outage_since = None
        self.written += len(values)
        self._finish(len(values))
        if table_rows is not None:
            self.table_rows = table_rows
        self.pruned += trimmed
        return None

    def _trim(self, model: Any, inserted: int) -> tuple[int | None, int]:
        """Keep the table within INOTIFIER_EVENT_LOG_MAX_ROWS, in the transaction of a write.

        Called right after ``inserted`` rows were inserted, before the commit:
        when the table now holds more than the limit plus TRIM_SLACK, delete the
        oldest rows beyond the limit (at most TRIM_BACKLOG more than were
        inserted; the budgeted pruning pass takes the rest), PRUNE_BATCH per
        DELETE, in a savepoint: a DELETE the database refuses costs the trim,
        never the rows. Return (rows in the table after the commit as far as
        known, rows deleted); the caller keeps them once the commit succeeded.
        """
        if not self.max_rows:
            return None, 0
        objects = model._base_manager.using(self.using)
        started = time.monotonic()
        if self.table_rows is None or started >= self._next_count:
            rows = objects.count()  # the rows just inserted included
            self._next_count = started + max(RECOUNT_INTERVAL, 100 * (time.monotonic() - started))
        else:
            rows = self.table_rows + inserted
        excess = rows - self.max_rows
        if excess <= self.max_rows * TRIM_SLACK:
            return rows, 0
        todo = min(excess, inserted + TRIM_BACKLOG)
        if todo < excess:
            self._next_prune = started
        deleted = 0
        try:
            with transaction.atomic(using=self.using):
                while deleted < todo:
                    n = delete_oldest(objects.all(), min(PRUNE_BATCH, todo - deleted))
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
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "event log: database unavailable (%s); %d rows wait and are retried",
                str(exc).strip(),
                waiting,
            )
        return exc


class EventLogWriter(EventLogStore, threading.Thread):
    """The read loop's side of the event log: a bounded buffer, emptied by a writer process.

    The read loop appends each logged event to ``incoming``, one flat list
    of ``ROW_ITEMS`` items per row (pathname, time, key = watch index << 32 |
    mask, src pathname or ""): one ``list += tuple`` per event, inlined in
    ``ActiveWatch.deliver``, no lock, no counter. This thread takes rows from
    the head of the list (under ``_lock``; the loop only ever extends the tail).
    At most ``capacity`` rows are taken and not yet written; rows beyond what
    may still wait are cut from the tail of ``incoming`` once per tick
    (``poke``) and counted in ``dropped``, so the newest rows are the ones
    dropped and the bound holds within a tick's worth of events.

    The bound is memory (INOTIFIER_EVENT_LOG_BUFFER_BYTES), turned into rows
    once per tick: ``poke`` samples the sizes of the newest rows' paths
    (``row_bytes`` = ROW_OVERHEAD + their running mean), so the append in the
    read loop stays free of any counting. INOTIFIER_EVENT_LOG_BUFFER, when set,
    caps the rows as well.

    Once started, this thread sends the rows every ``interval`` seconds
    (sooner when half the buffer waits) to a writer *process*
    (``inotifier.daemon.logworker``), and a reply thread reads back what it
    wrote (``written``, ``rejected``, ``lost``, ``pruned``) and its log
    records, which are logged here. The process builds the rows, formats them,
    runs the SQL and the retention, so none of that competes with the read
    loop for the GIL. It runs at a lower CPU priority
    (INOTIFIER_EVENT_LOG_NICE): when the machine is busy, events are delivered
    first and the log catches up after. A writer process that dies is
    replaced (the rows it had not confirmed are counted as lost); after
    FALLBACK_AFTER in a row that wrote nothing (it cannot even start: no
    interpreter at ``sys.executable``, a database backend only the daemon
    can load), this thread writes the rows itself. ``stop`` sends what waits
    and lets the process write it before returning.

    With an in-memory SQLite database (no other process can open it), or
    ``process=False``, this thread writes the rows itself (``EventLogStore``).
    ``flush`` writes from the calling thread (tests).
    """

    def __init__(
        self,
        host: str,
        capacity: int | None = None,
        interval: float | None = None,
        *,
        max_bytes: int | None = None,
        prune: bool = True,
        using: str = DEFAULT_DB_ALIAS,
        process: bool | None = None,
    ) -> None:
        EventLogStore.__init__(self, host, interval, prune=prune, using=using)
        threading.Thread.__init__(self, name="inotifier-eventlog", daemon=True)
        #: The bounds: rows (``capacity`` or INOTIFIER_EVENT_LOG_BUFFER; None: no row cap)
        #: and bytes (``max_bytes`` or INOTIFIER_EVENT_LOG_BUFFER_BYTES).
        self.row_cap, self.max_bytes = buffer_limits(capacity, max_bytes)
        #: Mean ``sys.getsizeof`` of a row's path(s), sampled by ``poke``.
        self.path_bytes = float(INITIAL_PATH_BYTES)
        self.capacity = self._rows_allowed()
        if process is None:
            connection = connections[using]
            # No other process can open an in-memory SQLite database.
            in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()  # type: ignore[attr-defined]
            process = not in_memory
        self.process = process
        #: The read loop's rows, flat (see the class docstring); never replaced.
        self.incoming: list[Any] = []
        self.taken = 0  # rows taken from ``incoming`` (under _lock)
        self.dropped = 0  # rows refused or cut because the buffer was full (read loop)
        #: (watch id, label) of every watch that logs; a row's key carries its index.
        self.tails: list[tuple[int | None, str]] = []
        self._tail_keys: dict[tuple[int | None, str], int] = {}
        self.restarts = 0
        self.worker: WorkerLink | None = None
        self.worker_pid: int | None = None
        self._lock = threading.Lock()
        self._wake_at = max(1, self.capacity // 2)
        # Row sizes are sampled only once this many rows are pending: far from the
        # bound the estimate does not matter, and poke stays as cheap as before.
        self._sample_at = self.capacity // SAMPLE_FROM
        self._sampled_at = -SAMPLE_EVERY  # rows appended so far at the last sample
        self.peak = 0  # most rows pending at a tick (taken and not written, plus waiting)
        self._wake = threading.Event()
        self._stop_event = threading.Event()
        self._flushed = threading.Event()
        self._dropped_reported = 0
        self._next_drop_report = 0.0
        self._restart_delay = WORKER_RESTART_DELAY

    def unlogged(self) -> int:
        """Return the rows that are not in the table: buffer full, rejected, or lost at a stop."""
        return self.dropped + self.rejected + self.lost

    @property
    def accepted(self) -> int:
        """Rows taken from the read loop so far (cut rows excluded once cut)."""
        return self.taken + len(self.incoming) // ROW_ITEMS

    @property
    def pending(self) -> int:
        """Rows accepted and not yet written (or given up)."""
        return self.accepted - self.finished

    @property
    def row_bytes(self) -> int:
        """Estimated bytes of one buffered row (see ROW_OVERHEAD)."""
        return ROW_OVERHEAD + int(self.path_bytes)

    def _rows_allowed(self) -> int:
        """Rows the bounds allow at the current row size."""
        rows = self.max_bytes // self.row_bytes
        if self.row_cap is not None:
            rows = min(rows, self.row_cap)
        return max(1, rows)

    # -- read-loop side -------------------------------------------------------------

    def tail_key(self, watch_id: int | None, label: str) -> int:
        """Return the key bits (index << 32) of a watch's rows; a mask is or-ed in per row."""
        tail = (watch_id, label)
        key = self._tail_keys.get(tail)
        if key is None:
            self.tails.append(tail)
            key = self._tail_keys[tail] = (len(self.tails) - 1) << 32
        return key

    def offer(self, now: float, event: Any, watch: Any) -> None:
        """Queue one row for ``event`` seen at ``now`` (a time.time() value) through ``watch``.

        Exact about the bound, unlike the read loop's inlined append (see ``poke``).
        """
        spec = watch.spec
        key = self.tail_key(spec.watch_id, spec.label) | event.mask
        with self._lock:
            full = self.pending >= self.capacity
        if full:
            self.dropped += 1
            return
        self.incoming += (event.pathname, now, key, getattr(event, "src_pathname", ""))
        self.poke()

    def poke(self) -> None:
        """Cut the rows beyond the bound; wake the writer if half of it waits (once per tick)."""
        incoming = self.incoming
        if not incoming:
            return
        with self._lock:  # the writer thread may shorten the list meanwhile
            in_flight = self.taken - self.finished
            waiting = len(incoming) // ROW_ITEMS
            appended = self.taken + waiting + self.dropped  # only ever grows
            if in_flight + waiting >= self._sample_at and appended - self._sampled_at >= SAMPLE_EVERY:
                self._sampled_at = appended
                self._sample_sizes(incoming)
            may_wait = self.capacity - in_flight
            excess = waiting - max(0, may_wait)
            if excess > 0:
                del incoming[-excess * ROW_ITEMS :]  # the newest rows
                self.dropped += excess
                waiting -= excess
            if in_flight + waiting > self.peak:
                self.peak = in_flight + waiting
        if len(incoming) // ROW_ITEMS >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def _sample_sizes(self, incoming: list[Any]) -> None:
        """Update the row size estimate from the newest rows, and the bound in rows with it.

        A handful of ``sys.getsizeof`` calls per tick: the read loop's append
        itself never counts bytes. Longer paths raise the mean at once, shorter
        ones lower it gradually.
        """
        n = min(len(incoming) // ROW_ITEMS, SIZE_SAMPLE_ROWS)
        if not n:
            return
        getsizeof = sys.getsizeof
        total = 0
        for start in range(-n * ROW_ITEMS, 0, ROW_ITEMS):
            total += getsizeof(incoming[start])
            src = incoming[start + 3]
            if src:
                total += getsizeof(src)
        mean = total / n
        if mean >= self.path_bytes:
            self.path_bytes = mean
        else:
            self.path_bytes += (mean - self.path_bytes) * SIZE_SAMPLE_WEIGHT
        self.capacity = self._rows_allowed()
        self._wake_at = max(1, self.capacity // 2)
        self._sample_at = self.capacity // SAMPLE_FROM

    # -- writer side ---------------------------------------------------------------------

    def take(self, limit: int | None = None) -> list[Any]:
        """Take up to ``limit`` waiting rows (flat) from the head of ``incoming``, within the bound."""
        with self._lock:
            incoming = self.incoming
            n = min(len(incoming) // ROW_ITEMS, self.capacity - (self.taken - self.finished))
            if limit is not None:
                n = min(n, limit)
            if n <= 0:
                return []
            size = n * ROW_ITEMS
            taken = incoming[:size]
            del incoming[:size]
            self.taken += n
        return taken

    def put_back(self, flat: list[Any]) -> None:
        """Return rows taken and not sent to the head of ``incoming`` (for the next process)."""
        with self._lock:
            self.incoming[0:0] = flat
            self.taken -= len(flat) // ROW_ITEMS

    def _finish(self, n: int) -> None:
        with self._lock:
            self.finished += n

    def count_confirmed(self, written: int, rejected: int, lost: int, pruned: int) -> None:
        """Add what the writer process confirmed (its reply thread calls this)."""
        self.written += written
        self.rejected += rejected
        self.lost += lost
        self.pruned += pruned
        if written or rejected or lost:
            self._restart_delay = WORKER_RESTART_DELAY
            self._finish(written + rejected + lost)

    def _unpack_incoming(self) -> None:
        """Move what waits to ``rows``, to be written from this process."""
        while flat := self.take():
            self.rows.extend(rows_from_flat(flat, self.tails))

    def flush(self, deadline: float | None = None) -> bool:
        """Write what waits from the calling thread (see ``EventLogStore.flush``)."""
        self._unpack_incoming()
        return super().flush(deadline)

    # -- the writer thread -------------------------------------------------------------

    def run(self) -> None:
        try:
            if self.process:
                self._run_process()
            else:
                self._run_thread()
            self._log_summary()
        except Exception:
            logger.exception("event log: unexpected error in the writer thread")
        finally:
            self._flushed.set()

    def _log_summary(self) -> None:
        """Say what the log did, and the most it held (for sizing the buffer)."""
        logger.info(
            "event log: %d rows written, %d dropped, %d rejected, %d lost, %d pruned; "
            "at most %d rows waited (about %.1f MiB of %.1f MiB allowed)",
            self.written,
            self.dropped,
            self.rejected,
            self.lost,
            self.pruned,
            self.peak,
            self.peak * self.row_bytes / 2**20,
            self.max_bytes / 2**20,
        )

    def _report_drops(self, force: bool = False) -> None:
        dropped = self.dropped
        now = time.monotonic()
        if dropped != self._dropped_reported and (force or now >= self._next_drop_report):
            if self.row_cap is not None and self.row_cap <= self.max_bytes // self.row_bytes:
                bound = f"INOTIFIER_EVENT_LOG_BUFFER = {self.row_cap} rows"
            else:
                bound = (
                    f"INOTIFIER_EVENT_LOG_BUFFER_BYTES = {self.max_bytes}:"
                    f" {self.capacity} rows of about {self.row_bytes} bytes"
                )
            logger.warning(
                "event log buffer full (%s): %d rows dropped (%d in total);"
                " raise the setting or check the database",
                bound,
                dropped - self._dropped_reported,
                dropped,
            )
            self._dropped_reported = dropped
            self._next_drop_report = now + DROP_REPORT_INTERVAL

    def _run_thread(self) -> None:
        """Write the rows from this thread (EventLogStore's loop) until stopped."""
        self.loop(self._wake, self._stop_event, self._report_drops)
        self._report_drops(force=True)

    def _restart_at(self) -> float:
        """When to start the next writer process; the delay doubles on each call."""
        at = time.monotonic() + self._restart_delay
        self._restart_delay = min(MAX_RESTART_DELAY, self._restart_delay * 2)
        return at

    def _run_process(self) -> None:
        next_start = 0.0
        failures = 0  # writer processes in a row that confirmed nothing
        while True:
            stopping = self._stop_event.is_set()
            worker = self.worker
            if worker is not None and not worker.alive:
                self._worker_gone(worker)
                failures = 0 if worker.finished else failures + 1
                worker = self.worker = None
                next_start = self._restart_at()
            if failures >= FALLBACK_AFTER and not stopping:
                logger.error(
                    "event log: %d writer processes in a row ended without writing a row; "
                    "writing from the daemon's own thread from now on",
                    failures,
                )
                self.process = False
                self._run_thread()
                return
            due = time.monotonic() >= next_start or (stopping and self.incoming)  # last chance
            if worker is None and (self.incoming or not stopping) and due:
                worker = self.worker = self._start_worker()
                if worker is None:
                    failures += 1
                    next_start = self._restart_at()
            if worker is not None:
                worker.send_rows()
            self._report_drops()
            if stopping:
                break
            timeout = self.interval if worker is not None else max(0.01, next_start - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
        if self.worker is not None:
            self.worker.finish(FINAL_FLUSH_SECONDS + 1.0)
            self._worker_gone(self.worker)
            self.worker = None
        with self._lock:
            left = len(self.incoming) // ROW_ITEMS
            self.incoming.clear()
            self.taken += left
        if left:
            self.lost += left
            self._finish(left)
            logger.error("event log: %d buffered rows could not be written before exit", left)
        self._report_drops(force=True)

    def _start_worker(self) -> WorkerLink | None:
        from .logworker import WorkerLink

        try:
            worker = WorkerLink.start(self)
        except Exception as exc:
            logger.error(
                "event log: could not start the writer process (%s: %s); retrying in %.0f s",
                type(exc).__name__,
                exc,
                self._restart_delay,
            )
            return None
        self.worker_pid = worker.pid
        if self.restarts:
            logger.warning("event log: writer process restarted (pid %d)", worker.pid)
        self.restarts += 1
        return worker

    def _worker_gone(self, worker: WorkerLink) -> None:
        """Account for a writer process that ended: rows it never confirmed are lost."""
        worker.close()
        unconfirmed = worker.sent - worker.finished
        if unconfirmed > 0:
            self.lost += unconfirmed
            self._finish(unconfirmed)
        if not worker.clean_exit:
            logger.error(
                "event log: the writer process (pid %d) ended unexpectedly (%s); "
                "%d rows sent to it were not confirmed and are counted as lost",
                worker.pid,
                worker.exit_description(),
                max(0, unconfirmed),
            )

    def stop(self, timeout: float = FINAL_FLUSH_SECONDS + 2.0) -> None:
        """Write what is buffered (retrying up to FINAL_FLUSH_SECONDS) and stop.

        Called from the read loop's thread, once it appends no more.
        """
        self.poke()
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
        else:
            # Never started (or already gone): write from this thread.
            self._final_flush()  # its flush() takes what waits in ``incoming`` too
            self._report_drops(force=True)
            self._log_summary()
