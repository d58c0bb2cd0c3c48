"""The daemon: one loop that reads events, runs processors and reconciles watches."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, close_old_connections, connection, connections, transaction

from .. import signals as inotifier_signals
from ..conf import app_settings
from ..escaping import get_logger
from ..masks import IN_IGNORED, IN_Q_OVERFLOW, event_maskname
from ..specs import ROW_FIELDS, RowSpecs, SpecError, WatchSpec, load_processor
from . import reconcile as reconcile_mod
from .eventlog import EventLogWriter
from .inotify import HEADER_SIZE, Inotify, Reader, parse, read_sysctl
from .watches import ACTIVE, ERROR, MISSING, ActiveWatch, Retry, WatchTable, make_event

logger = get_logger("inotifier.daemon")


def refresh_connection() -> None:
    """Drop a database connection that is broken or too old before a unit of work.

    Skipped inside an atomic block (a test driving the daemon in-process), where
    closing would break the enclosing transaction.
    """
    if not connection.in_atomic_block:
        close_old_connections()

#: Longest stretch of event processing before the loop looks at signals and timers.
SLICE_SECONDS = 0.02
#: Longest turn one watch gets before the next watch with events is served.
TURN_SECONDS = 0.005
#: Seconds between two status writes when nothing changed (the heartbeat).
HEARTBEAT_SECONDS = 10.0
#: Raw chunks are parsed only while fewer events than this wait in the watch queues,
#: so memory stays bounded by the reader's byte limit.
ROUTE_LOW_WATER = 20_000
#: Bytes of raw events routed at once (about 2 000 events).
ROUTE_BYTES = 64 * 1024


class Daemon:
    """Hold the inotify watches and keep them equal to the configuration.

    ``run()`` is the whole life of the process; ``tick()`` is one turn of the
    loop (tests drive it directly); ``reconcile()`` applies the difference
    between the desired and the active watches; ``stop()`` asks the loop to end.
    """

    def __init__(
        self,
        *,
        hostname: str | None = None,
        use_database: bool = True,
        on_ready: Callable[[Daemon], None] | None = None,
        notify: Callable[[str], None] | None = None,
        install_signal_handlers: bool = True,
        on_reopen: Callable[[], None] | None = None,
    ) -> None:
        self.hostname = hostname or app_settings.hostname
        self.use_database = use_database
        self.on_ready = on_ready
        self.on_reopen = on_reopen  # run by the loop after SIGUSR1 (logrotate)
        self._reopen = False
        self.notify = notify or (lambda message: None)
        self.install_signal_handlers = install_signal_handlers
        self.poll_interval = float(app_settings.INOTIFIER_POLL_INTERVAL)
        self.resync_interval = float(app_settings.INOTIFIER_RESYNC_INTERVAL)
        self.watches: dict[str, ActiveWatch] = {}
        self.row_specs = RowSpecs()
        self.processor_errors: dict[str, str] = {}
        self.pending_dir_moves: set[ActiveWatch] = set()
        self._ready: deque[ActiveWatch] = deque()  # watches with queued events, in turn order
        self._queued = 0
        self.event_log: EventLogWriter | None = None
        self.started = datetime.now(UTC)
        self.pid = os.getpid()
        self.version_applied = 0
        self.errors = 0
        self.overflows = 0
        self.progress_text = ""
        self.message = ""
        self.stopping = False
        self.exit_code = 0
        self._hup = False
        self._resync_wanted = False
        self._rows: list[Any] | None = None  # last rows read; kept through a DB outage
        self._db_down_since: float | None = None
        self._db_retry_at = 0.0
        self._next_poll = 0.0
        self._next_resync = 0.0
        self._next_missing = 0.0
        self._status_dirty = True
        self._next_heartbeat = 0.0
        self._forgotten: list[ActiveWatch] = []
        self.inotify: Inotify | None = None
        self.reader: Reader | None = None
        self.table: WatchTable

    # -- life cycle ---------------------------------------------------------------

    def setup(self) -> None:
        """Create the inotify instance, the reader thread, the wake-up pipe and signal handlers."""
        self.inotify = Inotify()
        self.table = WatchTable(self.inotify)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        queue_bytes = int(app_settings.INOTIFIER_QUEUE_SIZE) * (HEADER_SIZE + 16)
        self.reader = Reader(self.inotify.fd, self._wake, queue_bytes)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        if app_settings.INOTIFIER_EVENT_LOG:
            self.event_log = EventLogWriter(self.hostname)
        if self.install_signal_handlers:
            # Handlers only set flags; the wake-up fd makes select() return at once,
            # so a signal is seen within milliseconds even with no file event.
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGHUP, self._on_hup)
            # Always handled: SIGUSR1's default action would kill the daemon.
            signal.signal(signal.SIGUSR1, self._on_usr1)
            signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"r")
        except BlockingIOError:
            pass  # already awake
        except OSError:
            pass

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._hup = True

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self._reopen = True

    def stop(self) -> None:
        """Ask the loop to end (thread-safe)."""
        self.stopping = True
        self._wake()

    def run(self) -> int:
        """Set up, watch, loop until stopped, clean up; return the exit code."""
        self.setup()
        try:
            assert self.reader is not None
            self.reader.start()
            if self.event_log is not None:
                self.event_log.start()
            self.reconcile(force=True)
            self.write_status(force=True)
            inotifier_signals.daemon_started.send(sender=self.__class__, daemon=self)
            self.notify("READY=1")
            if self.on_ready is not None:
                self.on_ready(self)
            while not self.stopping:
                self.tick()
        finally:
            self.shutdown()
        return self.exit_code

    def shutdown(self) -> None:
        """Stop reading, process what was read, flush the event log, close everything."""
        self.notify("STOPPING=1")
        try:
            inotifier_signals.daemon_stopping.send(sender=self.__class__, daemon=self)
        except Exception:
            logger.exception("a daemon_stopping receiver raised")
        if self.reader is not None:
            self.reader.stop()
            # Events already read from the kernel are processed, not dropped.
            self.process_events(deadline=time.monotonic() + 10.0)
        if self.event_log is not None:
            self.event_log.stop()
        try:
            self.write_status(force=True, running=False)
        except Exception:
            logger.warning("could not record the daemon's stop in the database")
        if self.install_signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except ValueError:
                pass
        if self.inotify is not None:
            self.inotify.close()
        for fd in (getattr(self, "_wake_r", -1), getattr(self, "_wake_w", -1)):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            connections.close_all()
        except Exception:
            pass
        logger.info("inotifier daemon stopped (pid %s)", self.pid)

    # -- the loop ------------------------------------------------------------------

    def tick(self, timeout: float | None = None) -> None:
        """Run one turn: wait for work (at most ``timeout``), then do what is due."""
        now = time.monotonic()
        if timeout is None:
            timeout = max(0.0, min(self._next_poll, self._next_missing) - now)
        assert self.reader is not None
        if not self.reader.chunks and not self._ready and not (self._hup or self._reopen or self.stopping):
            for _key, _mask in self.selector.select(timeout):
                pass
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        if self._reopen:
            self._reopen = False
            if self.on_reopen is not None:
                self.on_reopen()
        if self._hup:
            self._hup = False
            logger.info("reconcile requested")
            self.reconcile(force=True, announce=True)
        self.process_events(deadline=time.monotonic() + SLICE_SECONDS)
        if self.event_log is not None:
            self.event_log.poke()
        now = time.monotonic()
        if self.pending_dir_moves and not self.reader.chunks and not self._ready:
            for watch in self.pending_dir_moves:
                watch.settle_dir_moves(self.table)
            self.pending_dir_moves.clear()
        if now >= self._next_missing:
            self._next_missing = now + self.poll_interval
            self.check_missing()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self.poll()

    def process_events(self, deadline: float) -> int:
        """Process buffered events until there are none or ``deadline`` passes; return how many.

        Raw chunks are routed into one queue per watch, and the watches with
        events take turns (at most TURN_SECONDS each), so a slow processor
        delays its own watch, not the others. Order within a watch is kept.
        """
        reader = self.reader
        if reader is None:
            return 0
        count = 0
        while True:
            chunk = reader.take_many(ROUTE_BYTES) if self._queued < ROUTE_LOW_WATER else None
            if chunk is not None:
                self._route(chunk)
            elif not self._ready:
                break
            if self._ready:
                count += self._run_turns(deadline)
            if time.monotonic() >= deadline:
                break
        return count

    def _route(self, chunk: bytes) -> None:
        nodes = self.table.nodes
        ready = self._ready
        queued = 0
        for wd, mask, cookie, name in parse(chunk):
            node = nodes.get(wd)
            if node is None:
                if mask & IN_Q_OVERFLOW:
                    self.on_overflow()
                continue
            for watch, path in node.owners.items():
                queue = watch.queue
                if not queue:
                    ready.append(watch)
                queue.append((wd, path, mask, cookie, name))
                queued += 1
            if mask & IN_IGNORED:
                # The kernel dropped this wd (directory deleted or unmounted).
                self.table.forget(wd)
        self._queued += queued

    def _run_turns(self, deadline: float) -> int:
        ready = self._ready
        table = self.table
        monotonic = time.monotonic
        handled_total = 0
        for _ in range(len(ready)):
            if not ready:
                break
            watch = ready.popleft()
            queue = watch.queue
            handle = watch.handle
            turn_end = min(deadline, monotonic() + TURN_SECONDS)
            handled = 0
            while queue:
                wd, path, mask, cookie, name = queue.popleft()
                handle(table, wd, path, mask, cookie, name)
                handled += 1
                if monotonic() >= turn_end:
                    break
            handled_total += handled
            if queue:
                ready.append(watch)
        self._queued -= handled_total
        return handled_total

    def drop_queue(self, watch: ActiveWatch) -> None:
        """Forget the queued events of a watch that is removed."""
        self._queued -= len(watch.queue)
        watch.queue.clear()
        if watch in self._ready:
            self._ready.remove(watch)

    def transfer_queue(self, old: ActiveWatch, new: ActiveWatch) -> None:
        """Hand the queued events of a rebuilt watch to its replacement (nothing is lost)."""
        if not old.queue:
            return
        new.queue.extend(old.queue)
        old.queue.clear()
        for i, watch in enumerate(self._ready):
            if watch is old:
                self._ready[i] = new
                break
        else:
            self._ready.append(new)

    def on_overflow(self) -> None:
        """The kernel queue overflowed: say so loudly, tell receivers, rescan the trees."""
        self.overflows += 1
        self._status_dirty = True
        logger.warning(
            "inotify queue overflow: events were lost by the kernel (fs.inotify.max_queued_events"
            " = %s); rescanning the watched trees",
            read_sysctl("max_queued_events"),
        )
        event = make_event(-1, IN_Q_OVERFLOW, 0, "", "", "")
        event.maskname = event_maskname(IN_Q_OVERFLOW)
        try:
            inotifier_signals.in_q_overflow.send(sender=self.__class__, event=event)
        except Exception:
            logger.exception("an in_q_overflow receiver raised")
        self.rescan()

    def rescan(self) -> None:
        """Watch directories of tree watches that appeared while events were lost."""
        for watch in list(self.watches.values()):
            if watch.state != ACTIVE or not watch.spec.auto_add:
                continue
            failure = watch.rescan(self.table)
            if failure:
                watch.set_state(ERROR, failure)

    def retry_failed(self) -> None:
        """Try again the watches that ran out of kernel watches (some may have been freed)."""
        for watch in self.watches.values():
            if watch.state == ERROR and watch.retry is Retry.NO_SPACE and watch.processor:
                watch.stop(self.table)
                watch.start(self.table)

    def check_missing_soon(self) -> None:
        self._next_missing = 0.0

    def check_missing(self) -> None:
        """Start watches whose path was missing and now exists, delivering what is already in it.

        A watch refused because its root led outside INOTIFIER_ALLOWED_ROOTS is
        checked again too: the link may have been replaced by the real directory.
        """
        for watch in self.watches.values():
            waiting = watch.state == MISSING or (watch.state == ERROR and watch.retry is Retry.OUTSIDE)
            if waiting and os.path.lexists(watch.root):
                watch.start(self.table, synthesize=True)

    def progress(
        self, watch: ActiveWatch, added: int, done: bool = False, started: float | None = None
    ) -> None:
        """Report progress of a large recursive set-up (logged and shown in the status).

        ``started`` is the ``time.monotonic()`` at which this set-up began.
        """
        elapsed = time.monotonic() - started if started is not None else 0.0
        rate = added / elapsed if elapsed > 0 else 0.0
        if done:
            self.progress_text = ""
            logger.info(
                "watched %d directories under %s in %.1f s (%.0f/s)",
                added, watch.root, elapsed, rate,
            )
        else:
            self.progress_text = f"{watch.root}: {added} directories watched ({rate:.0f}/s)"
            logger.info("%s", self.progress_text)
            self._status_dirty = True
            self.write_status(force=True)

    # -- configuration ---------------------------------------------------------------

    def load_rows(self) -> list[Any] | None:
        """Return the enabled rows for this host, or None when the database is unavailable."""
        if not self.use_database:
            return []
        from ..models import WatchPath

        try:
            refresh_connection()
            # Plain tuples straight from the cursor: with thousands of rows, model
            # instances (or even values_list's converters) dominate the reconcile.
            query = WatchPath.objects.enabled_for_host(self.hostname).values_list(*ROW_FIELDS)
            sql, params = query.query.sql_with_params()
            with connections[query.db].cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
        except DatabaseError as exc:
            self._db_failed(exc)
            return None
        self._db_ok()
        return rows

    def _db_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._db_down_since is None:
            self._db_down_since = now
            logger.warning(
                "database unavailable (%s); keeping the current watches and retrying", exc
            )
        # Back off: 1 s, then a quarter of the outage, at most 30 s.
        self._db_retry_at = now + min(30.0, max(1.0, (now - self._db_down_since) / 4))
        try:
            connections.close_all()
        except Exception:
            pass

    def _db_ok(self) -> None:
        if self._db_down_since is not None:
            logger.warning(
                "database back after %.1f s", time.monotonic() - self._db_down_since
            )
            self._db_down_since = None
            self._resync_wanted = True

    def desired(self) -> dict[str, WatchSpec]:
        """Return the desired watches (settings entries + rows; last known rows during an outage)."""
        rows = self.load_rows()
        if rows is not None:
            self._rows = rows
        return self.row_specs.build(self._rows or [])

    def reconcile(self, force: bool = False, announce: bool = False) -> reconcile_mod.Plan:
        """Make the active watches equal to the desired ones, touching only the differences.

        ``announce`` (a SIGHUP, i.e. systemd's ExecReload) wraps it in sd_notify
        RELOADING=1 / READY=1; the routine reconciles of the poll do not, so the
        unit does not flip to "reloading" at every admin change.
        """
        started = time.perf_counter()
        if announce:
            self.notify("RELOADING=1")
        version = self.read_version()
        if force:
            self.row_specs.clear()
        desired = self.desired()
        plan = reconcile_mod.diff(desired, reconcile_mod.specs_of(self.watches))
        reconcile_mod.apply(self, plan)
        if force:
            self.retry_failed()
        if version is not None and self._db_down_since is None:
            self.version_applied = version
        self._next_resync = time.monotonic() + self.resync_interval
        elapsed = (time.perf_counter() - started) * 1000
        self.last_reconcile_ms = elapsed
        if plan.touched:
            # One line for the whole change: each watch in error or missing has said so
            # itself (once), the healthy ones are counted here.
            states = Counter(watch.state for watch in self.watches.values())
            logger.info(
                "reconciled in %.1f ms: %d added, %d removed, %d updated, %d unchanged; "
                "%d watches: %d active, %d missing, %d in error",
                elapsed, len(plan.add), len(plan.remove), len(plan.update), len(plan.unchanged),
                len(self.watches), states[ACTIVE], states[MISSING], states[ERROR],
            )
        self._status_dirty = True
        if announce:
            self.notify("READY=1")
        try:
            inotifier_signals.reconciled.send(sender=self.__class__, daemon=self, changes=plan.summary())
        except Exception:
            logger.exception("a reconciled receiver raised")
        self.last_plan = plan
        return plan

    def read_version(self) -> int | None:
        """Return the ConfigVersion counter, or None when the database is unavailable."""
        if not self.use_database:
            return None
        if self._db_down_since is not None and time.monotonic() < self._db_retry_at:
            return None
        from ..models import ConfigVersion

        try:
            refresh_connection()
            version = ConfigVersion.current()
        except DatabaseError as exc:
            self._db_failed(exc)
            return None
        self._db_ok()
        return version

    def poll(self) -> None:
        """One poll tick: reconcile when the counter moved or a resync is due; write status."""
        version = self.read_version()
        due = time.monotonic() >= self._next_resync or self._resync_wanted
        if (version is not None and version != self.version_applied) or due:
            self._resync_wanted = False
            self.reconcile(force=due)
        self.write_status()

    def make_watch(self, spec: WatchSpec) -> ActiveWatch:
        """Return a new ActiveWatch for ``spec`` with its processor (None when unusable)."""
        processor = None if spec.error else self.load_processor(spec)
        watch = ActiveWatch(spec, processor, self)
        if processor is None and not spec.error:
            watch.message = self.processor_errors.get(spec.key, "unusable processor")
        return watch

    def load_processor(self, spec: WatchSpec) -> Any:
        """Import and instantiate the processor of ``spec``; None (and the reason kept) on failure."""
        self.processor_errors.pop(spec.key, None)
        try:
            cls = load_processor(spec.processor)
            return cls()
        except SpecError as exc:
            self.processor_errors[spec.key] = str(exc)
        except Exception as exc:
            self.processor_errors[spec.key] = (
                f"processor {spec.processor!r} failed to start: {type(exc).__name__}: {exc}"
            )
            logger.exception("processor %s failed to start", spec.processor)
        return None

    def forget_state(self, watch: ActiveWatch) -> None:
        self._forgotten.append(watch)

    # -- status -------------------------------------------------------------------------

    def kernel_watches(self) -> int:
        return len(self.table.nodes) if hasattr(self, "table") else 0

    def write_status(self, force: bool = False, running: bool = True) -> None:
        """Write the daemon's and the changed watches' status rows (never bumps the counter)."""
        if not self.use_database:
            return
        if self._db_down_since is not None and time.monotonic() < self._db_retry_at and not force:
            return
        dirty = [w for w in self.watches.values() if w.dirty or force]
        now_m = time.monotonic()
        if not (force or dirty or self._status_dirty) and now_m < self._next_heartbeat:
            return  # nothing new: the heartbeat alone is written every HEARTBEAT_SECONDS
        self._next_heartbeat = now_m + HEARTBEAT_SECONDS
        try:
            refresh_connection()
            with transaction.atomic():
                # One transaction: a reader never sees the new version applied beside
                # the watch states of the old one.
                self._write_status_rows(dirty, force, running)
        except DatabaseError as exc:
            self._db_failed(exc)
            return
        except Exception:
            logger.exception("writing the daemon status failed")
            return
        self._db_ok()
        for w in dirty:
            w.dirty = False
        self._status_dirty = False

    def _write_status_rows(self, dirty: list[ActiveWatch], force: bool, running: bool) -> None:
        from ..models import DaemonStatus, WatchState

        now = datetime.now(UTC)
        reader = self.reader
        fields = {
            "pid": self.pid if running else None,
            "running": running,
            "started": self.started,
            "heartbeat": now,
            "version_applied": self.version_applied,
            "kernel_watches": self.kernel_watches(),
            "events": sum(w.events for w in self.watches.values()),
            "errors": self.errors,
            "overflows": self.overflows,
            "queue_peak": reader.peak if reader else 0,
            # Rows not in the table: buffer full, rejected by the database, or
            # still unwritten when the writer had to give up at stop.
            "log_dropped": (
                self.event_log.dropped + self.event_log.rejected + self.event_log.lost
                if self.event_log
                else 0
            ),
            "progress": self.progress_text[:255],
            "message": self.message,
        }
        if not DaemonStatus.objects.filter(host=self.hostname).update(**fields):
            DaemonStatus.objects.create(host=self.hostname, **fields)
        if dirty:
            states = [
                WatchState(
                    host=self.hostname,
                    key=w.spec.key,
                    watch_id=w.spec.watch_id,
                    source=w.spec.source,
                    path=w.spec.label[:4096],
                    mask=w.spec.mask,
                    processor=w.spec.processor[:255],
                    state=w.state,
                    message=w.message,
                    kernel_watches=len(w.paths),
                    events=w.events,
                    errors=w.errors,
                    last_event=(
                        datetime.fromtimestamp(w.last_event, UTC) if w.last_event else None
                    ),
                )
                for w in dirty
            ]
            WatchState.objects.bulk_create(
                states,
                update_conflicts=True,
                unique_fields=["host", "key"],
                update_fields=[
                    "watch", "source", "path", "mask", "processor", "state", "message",
                    "kernel_watches", "events", "errors", "last_event", "updated",
                ],
                batch_size=1000,
            )
        keys = set(self.watches)
        gone = [w.spec.key for w in self._forgotten if w.spec.key not in keys]
        if gone or force:
            WatchState.objects.filter(host=self.hostname).exclude(key__in=keys).delete()
        self._forgotten.clear()


def configure_logging(verbosity: int = 1, stream: Any = None) -> None:
    """Send the ``inotifier`` loggers to stderr when the project configured no handler."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root_logger = logging.getLogger("inotifier")
    root_logger.setLevel(level)
    if not root_logger.handlers and not logging.getLogger().handlers:
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        )
        root_logger.addHandler(handler)
    # pyinotify attaches a stderr handler of its own and propagates: one line, not two.
    pyinotify_logger = logging.getLogger("pyinotify")
    for handler in list(pyinotify_logger.handlers):
        pyinotify_logger.removeHandler(handler)
