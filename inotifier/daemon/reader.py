"""The reader thread: drains the inotify fd into the daemon's own bounded memory.

pyinotify reads the kernel queue from the same thread that runs the processors,
so a fast writer overflows the kernel queue (16 384 events by default) while a
batch is being processed. Here a dedicated thread does nothing but ``read()``
the inotify fd into a bounded buffer of raw chunks (``os.read`` releases the
GIL, so it keeps up with the kernel); the daemon's loop parses and processes
from that buffer at its own pace.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

from ..escaping import get_logger

logger = get_logger("inotifier.daemon.reader")

#: Bytes asked for per read(): room for thousands of events.
READ_SIZE = 1 << 18


class Reader(threading.Thread):
    """Drain an inotify fd into a bounded in-memory queue of raw chunks.

    ``wake`` is called (from this thread) when the queue goes from empty to
    non-empty, so the consumer can sleep in ``select`` until there is work.
    When ``max_bytes`` are buffered the reader stops reading until the consumer
    catches up; the kernel queue then absorbs the difference.
    """

    def __init__(self, fd: int, wake: Callable[[], None], max_bytes: int) -> None:
        super().__init__(name="inotifier-reader", daemon=True)
        self.fd = fd
        self.wake = wake
        self.max_bytes = max_bytes
        self.chunks: deque[bytes] = deque()
        # Two counters, each written by one thread only, so no lock is needed.
        self.added = 0  # bytes appended (reader thread)
        self.removed = 0  # bytes taken (consumer thread)
        self.peak = 0
        self._space = threading.Event()
        self._space.set()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        #: time.time() when stop() was called: what the kernel queued later is never read.
        self.stopped_at: float | None = None

    def run(self) -> None:
        fd = self.fd
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        read = os.read
        chunks = self.chunks
        while not self._stopping:
            if self.buffered >= self.max_bytes:
                self._space.clear()
                if self.buffered >= self.max_bytes:
                    self._space.wait(0.5)
                continue
            try:
                ready = poller.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if self._stopping:
                break
            for rfd, _ in ready:
                if rfd != fd:
                    continue
                while True:
                    try:
                        data = read(fd, READ_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:
                        logger.exception("reading the inotify fd failed")
                        return
                    if not data:
                        break
                    was_empty = not chunks
                    chunks.append(data)
                    self.added += len(data)
                    buffered = self.added - self.removed
                    if buffered > self.peak:
                        self.peak = buffered
                    if was_empty:
                        self.wake()
                    if self.buffered >= self.max_bytes:
                        break

    def take(self) -> bytes | None:
        """Return the oldest raw chunk, or None when the queue is empty (consumer side)."""
        try:
            data = self.chunks.popleft()
        except IndexError:
            return None
        self.removed += len(data)
        if not self._space.is_set() and self.buffered < self.max_bytes:
            self._space.set()
        return data

    def take_many(self, limit: int) -> bytes | None:
        """Return the oldest raw chunks joined, up to about ``limit`` bytes (consumer side).

        During a burst the reader produces many small chunks; handling them as
        one keeps the per-chunk overhead off the per-event cost.
        """
        first = self.take()
        if first is None or not self.chunks:
            return first
        parts = [first]
        size = len(first)
        while size < limit:
            data = self.take()
            if data is None:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    @property
    def buffered(self) -> int:
        """Return the bytes waiting in the queue."""
        return self.added - self.removed

    def stop(self) -> None:
        """Ask the thread to finish and wait for it."""
        if self.stopped_at is None:
            self.stopped_at = time.time()
        self._stopping = True
        self._space.set()
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        # Closed once: a second stop() must not close numbers the process has given out since.
        fds, self._stop_r, self._stop_w = (self._stop_r, self._stop_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
