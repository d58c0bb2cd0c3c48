"""The hand-off point between ``TaskDispatcher`` and whoever makes its rows durable.

The daemon installs its outbox (a bounded buffer written to the database by a
thread of its own) while it runs; elsewhere (pyinotify's own Notifier, a
shell, a test) the fallback installed by the app writes each row at once. The
processor never knows which: it appends a ``Pending`` row and gets a sequence
number, and ``committed`` says how many rows of that sink are durable.
"""

from __future__ import annotations

from typing import Protocol

from .payload import Pending, WatchRef, build_payload

__all__ = [
    "Pending",
    "Sink",
    "WatchRef",
    "build_payload",
    "current",
    "install",
    "set_fallback",
    "uninstall",
]


class Sink(Protocol):
    """Where a TaskDispatcher appends its rows: the daemon's outbox, or a direct writer."""

    @property
    def committed(self) -> int:
        """Return how many rows are durable: every row whose sequence number is below it."""
        ...

    def append(self, row: Pending) -> int:
        """Accept one row (blocking while the sink is full); return its sequence number."""
        ...

    def used(self) -> None:
        """Say that a TaskDispatcher will append here (the daemon starts its writer and dispatcher)."""
        ...


_installed: Sink | None = None
_fallback: Sink | None = None


def install(sink: Sink) -> None:
    """Make ``sink`` the one processors bound from now on append to (the daemon, at start)."""
    global _installed
    _installed = sink


def uninstall(sink: Sink) -> None:
    """Forget ``sink`` if it is the installed one (the daemon, at close)."""
    global _installed
    if _installed is sink:
        _installed = None


def set_fallback(sink: Sink) -> None:
    """Set the sink used when no daemon installed one (the app sets a direct writer when ready)."""
    global _fallback
    _fallback = sink


def current() -> Sink:
    """Return the installed sink, else the fallback; RuntimeError when there is neither."""
    sink = _installed or _fallback
    if sink is None:
        raise RuntimeError("no outbox: add 'inotifier' to INSTALLED_APPS (its app sets the direct writer)")
    return sink
