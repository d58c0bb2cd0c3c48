"""One policy for the database work of a long-lived process: refresh, notice an outage, back off."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.db import Error, close_old_connections, connection, connections

from ..escaping import get_logger

logger = get_logger("inotifier.daemon")

T = TypeVar("T")

#: First retry after a failure, and the longest wait between two retries (seconds).
RETRY_FIRST = 1.0
RETRY_CAP = 30.0
#: Seconds a daemon reuses a database connection when the project's CONN_MAX_AGE is 0.
DAEMON_CONN_MAX_AGE = 60.0


class Backoff:
    """When to try again during an outage: soon at first, then a quarter of the outage so far.

    The wait stays within ``[first, cap]``: a blip is retried within a second,
    a long outage is not hammered. The daemon and the event log's writer use it.
    """

    def __init__(self, first: float = RETRY_FIRST, cap: float = RETRY_CAP) -> None:
        self.first = first
        self.cap = cap
        self.since: float | None = None  # time.monotonic() of the first failure, None: no outage

    def failed(self) -> float:
        """Record a failure; return the seconds to wait before the next try."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        return self.delay(now)

    def delay(self, now: float | None = None) -> float:
        """Return the wait before the next try (``first`` when there is no outage)."""
        if self.since is None:
            return self.first
        elapsed = (now if now is not None else time.monotonic()) - self.since
        return min(self.cap, max(self.first, elapsed / 4))

    def recovered(self) -> float | None:
        """End the outage; return how long it lasted (None if there was none)."""
        if self.since is None:
            return None
        lasted = time.monotonic() - self.since
        self.since = None
        return lasted


def keep_connections(max_age: float = DAEMON_CONN_MAX_AGE) -> list[str]:
    """Let this process reuse its database connections: return the aliases changed.

    Django's default ``CONN_MAX_AGE = 0`` closes a connection at the end of each
    request. A daemon has no requests: with it, every poll (each 2 s) and every
    reconcile would open a new connection (a backend started with cold caches),
    which is most of the time a change takes to go live on a busy host. A
    connection whose CONN_MAX_AGE is 0 is therefore kept ``max_age`` seconds,
    with Django's health check before reuse; a CONN_MAX_AGE the project chose
    (None or a number of seconds) is left as it is. Called by the daemon's
    process only (``inotifier_start``), never in a web process.
    """
    changed = []
    for alias in connections:
        entry = connections.settings[alias]
        if entry.get("CONN_MAX_AGE", 0) == 0:
            entry["CONN_MAX_AGE"] = max_age
            entry["CONN_HEALTH_CHECKS"] = True
            changed.append(alias)
    return changed


def refresh_connection() -> None:
    """Drop a database connection that is broken or too old before a unit of work.

    Skipped inside an atomic block (a test driving the daemon in-process), where
    closing would break the enclosing transaction.
    """
    if not connection.in_atomic_block:
        close_old_connections()


class DatabaseGuard:
    """Run the daemon's units of database work: one outage logged once, retries backed off.

    While the database is down, work is skipped until the next retry is due
    (active watches go on from what was last read); when it is back, that is
    logged and ``came_back`` asks the loop for a full resync.
    """

    def __init__(self) -> None:
        self.backoff = Backoff()
        self.retry_at = 0.0
        self.came_back = False

    @property
    def down(self) -> bool:
        """Return True during an outage."""
        return self.backoff.since is not None

    def due(self) -> bool:
        """Return True when work may be tried now (no outage, or a retry is due)."""
        return not self.down or time.monotonic() >= self.retry_at

    def call(self, work: Callable[[], T], *, force: bool = False) -> tuple[bool, T | None]:
        """Run ``work`` (unless a retry is not due and not ``force``); return (done, its result)."""
        if not force and not self.due():
            return False, None
        try:
            refresh_connection()
            result = work()
        except Error as exc:  # DatabaseError, and InterfaceError (a connection closed under it)
            self._failed(exc)
            return False, None
        self._ok()
        return True, result

    def _failed(self, exc: Exception) -> None:
        if not self.down:
            logger.warning("database unavailable (%s); keeping the current watches and retrying", exc)
        self.retry_at = time.monotonic() + self.backoff.failed()
        try:
            connections.close_all()
        except Exception:
            pass

    def _ok(self) -> None:
        lasted = self.backoff.recovered()
        if lasted is not None:
            logger.warning("database back after %.1f s", lasted)
            self.came_back = True
