"""The outbox in the daemon: the buffer TaskDispatcher appends to, its writer and its dispatcher.

One role per module: ``buffer`` (the rows in memory, the settings), ``writer``
(the thread that makes them durable), ``dispatcher`` (the thread that hands
durable rows to Celery or Django's tasks). ``Handoff`` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable

from ... import handoff
from ...escaping import get_logger
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
