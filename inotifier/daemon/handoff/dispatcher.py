"""The outbox dispatcher: a thread that hands due outbox rows to their task engines."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db import Error, connections, transaction
from django.db.models import F
from django.utils import timezone

from ...escaping import get_logger, printable
from ...handoff.engines import Engine, TaskRefError, resolve
from ...states import HandoffState
from ..dbguard import Backoff, refresh_connection
from .buffer import OutboxConfig

logger = get_logger("inotifier.daemon.handoff")

#: Characters of an error message kept on the row.
ERROR_CHARS = 2000


class Claimed(NamedTuple):
    """An outbox row as the dispatcher reads it (plain values: no model instance per row)."""

    id: int
    task: str
    payload: dict[str, Any]
    attempts: int


class Outage:
    """One task's engine being unreachable: when to try again, logged once."""

    __slots__ = ("backoff", "retry_at")

    def __init__(self, cap: float) -> None:
        self.backoff = Backoff(first=1.0, cap=cap)
        self.retry_at = 0.0


class OutboxDispatcher(threading.Thread):
    """Claim due outbox rows, hand them to their engine, record what became of each.

    On PostgreSQL the rows are claimed with ``SELECT ... FOR UPDATE SKIP
    LOCKED`` in the transaction that records the outcome, so several daemons
    (hosts) share the work and a row is never sent by two at once; a daemon
    killed meanwhile leaves its rows to the next claim. SQLite has one writer:
    rows are read, sent, then updated. A row is done only once the engine
    accepted it. When the engine is unreachable (an error of its
    ``transient`` kinds) the row is *failed* and retried after a backoff, as
    long as it takes, and that task waits as a whole (one warning per outage);
    any other error counts an attempt, and after ``max_attempts`` the row is a
    dead letter. The retention of done rows runs here too.
    """

    def __init__(
        self,
        config: OutboxConfig,
        resolve_engine: Callable[[str], Engine] | None = None,
    ) -> None:
        super().__init__(name="inotifier-dispatch", daemon=True)
        self.config = config
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.sent = 0
        self._resolve = resolve_engine or (lambda dotted: resolve(dotted, config.publish_timeout))
        self._engines: dict[str, Engine | TaskRefError] = {}
        self._outages: dict[str, Outage] = {}
        self._db = Backoff(first=1.0, cap=30.0)
        self._next_prune = time.monotonic() + 1.0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.cycle()
                except Exception:
                    logger.exception("outbox: unexpected error in the dispatcher; going on")
                    self.stopping.wait(1.0)
                self.wake.wait(self._next_wait())
                self.wake.clear()
        finally:
            for engine in self._engines.values():
                if not isinstance(engine, TaskRefError):
                    with contextlib.suppress(Exception):
                        engine.close()
            with contextlib.suppress(Exception):
                connections.close_all()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout)

    def _next_wait(self) -> float:
        wait = self.config.poll_interval
        if self._db.since is not None:
            return self._db.delay()
        now = time.monotonic()
        for outage in self._outages.values():
            wait = min(wait, max(0.05, outage.retry_at - now))
        return wait

    # -- one cycle ------------------------------------------------------------------------

    def cycle(self, deadline: float | None = None) -> int:
        """Hand off due rows until none is left (or ``deadline``); prune when due; return rows sent."""
        sent = 0
        try:
            refresh_connection()
            while not self.stopping.is_set():
                handled = self.dispatch_batch()
                sent += handled
                if not handled or (deadline is not None and time.monotonic() >= deadline):
                    break
            if self.config.max_age or self.config.max_rows:
                self._prune()
        except Error as exc:  # DatabaseError, and InterfaceError (a connection closed under it)
            if self._db.since is None:
                logger.warning("outbox: database unavailable (%s); the dispatcher retries", str(exc).strip())
            self._db.failed()
            with contextlib.suppress(Exception):
                connections.close_all()
            return sent
        lasted = self._db.recovered()
        if lasted is not None:
            logger.warning("outbox: database back after %.1f s; dispatching again", lasted)
        return sent

    def _blocked(self) -> list[str]:
        now = time.monotonic()
        return [task for task, outage in self._outages.items() if outage.retry_at > now]

    def dispatch_batch(self) -> int:
        """Claim one batch of due rows and hand them off; return the rows handled (0: none due)."""
        from ...outbox import OutboxEntry

        lock = connections[OutboxEntry.objects.db].features.has_select_for_update_skip_locked
        if lock:
            with transaction.atomic():
                return self._hand_off(self._claim(lock=True))
        return self._hand_off(self._claim(lock=False))

    def _claim(self, lock: bool) -> list[Claimed]:
        """Return up to a batch of due rows, retries first, locked (skipping locked ones) if ``lock``."""
        from ...outbox import OutboxEntry

        now = timezone.now()
        blocked = self._blocked()
        rows: list[Claimed] = []
        for state in (HandoffState.FAILED, HandoffState.PENDING):  # retries first: the oldest rows
            query = OutboxEntry.objects.due(state, now)
            if blocked:
                query = query.exclude(task__in=blocked)
            if lock:
                query = query.select_for_update(skip_locked=True)
            limit = self.config.batch - len(rows)
            rows += [Claimed(*values) for values in query.values_list(*Claimed._fields)[:limit]]
            if len(rows) >= self.config.batch:
                break
        return rows

    def _hand_off(self, rows: list[Any]) -> int:
        if not rows:
            return 0
        by_task: dict[str, list[Any]] = {}
        for row in rows:
            by_task.setdefault(row.task, []).append(row)
        done: list[int] = []
        failures: list[tuple[Any, str, bool]] = []  # (row, error, transient)
        for task, group in by_task.items():
            self._send_group(task, group, done, failures)
        now = timezone.now()
        with transaction.atomic():
            self._record(done, failures, now)
        return len(done) + len(failures) or len(rows)

    def _send_group(self, task: str, group: list[Any], done: list[int], failures: list[Any]) -> None:
        engine = self._engine(task)
        if isinstance(engine, TaskRefError):
            failures.extend((row, str(engine), False) for row in group)
            return
        step = max(1, engine.batch)
        for start in range(0, len(group), step):
            chunk = group[start : start + step]
            error = self._send(engine, task, chunk)
            if error is None:
                done.extend(row.id for row in chunk)
                continue
            message, transient = error
            if transient:
                # The engine is down: these rows count a failed attempt, the rest of the
                # task's rows stay pending untouched until the retry is due.
                failures.extend((row, message, True) for row in chunk)
                return
            if len(chunk) > 1:
                # One row may be the culprit: each is tried alone, so the others go through.
                for row in chunk:
                    alone = self._send(engine, task, [row])
                    if alone is None:
                        done.append(row.id)
                    else:
                        failures.append((row, alone[0], alone[1]))
                        if alone[1]:
                            return
            else:
                failures.append((chunk[0], message, False))

    def _send(self, engine: Engine, task: str, chunk: list[Any]) -> tuple[str, bool] | None:
        """Send ``chunk``; None when accepted, else (error, transient)."""
        try:
            engine.send([row.payload for row in chunk])
        except engine.transient as exc:
            self._engine_down(task, engine, exc)
            return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], True
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], False
        outage = self._outages.pop(task, None)
        if outage is not None:
            lasted = outage.backoff.recovered() or 0.0
            logger.warning("outbox: %s (task %s) accepts again after %.1f s", engine.name, task, lasted)
        return None

    def _engine(self, task: str) -> Engine | TaskRefError:
        engine = self._engines.get(task)
        if engine is None:
            try:
                engine = self._resolve(task)
            except TaskRefError as exc:
                engine = exc
            except Exception as exc:
                engine = TaskRefError(f"task {task!r} cannot be used: {type(exc).__name__}: {exc}")
            self._engines[task] = engine
        return engine

    def _engine_down(self, task: str, engine: Engine, exc: BaseException) -> None:
        outage = self._outages.get(task)
        if outage is None:
            outage = self._outages[task] = Outage(self.config.retry_cap)
            logger.warning(
                "outbox: %s unavailable for task %s (%s: %s); its rows wait and are retried",
                engine.name,
                task,
                type(exc).__name__,
                printable(str(exc), backslash=False),
            )
        outage.retry_at = time.monotonic() + outage.backoff.failed()

    def _record(self, done: list[int], failures: list[tuple[Any, str, bool]], now: datetime) -> None:
        from ...outbox import OutboxEntry

        objects = OutboxEntry.objects
        for start in range(0, len(done), 1000):
            ids = done[start : start + 1000]
            objects.filter(pk__in=ids).update(
                state=HandoffState.DONE, done=now, attempts=F("attempts") + 1, last_error=""
            )
        self.sent += len(done)
        for row, error, transient in failures:
            attempts = row.attempts + 1
            if transient or attempts < self.config.max_attempts:
                outage = self._outages.get(row.task)
                delay = outage.backoff.delay() if outage is not None else _retry_delay(attempts)
                state = HandoffState.FAILED
            else:
                delay = 0.0
                state = HandoffState.DEAD
                logger.error(
                    "outbox: row %d (task %s) is a dead letter after %d attempts: %s",
                    row.id,
                    row.task,
                    attempts,
                    error,
                )
            objects.filter(pk=row.id).update(
                state=state,
                attempts=attempts,
                last_error=error,
                next_attempt=now + timedelta(seconds=delay),
            )

    def _prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        from ...outbox import OutboxEntry

        config = self.config
        self._next_prune = now + config.prune_interval
        deleted, finished = OutboxEntry.objects.prune(
            config.max_age, config.max_rows, deadline=now + config.prune_budget
        )
        if not finished:
            self._next_prune = now  # go on at the next cycle
        if deleted:
            logger.info("outbox: pruned %d done rows", deleted)


def _retry_delay(attempts: int) -> float:
    """Seconds before another try of a row that failed for its own reason: 1, 2, 4 ... 60."""
    return float(min(60, 2 ** max(0, attempts - 1)))
