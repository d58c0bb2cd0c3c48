"""The feeder thread: takes rows from the buffer and gets them written, by a writer process or itself."""

from __future__ import annotations

import threading
import time

from ...escaping import get_logger
from .buffer import RowBuffer
from .config import StoreConfig
from .link import WorkerLink
from .rows import rows_from_flat
from .store import EventLogStore

logger = get_logger("inotifier.daemon.eventlog")


class Feeder(threading.Thread):
    """Ship the buffer's rows to a writer process every ``interval`` (sooner when woken).

    The process builds the rows, formats them, runs the SQL and the retention,
    so none of that competes with the read loop for the GIL; it runs at a lower
    CPU priority (INOTIFIER_EVENT_LOG_NICE): events first, the log catches up.
    A process that dies is replaced (the rows it had not confirmed are counted
    as lost), with a delay doubling while it keeps failing; after
    ``fallback_after`` in a row that wrote nothing (it cannot even start), or
    when no other process can reach the database (in-memory SQLite), this
    thread writes the rows itself through its own ``EventLogStore``.
    """

    def __init__(self, buffer: RowBuffer, config: StoreConfig) -> None:
        super().__init__(name="inotifier-eventlog", daemon=True)
        self.buffer = buffer
        self.config = config
        self.process = config.process  # False once it writes the rows itself
        self.worker: WorkerLink | None = None
        self.restarts = 0
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.finished = threading.Event()  # set when the thread is done
        self._restart_delay = config.restart_delay
        self._dropped_reported = 0
        self._next_drop_report = 0.0

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
            self.finished.set()

    # -- writing from this thread ---------------------------------------------------------

    def store(self) -> EventLogStore:
        """Return a store fed from the buffer, counting into its tally (writing from this process)."""
        buffer = self.buffer
        return EventLogStore(self.config, buffer.tally, lambda: rows_from_flat(buffer.take(), buffer.tails))

    def _run_thread(self) -> None:
        self.store().loop(self.wake, self.stopping, self._report_drops)
        self._report_drops(force=True)

    # -- writing through a writer process -------------------------------------------------

    def _run_process(self) -> None:
        config = self.config
        next_start = 0.0
        failures = 0  # writer processes in a row that confirmed nothing
        while True:
            stopping = self.stopping.is_set()
            worker = self.worker
            if worker is not None and not worker.alive:
                self._worker_gone(worker)
                failures = 0 if worker.finished else failures + 1
                worker = self.worker = None
                next_start = self._restart_at()
            if failures >= config.fallback_after and not stopping:
                logger.error(
                    "event log: %d writer processes in a row ended without writing a row; "
                    "writing from the daemon's own thread from now on",
                    failures,
                )
                self.process = False
                self._run_thread()
                return
            waiting = bool(self.buffer.incoming)
            due = time.monotonic() >= next_start or (stopping and waiting)  # last chance
            if worker is None and (waiting or not stopping) and due:
                worker = self.worker = self._start_worker()
                if worker is None:
                    failures += 1
                    next_start = self._restart_at()
            if worker is not None:
                worker.send_rows(config.frame_rows)
            self._report_drops()
            if stopping:
                break
            timeout = config.interval if worker is not None else max(0.01, next_start - time.monotonic())
            self.wake.wait(timeout)
            self.wake.clear()
        if self.worker is not None:
            self.worker.finish(config.final_flush_seconds + 1.0)
            self._worker_gone(self.worker)
            self.worker = None
        left = self.buffer.lose_waiting()
        if left:
            logger.error("event log: %d buffered rows could not be written before exit", left)
        self._report_drops(force=True)

    def _restart_at(self) -> float:
        """When to start the next writer process; the delay doubles on each call."""
        at = time.monotonic() + self._restart_delay
        self._restart_delay = min(self.config.max_restart_delay, self._restart_delay * 2)
        return at

    def _start_worker(self) -> WorkerLink | None:
        try:
            worker = WorkerLink.start(self.config, self.buffer, self._worker_replied)
        except Exception as exc:
            logger.error(
                "event log: could not start the writer process (%s: %s); retrying in %.0f s",
                type(exc).__name__,
                exc,
                self._restart_delay,
            )
            return None
        if self.restarts:
            logger.warning("event log: writer process restarted (pid %d)", worker.pid)
        self.restarts += 1
        return worker

    def _worker_replied(self) -> None:
        """The writer process's replies ended (it exited): look at it now."""
        self.wake.set()

    def _worker_gone(self, worker: WorkerLink) -> None:
        """Account for a writer process that ended: rows it never confirmed are lost."""
        worker.close()
        if worker.finished:
            self._restart_delay = self.config.restart_delay  # it worked: restart soon
        unconfirmed = worker.sent - worker.finished
        if unconfirmed > 0:
            self.buffer.tally.add(lost=unconfirmed)
        if not worker.clean_exit:
            logger.error(
                "event log: the writer process (pid %d) ended unexpectedly (%s); "
                "%d rows sent to it were not confirmed and are counted as lost",
                worker.pid,
                worker.exit_description(),
                max(0, unconfirmed),
            )

    # -- reports --------------------------------------------------------------------------

    def _report_drops(self, force: bool = False) -> None:
        buffer = self.buffer
        dropped = buffer.dropped
        now = time.monotonic()
        if dropped != self._dropped_reported and (force or now >= self._next_drop_report):
            if buffer.row_cap is not None and buffer.row_cap <= buffer.max_bytes // buffer.row_bytes:
                bound = f"INOTIFIER_EVENT_LOG_BUFFER = {buffer.row_cap} rows"
            else:
                bound = (
                    f"INOTIFIER_EVENT_LOG_BUFFER_BYTES = {buffer.max_bytes}:"
                    f" {buffer.capacity} rows of about {buffer.row_bytes} bytes"
                )
            logger.warning(
                "event log buffer full (%s): %d rows dropped (%d in total);"
                " raise the setting or check the database",
                bound,
                dropped - self._dropped_reported,
                dropped,
            )
            self._dropped_reported = dropped
            self._next_drop_report = now + self.config.drop_report_interval

    def _log_summary(self) -> None:
        """Say what the log did, and the most it held (for sizing the buffer)."""
        buffer = self.buffer
        tally = buffer.tally
        logger.info(
            "event log: %d rows written, %d dropped, %d rejected, %d lost, %d pruned; "
            "at most %d rows waited (about %.1f MiB of %.1f MiB allowed)",
            tally.written,
            buffer.dropped,
            tally.rejected,
            tally.lost,
            tally.pruned,
            buffer.peak,
            buffer.peak * buffer.row_bytes / 2**20,
            buffer.max_bytes / 2**20,
        )
