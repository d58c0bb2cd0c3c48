"""The daemon's control loop: flags, wake-up, deadlines; it composes the parts that do the work."""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType

from django.db import connections

from ..conf import MetricsConfig, app_settings
from ..escaping import get_logger
from ..masks import IN_Q_OVERFLOW, event_maskname
from . import reconcile as reconcile_mod
from .dbguard import DatabaseGuard
from .desired import DesiredState
from .dispatch import Dispatcher
from .eventlog import EventLog
from .events import make_event, tell_receivers
from .handoff import Handoff
from .kernel import HEADER_SIZE, Inotify, read_sysctl
from .monitor import Monitor
from .reader import Reader
from .sampler import Sampler
from .status import StatusReporter
from .table import WatchTable
from .wakeup import Deadlines, Flags, Waker
from .watches import ActiveWatch
from .watchset import SetHooks, WatchSet
from .watermarks import Watermarks

logger = get_logger("inotifier.daemon")

#: Longest stretch of event processing before the loop looks at signals and timers.
SLICE_SECONDS = 0.02
#: How soon a thread waiting for the GIL gets it (default 5 ms): the reader's, before the kernel
SWITCH_SECONDS = 0.001  # queue fills (16 384 events: 25 ms at full speed, bench target 1)
#: Seconds the loop goes on processing what was already read when it stops.
DRAIN_AT_STOP_SECONDS = 10.0


@dataclass(frozen=True)
class Hooks:
    """What the process running the daemon wants to hear (all optional)."""

    #: Called once every watch is in place (``inotifier_start`` waits for it).
    on_ready: Callable[[Daemon], None] | None = None
    #: sd_notify messages ("READY=1", "RELOADING=1", ...).
    notify: Callable[[str], None] = lambda message: None
    #: Run by the loop after SIGUSR1 (logrotate: reopen the output files).
    on_reopen: Callable[[], None] | None = None
    #: Seconds between two "WATCHDOG=1" (half of systemd's WatchdogSec=); None: no watchdog.
    watchdog: float | None = None


