"""The lease keeper: which exclusive watches this daemon holds, renewed in time and dropped in time."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

from ..escaping import get_logger
from .dbguard import DatabaseGuard

logger = get_logger("inotifier.daemon.leases")

#: Seconds after another daemon's lease expires before taking it is tried (clock steps, rounding).
TAKE_SLACK = 0.05


def lease_timeout(value: object) -> float:
    """Return INOTIFIER_LEASE_TIMEOUT as seconds; ImproperlyConfigured unless it is a number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        raise ImproperlyConfigured(f"INOTIFIER_LEASE_TIMEOUT must be a number of seconds >= 1, not {value!r}")
    return float(value)


class LeaseKeeper:
    """Hold the leases (``WatchLease`` rows) of the exclusive watches this daemon wants.

    ``sync(wanted)`` renews the leases held and takes the free or expired ones
    among ``wanted`` (the exclusive rows this daemon would watch); it returns
    the ids held, and the desired state keeps only those. ``check(now)``, run
    by the loop before it delivers any event, renews every third of the
    timeout and drops a lease whose local deadline passed: the deadline is the
    ``time.monotonic()`` taken *before* the last successful renewal was sent,
    plus the timeout, minus a fifth of it, so a holder that cannot renew (the
    database unreachable, the loop stalled) stops watching before the lease
    ends in the database and another daemon may take it. Never two holders.
    Leases no longer wanted are freed once the reconcile has removed their
    watch (``applied()``); all of them at a clean stop (``release_all()``).
    """

    def __init__(self, hostname: str, guard: DatabaseGuard, timeout: float) -> None:
        self.hostname = hostname[:255]
        self.guard = guard
        self.timeout = timeout
        self.renew_every = timeout / 3
        self.margin = timeout / 5
        self.token = uuid.uuid4().hex  # this process: a namesake daemon is another holder
        self.held: dict[int, float] = {}  # watch id -> local deadline (time.monotonic())
        self.wanted: frozenset[int] = frozenset()
        self.next_pass = math.inf  # when to renew or try again (time.monotonic())
        self._unwanted: set[int] = set()  # held, no longer wanted: freed once their watch is gone

    def sync(self, wanted: Iterable[int]) -> frozenset[int]:
        """Renew and take the leases of ``wanted``; return the ids this daemon holds now."""
        self.wanted = frozenset(wanted)
        for watch_id in set(self.held) - self.wanted:
            del self.held[watch_id]
            self._unwanted.add(watch_id)
        now = time.monotonic()
        self._pass(now)
        self._expire(now)
        return frozenset(self.held)

    def check(self, now: float) -> bool:
        """Renew when due, drop leases past their deadline; return True when the ids held changed."""
        before = set(self.held)
        if now >= self.next_pass:
            self._pass(now)
        self._expire(time.monotonic())
        return set(self.held) != before

    def next_check(self) -> float:
        """Return when ``check()`` has something to do (``time.monotonic()``)."""
        return min(self.next_pass, *self.held.values()) if self.held else self.next_pass

    def applied(self) -> None:
        """Free the leases no longer wanted: their watches are gone now."""
        if self._unwanted:
            self._release(self._unwanted)

    def release_all(self) -> int:
        """Free every lease held (a clean stop); return how many were freed."""
        ids = set(self.held) | self._unwanted
        self.held.clear()
        return self._release(ids) if ids else 0

    # -- inside -------------------------------------------------------------------------

    def _pass(self, now: float) -> None:
        from ..models import WatchLease

        if not self.wanted:
            self.next_pass = math.inf
            return
        done, result = self.guard.call(
            lambda: WatchLease.objects.acquire(self.wanted, self.hostname, self.token, self.timeout)
        )
        if not done or result is None:
            self.next_pass = now + min(1.0, self.renew_every)  # the guard spaces the tries out
            return
        held, wait = result
        deadline = now + self.timeout - self.margin  # ``now`` was taken before the statements went
        for watch_id in set(self.held) - held:
            logger.warning("the lease of exclusive watch #%d was taken by another daemon", watch_id)
        taken = held - set(self.held)
        if taken:
            logger.info("took the lease of exclusive watch(es) %s", ", ".join(f"#{i}" for i in sorted(taken)))
        self.held = dict.fromkeys(held, deadline)
        self.next_pass = now + self.renew_every
        if wait is not None:  # try another daemon's lease as soon as it ends
            self.next_pass = min(self.next_pass, now + wait + TAKE_SLACK)

    def _expire(self, now: float) -> None:
        for watch_id, deadline in list(self.held.items()):
            if now >= deadline:
                del self.held[watch_id]
                logger.warning(
                    "the lease of exclusive watch #%d could not be renewed for %.0f s (database "
                    "unavailable?): stopping it, so that another daemon can take it",
                    watch_id,
                    self.timeout - self.margin,
                )

    def _release(self, ids: set[int]) -> int:
        from ..models import ConfigVersion, WatchLease

        def release() -> int:
            freed = WatchLease.objects.release(self.token, ids)
            if freed:
                ConfigVersion.bump()  # the other daemons take them at once (NOTIFY) or at their poll
            return freed

        done, freed = self.guard.call(release, force=True)
        if done:
            self._unwanted -= ids
            if freed:
                logger.info("released %d exclusive watch lease(s)", freed)
        return freed or 0
