"""What the loop sleeps on and wakes for: the flags signal handlers set, a wake-up pipe, named deadlines."""

from __future__ import annotations

import os
import selectors
import threading


class Flags:
    """What OS signal handlers ask of the loop: they only set these and wake it."""

    __slots__ = ("hup", "reopen", "resync", "stopping")

    def __init__(self) -> None:
        self.stopping = False
        self.hup = False  # reconcile now (SIGHUP, systemd's ExecReload)
        self.reopen = False  # reopen output files (SIGUSR1)
        self.resync = False  # a full resync is wanted (the database came back)


class Waker:
    """A non-blocking pipe: a write from a thread or a signal ends the loop's ``wait()`` at once.

    Other file descriptors (a LISTEN connection's socket) can be watched too:
    ``wait()`` says which of them are readable.
    """

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closing = threading.RLock()  # wake() may come from another thread (stop(), the reader)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.r, selectors.EVENT_READ)

    def wait(self, timeout: float) -> frozenset[int]:
        """Sleep until woken, one of the watched fds is readable, or ``timeout`` s; return those fds."""
        ready = self.selector.select(timeout)
        if not ready:
            return frozenset()
        return frozenset(key.fd for key, _events in ready if key.fd != self.r)

    def watch(self, fd: int) -> None:
        """Wake the loop when ``fd`` is readable too."""
        self.selector.register(fd, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed)."""
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def wake(self) -> None:
        with self._closing:  # never a write into a descriptor number that close() gave back
            if self.w < 0:
                return  # closed: stopping
            try:
                os.write(self.w, b"r")
            except OSError:
                pass  # full: already awake

    def drain(self) -> None:
        try:
            while os.read(self.r, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.selector.close()
        with self._closing:
            fds, self.r, self.w = (self.r, self.w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


class Deadlines:
    """Named moments (``time.monotonic()``) at which the loop has something to do, each with its period."""

    def __init__(self, **every: float) -> None:
        self.every = dict(every)
        self.at = dict.fromkeys(every, 0.0)  # all due at the first tick

    def due(self, name: str, now: float) -> bool:
        """Return True when ``name`` is due, and set it one period from ``now``."""
        if now < self.at[name]:
            return False
        self.postpone(name, now)
        return True

    def postpone(self, name: str, now: float) -> None:
        """Set ``name`` one period from ``now``."""
        self.at[name] = now + self.every[name]

    def soon(self, name: str) -> None:
        self.at[name] = 0.0

    def next(self, *names: str) -> float:
        return min(self.at[name] for name in names)