class Daemon:
    """Hold the inotify watches and keep them equal to the configuration.

    ``start()`` puts every watch in place, ``tick()`` is one turn of the loop
    (tests drive it directly), ``run_loop()`` ticks until ``stop()``,
    ``close()`` processes what was read, flushes and releases everything
    (``with Daemon() as d:`` does start and close); ``run()`` is the whole life
    of the process. ``reconcile()`` applies the difference between the desired
    and the active watches.
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
        watchdog: float | None = None,
    ) -> None:
        self.hooks = Hooks(on_ready, notify or (lambda message: None), on_reopen, watchdog)
        self.install_signal_handlers = install_signal_handlers
        self.flags = Flags()
        self.exit_code = 0
        self.guard = DatabaseGuard() if use_database else None
        self.desired = DesiredState(hostname or app_settings.hostname, self.guard)
        poll = float(app_settings.INOTIFIER_POLL_INTERVAL)
        resync = float(app_settings.INOTIFIER_RESYNC_INTERVAL)
        self.deadlines = Deadlines(poll=poll, missing=poll, resync=resync)
        self.event_log: EventLog | None = None
        self.handoff: Handoff | None = None  # the outbox of TaskDispatcher (needs the database)
        self.reader: Reader | None = None  # None: not started, or closed
        self.waker: Waker | None = None
        # Made by setup(): the watch set, the dispatcher, the status reporter, the monitor.
        self.watchset: WatchSet
        self.dispatcher: Dispatcher
        self.status: StatusReporter
        self.monitor: Monitor

    @property
    def hostname(self) -> str:
        """Return the host name this daemon answers to (``WatchPath.host``)."""
        return self.desired.hostname

    # -- life cycle ---------------------------------------------------------------

    def setup(self) -> None:
        """Create the parts: inotify, the watch set, the reader, the wake-up pipe, signal handlers."""
        metrics = MetricsConfig.from_settings()  # first: a bad setting leaves nothing to close
        inotify = Inotify()
        self.waker = Waker()
        if app_settings.INOTIFIER_EVENT_LOG:
            self.event_log = EventLog(self.hostname)
        if self.guard is not None:
            self.handoff = Handoff(lambda: self.flags.stopping).install()
        self.reader = Reader(
            inotify.fd, self.waker.wake, int(app_settings.INOTIFIER_QUEUE_SIZE) * (HEADER_SIZE + 16)
        )
        hooks = SetHooks(
            progress=self._progress,
            root_gone=lambda: self.deadlines.soon("missing"),
            removed=lambda watch: self.status.removed(watch),
        )
        marks = Watermarks(self.hostname, self.guard)  # catch_up="changed" starts from them
        self.watchset = WatchSet(inotify, self.desired.processor, self.event_log, hooks, marks)
        self.status = StatusReporter(self.hostname, self.guard, self.watchset, self.reader, self.event_log)
        self.dispatcher = Dispatcher(self.reader, self.watchset, self.on_overflow)
        parts = (self.watchset, self.reader, self.status, self.desired, self.guard, self.event_log)
        self.monitor = Monitor(Sampler(*parts), metrics, self.hostname, self.hooks)
        handoff = self.handoff
        if handoff is not None:
            self.monitor.sources.append(lambda: handoff.families(self.hostname, self.guard))
        if self.install_signal_handlers:
            # Handlers only set flags; the wake-up fd makes select() return at once,
            # so a signal is seen within milliseconds even with no file event.
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGHUP, self._on_hup)
            # Always handled: SIGUSR1's default action would kill the daemon.
            signal.signal(signal.SIGUSR1, self._on_usr1)
            signal.set_wakeup_fd(self.waker.w, warn_on_full_buffer=False)

    def start(self) -> Daemon:
        """Set up and put every watch in place; say so (status, signal, sd_notify, on_ready)."""
        self.setup()
        assert self.reader is not None
        self.reader.start()
        if self.event_log is not None:
            self.event_log.start()
        assert self.waker is not None
        self.desired.start(self.waker)  # LISTEN before the rows are read: no change falls between
        self.reconcile(force=True)
        self.monitor.start()
        self.status.write(force=True)
        # What start made is never garbage: frozen, a full collection in a burst no longer walks
        # it with the GIL held (36 ms, the reader starved, the kernel queue overflowed: target 1).
        gc.freeze()
        sys.setswitchinterval(SWITCH_SECONDS)
        tell_receivers("daemon_started", self.__class__, daemon=self)
        self.hooks.notify("READY=1")
        if self.hooks.on_ready is not None:
            self.hooks.on_ready(self)
        return self

    def run_loop(self) -> None:
        """Tick until ``stop()`` (or SIGTERM/SIGINT)."""
        while not self.flags.stopping:
            self.tick()

    def run(self) -> int:
        """Start, loop until stopped, close; return the exit code."""
        try:
            self.start()
            self.run_loop()
        finally:
            self.close()
        return self.exit_code

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def stop(self) -> None:
        """Ask the loop to end (thread-safe)."""
        self.flags.stopping = True
        if self.waker is not None:
            self.waker.wake()

    def close(self) -> None:
        """Stop reading, process what was read, flush the event log, release everything."""
        if self.reader is None:
            return  # not started, or closed already
        self.hooks.notify("STOPPING=1")
        tell_receivers("daemon_stopping", self.__class__, daemon=self)
        self.reader.stop()
        # Events already read from the kernel are processed, and held ones delivered, not dropped.
        self.dispatcher.drain(deadline=time.monotonic() + DRAIN_AT_STOP_SECONDS)
        for part in (self.event_log, self.handoff):
            if part is not None:
                part.stop()
        self.desired.close()  # its events processed: the exclusive watches' leases are freed now
        try:
            self.status.write(force=True, running=False)
        except Exception:
            logger.warning("could not record the daemon's stop in the database")
        self.monitor.close()
        if self.install_signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except ValueError:
                pass
        self.watchset.table.inotify.close()
        if self.waker is not None:
            self.waker.close()
        try:
            connections.close_all()
        except Exception:
            pass
        self.reader = None
        logger.info("inotifier daemon stopped (pid %s)", self.status.pid)

    shutdown = close  # the name of the first release

    def _progress(self, watch: ActiveWatch, added: int, started: float, done: bool) -> None:
        self.status.progress(watch, added, started, done)
        self.monitor.alive()  # a set-up of many directories: the loop is busy, not stuck
        tell_receivers(
            "setup_progress", self.__class__, daemon=self, watch=watch.spec, directories=added, done=done
        )

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.flags.stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.flags.hup = True

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.flags.reopen = True

    # -- the loop ------------------------------------------------------------------

    def tick(self, timeout: float | None = None) -> None:
        """Run one turn: wait for work (at most ``timeout``), then do what is due."""
        flags = self.flags
        deadlines = self.deadlines
        now = time.monotonic()
        if timeout is None:
            due = min(deadlines.next("poll", "missing"), self.desired.next_wakeup(), self.monitor.due)
            timeout = max(0.0, min(due, self.watchset.next_due()) - now)
        assert self.waker is not None
        busy = self.dispatcher.has_work() or flags.hup or flags.reopen or flags.stopping
        ready = self.waker.wait(0.0 if busy else timeout)
        self.waker.drain()
        if flags.reopen:
            flags.reopen = False
            if self.hooks.on_reopen is not None:
                self.hooks.on_reopen()
        if flags.hup:
            flags.hup = False
            logger.info("reconcile requested")
            self.reconcile(force=True, announce=True)
        # Before any event is delivered: a lease past its deadline is dropped first.
        announced = self.desired.wakeup(ready, time.monotonic())
        if announced:
            self.reconcile()
        self.dispatcher.process(deadline=time.monotonic() + SLICE_SECONDS)
        if self.event_log is not None:
            self.event_log.poke()
        watchset = self.watchset
        if watchset.moved_out and not self.dispatcher.has_work():
            watchset.settle_moves()
        now = time.monotonic()
        if deadlines.due("missing", now):
            watchset.check_missing()
        if deadlines.due("poll", now):
            self.poll()
        elif announced:
            self.status.write()  # the admin sees the change now, not at the next poll
        if now >= self.monitor.due:
            self.monitor.tick(now)

    def poll(self) -> None:
        """One poll: reconcile when the counter moved or a resync is due; write the status."""
        version = self.desired.version()
        if self.guard is not None and self.guard.came_back:
            self.guard.came_back = False
            self.flags.resync = True
        due = time.monotonic() >= self.deadlines.at["resync"] or self.flags.resync
        if (version is not None and version != self.status.version_applied) or due:
            self.flags.resync = False
            self.reconcile(force=due)
        self.status.write()

    def reconcile(self, force: bool = False, announce: bool = False) -> reconcile_mod.Plan:
        """Make the active watches equal to the desired ones, touching only the differences.

        ``announce`` (a SIGHUP, i.e. systemd's ExecReload) wraps it in sd_notify
        RELOADING=1 / READY=1; the routine reconciles of the poll do not, so the
        unit does not flip to "reloading" at every admin change.
        """
        started = time.perf_counter()
        if announce:
            self.hooks.notify("RELOADING=1")
        plan = reconcile_mod.diff(self.desired.specs(force), self.watchset.specs())
        version = self.desired.version_read
        reconcile_mod.apply(plan, self.watchset)
        self.desired.applied()  # leases no longer wanted are freed once their watch is gone
        if force:
            self.watchset.retry_failed()
        if version is not None and not (self.guard is not None and self.guard.down):
            self.status.version_applied = version
        self.deadlines.postpone("resync", time.monotonic())
        elapsed = time.perf_counter() - started
        self.monitor.reconciled(elapsed)
        reconcile_mod.log_plan(plan, elapsed, self.watchset)
        self.status.dirty = True
        if announce:
            self.hooks.notify("READY=1")
        tell_receivers("reconciled", self.__class__, daemon=self, changes=plan.summary())
        return plan

    def on_overflow(self) -> None:
        """The kernel queue overflowed: say so loudly, tell receivers, rescan the trees."""
        self.status.overflows += 1
        self.status.dirty = True
        logger.warning(
            "inotify queue overflow: events were lost by the kernel (fs.inotify.max_queued_events"
            " = %s); rescanning the watched trees",
            read_sysctl("max_queued_events"),
        )
        event = make_event(-1, IN_Q_OVERFLOW, 0, "", "", "")
        event.maskname = event_maskname(IN_Q_OVERFLOW)
        tell_receivers("in_q_overflow", self.__class__, event=event)
        self.watchset.rescan()

    # -- for tests and tools: the parts, seen from the daemon ------------------------------

    @property
    def watches(self) -> dict[str, ActiveWatch]:
        """Return the active watches by key."""
        return self.watchset.watches

    @property
    def table(self) -> WatchTable[ActiveWatch]:
        """Return the kernel table (every wd, and which watches own it)."""
        return self.watchset.table
