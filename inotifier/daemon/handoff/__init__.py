"""The outbox in the daemon: the buffer TaskDispatcher appends to, its writer and its dispatcher.

One role per module: ``buffer`` (the rows in memory, the settings), ``writer``
(the thread that makes them durable), ``dispatcher`` (the thread that hands
durable rows to Celery or Django's tasks). ``Handoff`` puts them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ... import handoff
from ...escaping import get_logger
from ...states import HandoffState
from ..dbguard import DatabaseGuard
from ..sample import Family
from .buffer import OutboxBuffer, OutboxConfig
from .dispatcher import OutboxDispatcher
from .writer import OutboxWriter

__all__ = ["Handoff", "OutboxBuffer", "OutboxConfig", "OutboxDispatcher", "OutboxWriter"]

logger = get_logger("inotifier.daemon.handoff")


class Handoff:
    """The daemon's outbox: ``install()`` at set-up, threads started when a TaskDispatcher binds.

    ``stopping`` tells the buffer when not to wait for room any more (the
    daemon's stop flag). ``stop()`` writes what waits (for a while during an
    outage) and stops both threads; rows still pending in the table are handed
    off by the next daemon that runs.
    """

    def __init__(
        self, stopping: Callable[[], bool] = lambda: False, config: OutboxConfig | None = None
    ) -> None:
        self.config = config or OutboxConfig.from_settings()
        self.buffer = OutboxBuffer(self.config.capacity, stopping, self.start)
        self.writer: OutboxWriter | None = None
        self.dispatcher: OutboxDispatcher | None = None

    def install(self) -> Handoff:
        """Be the sink TaskDispatchers bound from now on append to; start at once if told to dispatch."""
        handoff.install(self.buffer)
        if self.config.dispatch:
            self.start()
        return self

    def start(self) -> None:
        """Start the writer, and the dispatcher unless INOTIFIER_OUTBOX_DISPATCH is False (idempotent)."""
        if self.writer is None:
            dispatcher = None
            if self.config.dispatch is not False:
                dispatcher = self.dispatcher = OutboxDispatcher(self.config)
                dispatcher.start()
            wake = dispatcher.wake.set if dispatcher is not None else (lambda: None)
            self.writer = OutboxWriter(self.buffer, self.config, on_committed=wake)
            self.writer.start()
            logger.info("outbox: writer started%s", ", dispatching to the task engines" if dispatcher else "")

    def stop(self) -> None:
        """Write what waits, stop the threads, and stop being the installed sink."""
        handoff.uninstall(self.buffer)
        if self.writer is not None:
            self.writer.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        buffer = self.buffer
        if buffer.appended:
            logger.info(
                "outbox: %d rows written, %d refused by the database, %d lost at stop; "
                "%d handed off by this daemon; delivery paused %d times",
                buffer.committed - buffer.rejected - buffer.lost,
                buffer.rejected,
                buffer.lost,
                self.dispatcher.sent if self.dispatcher else 0,
                buffer.paused,
            )

    def families(self, host: str, guard: DatabaseGuard | None) -> list[Family]:
        """Return the outbox's metric families (none until a TaskDispatcher started the outbox).

        The rows this host wrote that are not done, by state, and the age of the
        oldest pending one, are read from the table (one grouped query on the
        ``inotifier_outbox_watch`` index, at each sample); the rows written and
        handed off are this daemon's counters.
        """
        if self.writer is None:
            return []
        buffer = self.buffer
        written = buffer.committed - buffer.rejected - buffer.lost
        sent = self.dispatcher.sent if self.dispatcher else 0
        read = guard.call(lambda: _open_rows(host))[1] if guard is not None else None
        return outbox_families(written, sent, read)


#: The states of an outbox row that is not done, as the metrics name them.
OPEN = (HandoffState.PENDING.value, HandoffState.FAILED.value, HandoffState.DEAD.value)


def outbox_families(
    written: int, handed_off: int, table: tuple[dict[str, int], float | None] | None
) -> list[Family]:
    """Return the outbox's families: this daemon's counters, and the table's figures when read.

    ``table`` is (open rows of this host by state, ``time.time()`` of the oldest
    pending or failed one), None when the database could not be read.
    """
    families = [
        Family(
            "inotifier_outbox_rows_written",
            "counter",
            "Outbox rows this daemon made durable.",
            samples=(((), float(written)),),
        ),
        Family(
            "inotifier_outbox_handed_off",
            "counter",
            "Outbox rows this daemon's dispatcher handed to a task engine.",
            samples=(((), float(handed_off)),),
        ),
    ]
    if table is not None:
        counts, oldest = table
        families.append(
            Family(
                "inotifier_outbox_rows",
                "gauge",
                "Outbox rows this host wrote that are not handed off yet, by state.",
                ("state",),
                tuple(((state,), float(counts.get(state, 0))) for state in OPEN),
            )
        )
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        families.append(
            Family(
                "inotifier_outbox_oldest_pending_age_seconds",
                "gauge",
                "Age of this host's oldest outbox row waiting to be handed off (0: none).",
                samples=(((), age),),
            )
        )
    return families


def _open_rows(host: str) -> tuple[dict[str, int], float | None]:
    from django.db.models import Count, Min

    from ...outbox import OutboxEntry

    rows = OutboxEntry.objects.filter(state__in=OPEN, host=host)
    counts = {row["state"]: row["n"] for row in rows.values("state").annotate(n=Count("id")).order_by()}
    oldest = rows.exclude(state=HandoffState.DEAD.value).aggregate(t=Min("created"))["t"]
    return counts, oldest.timestamp() if oldest is not None else None
