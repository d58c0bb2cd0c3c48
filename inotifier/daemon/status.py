"""The status reporter: the daemon's heartbeat and every watch's state, written for the admin and commands."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Protocol

from django.db import transaction

from ..escaping import get_logger
from .budget import WatchBudget
from .dbguard import DatabaseGuard
from .reader import Reader
from .watches import ActiveWatch
from .watchset import WatchSet

logger = get_logger("inotifier.daemon")

#: Seconds between two status writes when nothing changed (the heartbeat).
HEARTBEAT_SECONDS = 10.0


class LogStats(Protocol):
    """The event log's counters the status shows."""

    def unlogged(self) -> int: ...


class StatusReporter:
    """Write ``DaemonStatus`` (the heartbeat) and the changed ``WatchState`` rows of this host.

    Writes never move the config version. Both tables are written in one
    transaction, so a reader never sees the new version applied beside the
    watch states of the old one. The loop sets ``version_applied``,
    ``overflows`` and ``message``; ``progress`` is called during a large set-up.
    The kernel's watch limit is the one ``budget`` read last.
    """

    def __init__(
        self,
        hostname: str,
        guard: DatabaseGuard | None,
        watches: WatchSet,
        reader: Reader | None,
        log: LogStats | None,
        budget: WatchBudget | None = None,
    ) -> None:
        self.hostname = hostname
        self.guard = guard
        self.watches = watches
        self.reader = reader
        self.log = log
        self.budget = budget or WatchBudget()
        self.started = datetime.now(UTC)
        self.written_at = 0.0  # time.time() of the last status written (the metrics' heartbeat)
        self.version_applied = 0
        self.overflows = 0
        self.message = ""
        self.progress_text = ""
        self.dirty = True  # the daemon's own row has news
        self._next_heartbeat = 0.0
        self._removed: set[str] = set()  # keys of watches no longer held

    @property
    def pid(self) -> int:
        return os.getpid()

    def removed(self, watch: ActiveWatch) -> None:
        """Note that a watch is no longer held: its row goes at the next write."""
        self._removed.add(watch.spec.key)

    def progress(self, watch: ActiveWatch, added: int, started: float, done: bool) -> None:
        """Report progress of a large recursive set-up (logged and shown in the status)."""
        elapsed = time.monotonic() - started
        rate = added / elapsed if elapsed > 0 else 0.0
        if done:
            self.progress_text = ""
            logger.info(
                "watched %d directories under %s in %.1f s (%.0f/s)", added, watch.root, elapsed, rate
            )
        else:
            self.progress_text = f"{watch.root}: {added} directories watched ({rate:.0f}/s)"
            logger.info("%s", self.progress_text)
            self.write(force=True)

    def write(self, force: bool = False, running: bool = True) -> None:
        """Write the daemon's row and the changed watches' rows (the heartbeat when nothing changed)."""
        if self.guard is None:
            return
        watches = self.watches.watches.values()
        dirty = [w for w in watches if w.dirty or force]
        now = time.monotonic()
        if not (force or dirty or self.dirty) and now < self._next_heartbeat:
            return  # nothing new: the heartbeat alone is written every HEARTBEAT_SECONDS
        if not force and not self.guard.due():
            return
        self._next_heartbeat = now + HEARTBEAT_SECONDS
        marks = self.watches.catchup.marks
        marks.refresh()  # with the heartbeat: the catch-up watermarks as far as they safely go
        try:
            done, keys = self.guard.call(lambda: self._write(dirty, force, running), force=True)
        except Exception:
            logger.exception("writing the daemon status failed")
            return
        if done:
            marks.written(keys or [])
            self.written_at = time.time()
            for watch in dirty:
                watch.dirty = False
            self.dirty = False

    def _write(self, dirty: list[ActiveWatch], force: bool, running: bool) -> list[str]:
        from ..models import DaemonStatus, WatchState

        watches = self.watches
        fields = {
            "pid": self.pid if running else None,
            "running": running,
            "started": self.started,
            "heartbeat": datetime.now(UTC),
            "version_applied": self.version_applied,
            "kernel_watches": watches.kernel_watches(),
            "kernel_watch_limit": self.budget.limit,
            "kernel_watch_limit_name": self.budget.name,
            "events": sum(w.events for w in watches.watches.values()),
            "errors": watches.errors,
            "overflows": self.overflows,
            "queue_peak": self.reader.peak if self.reader else 0,
            "log_dropped": self.log.unlogged() if self.log else 0,
            "progress": self.progress_text[:255],
            "message": self.message,
        }
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
                last_event=datetime.fromtimestamp(w.last_event, UTC) if w.last_event else None,
            )
            for w in dirty
        ]
        keys = set(watches.watches)
        with transaction.atomic():
            if not DaemonStatus.objects.filter(host=self.hostname).update(**fields):
                DaemonStatus.objects.create(host=self.hostname, **fields)
            if states:
                WatchState.objects.bulk_create(
                    states,
                    update_conflicts=True,
                    unique_fields=["host", "key"],
                    update_fields=[
                        "watch",
                        "source",
                        "path",
                        "mask",
                        "processor",
                        "state",
                        "message",
                        "kernel_watches",
                        "events",
                        "errors",
                        "last_event",
                        "updated",
                    ],
                    batch_size=1000,
                )
            if force or self._removed - keys:
                WatchState.objects.filter(host=self.hostname).exclude(key__in=keys).delete()
            marked = self.watches.catchup.marks.write(stopping=not running)
        self._removed.clear()
        return marked
