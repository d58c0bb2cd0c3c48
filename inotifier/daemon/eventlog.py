"""The event log writer: a bounded buffer filled by the read loop, written in batches by a thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, close_old_connections, connections, transaction

from ..conf import app_settings

logger = logging.getLogger("inotifier.daemon.eventlog")

#: Rows per INSERT statement / per transaction.
BATCH_SIZE = 5000
#: Rows deleted per DELETE when pruning, so no statement holds the table long.
PRUNE_BATCH = 5000


def prune_events(
    max_age: float | None = None, max_rows: int | None = None, batch: int = PRUNE_BATCH
) -> int:
    """Delete EventLog rows older than ``max_age`` seconds and beyond ``max_rows``; return count.

    Deletes in batches of ``batch`` rows (each its own short transaction).
    """
    from ..models import EventLog

    if max_age is None:
        max_age = float(app_settings.INOTIFIER_EVENT_LOG_MAX_AGE)
    if max_rows is None:
        max_rows = int(app_settings.INOTIFIER_EVENT_LOG_MAX_ROWS)
    deleted = 0
    if max_age:
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age)
        while True:
            ids = list(
                EventLog.objects.filter(timestamp__lt=cutoff)
                .order_by("timestamp")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                break
            deleted += EventLog.objects.filter(pk__in=ids).delete()[0]
    if max_rows:
        # The newest max_rows rows stay; find the id of the oldest one kept.
        keep_from = (
            EventLog.objects.order_by("-timestamp", "-id")
            .values_list("timestamp", "id")[max_rows - 1 : max_rows]
            .first()
        )
        if keep_from is not None:
            ts, pk = keep_from
            older = EventLog.objects.filter(timestamp__lt=ts) | EventLog.objects.filter(
                timestamp=ts, id__lt=pk
            )
            while True:
                ids = list(older.order_by("timestamp", "id").values_list("pk", flat=True)[:batch])
                if not ids:
                    break
                deleted += EventLog.objects.filter(pk__in=ids).delete()[0]
    return deleted


class EventLogWriter(threading.Thread):
    """Buffer EventLog rows and write them with bulk_create, off the read loop.

    ``offer`` is called from the read loop and never touches the database. When
    ``capacity`` rows wait, further rows are dropped and counted. The thread
    flushes every ``interval`` seconds; a DatabaseError keeps the rows and
    retries with backoff, logged once per outage.
    """

    def __init__(self, host: str, capacity: int | None = None, interval: float | None = None):
        super().__init__(name="inotifier-eventlog", daemon=True)
        self.host = host
        self.capacity = int(capacity or app_settings.INOTIFIER_EVENT_LOG_BUFFER)
        self.interval = float(interval or app_settings.INOTIFIER_EVENT_LOG_FLUSH_INTERVAL)
        self.rows: deque[tuple[Any, ...]] = deque()
        self.dropped = 0
        self.written = 0
        self._dropped_reported = 0
        self._stop_event = threading.Event()
        self._flushed = threading.Event()
        self._outage_since: float | None = None
        self._next_prune = time.monotonic() + 5.0

    # -- read-loop side -----------------------------------------------------------

    def offer(self, now: float, event: Any, watch: Any) -> None:
        """Queue one row (called for every logged event; must stay cheap)."""
        if len(self.rows) >= self.capacity:
            self.dropped += 1
            return
        self.rows.append(
            (
                now,
                event.pathname,
                getattr(event, "src_pathname", ""),
                event.mask,
                event.maskname,
                event.dir,
                watch.spec.watch_id,
                watch.spec.label,
            )
        )

    # -- writer thread ----------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._stop_event.wait(self.interval if self._outage_since is None else self._backoff())
                self._cycle()
            self._drain(deadline=time.monotonic() + 30.0)
        finally:
            connections.close_all()
            self._flushed.set()

    def _backoff(self) -> float:
        assert self._outage_since is not None
        return min(5.0, max(self.interval, (time.monotonic() - self._outage_since) / 4))

    def _cycle(self) -> None:
        self._report_drops()
        self._drain(deadline=time.monotonic() + 1.0)
        if self._outage_since is None and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + 60.0
            try:
                close_old_connections()
                pruned = prune_events()
                if pruned:
                    logger.info("event log: pruned %d old rows", pruned)
            except DatabaseError as exc:
                logger.warning("event log: pruning failed: %s", exc)

    def _report_drops(self) -> None:
        if self.dropped != self._dropped_reported:
            logger.warning(
                "event log buffer full (%d rows): %d rows dropped so far "
                "(raise INOTIFIER_EVENT_LOG_BUFFER or check the database)",
                self.capacity, self.dropped,
            )
            self._dropped_reported = self.dropped

    def _drain(self, deadline: float) -> None:
        while self.rows and time.monotonic() < deadline:
            batch = [self.rows.popleft() for _ in range(min(BATCH_SIZE, len(self.rows)))]
            if not self._write(batch):
                # Put them back, in order, at the front: nothing accepted is lost.
                self.rows.extendleft(reversed(batch))
                return

    def _write(self, batch: list[tuple[Any, ...]]) -> bool:
        from ..models import EventLog, escape_path

        objs = []
        host = self.host
        for ts, pathname, src, mask, maskname, is_dir, watch_id, label in batch:
            path_text, escaped = escape_path(pathname)
            src_text, src_escaped = escape_path(src) if src else ("", False)
            objs.append(
                EventLog(
                    timestamp=datetime.fromtimestamp(ts, UTC),
                    pathname=path_text,
                    src_pathname=src_text,
                    escaped=escaped or src_escaped,
                    mask=mask,
                    maskname=maskname[:64],
                    is_dir=is_dir,
                    watch_id=watch_id,
                    watch_label=label[:4096],
                    host=host,
                )
            )
        try:
            close_old_connections()
            with transaction.atomic():
                EventLog.objects.bulk_create(objs, batch_size=BATCH_SIZE)
        except DatabaseError as exc:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                logger.warning(
                    "event log: database unavailable (%s); %d rows wait and are retried",
                    exc, len(self.rows) + len(batch),
                )
            try:
                connections.close_all()
            except DatabaseError:
                pass
            return False
        if self._outage_since is not None:
            logger.warning(
                "event log: database back after %.1f s", time.monotonic() - self._outage_since
            )
            self._outage_since = None
        self.written += len(objs)
        return True

    def stop(self, timeout: float = 35.0) -> None:
        """Flush what is buffered (up to 30 s) and stop the thread."""
        self._stop_event.set()
        if self.is_alive():
            self._flushed.wait(timeout)
        self._report_drops()
