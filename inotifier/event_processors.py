"""Built-in event processors: pyinotify ``ProcessEvent`` classes that print or send signals."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import pyinotify

from . import signals
from .conf import app_settings

_IN_ISDIR = pyinotify.IN_ISDIR
_ALL_VALUES = pyinotify.EventsCodes.ALL_VALUES
# event bits (without IN_ISDIR) -> signal, so dispatch is one dict lookup per event.
_SIGNAL_BY_BIT = {
    int(pyinotify.EventsCodes.ALL_FLAGS[name]): signal for name, signal in signals.SIGNALS.items()
}


class AllEventsPrinter(pyinotify.ProcessEvent):
    """Print every event on stdout (or the ``out=`` stream), one line each."""

    def my_init(self, out: TextIO | None = None, **kwargs: Any) -> None:
        self._out = out

    def process_default(self, event: pyinotify.Event) -> None:
        out = self._out or sys.stdout
        out.write(f"{event.maskname} {event.pathname!r}\n")
        out.flush()

    def process_IN_Q_OVERFLOW(self, event: pyinotify.Event) -> None:
        self.process_default(event)


class AllEventsSignaler(pyinotify.ProcessEvent):
    """Send the matching ``inotifier.signals`` signal for every event."""

    def __call__(self, event: pyinotify.Event) -> None:
        # One dict lookup instead of pyinotify's name-building dispatch: this is
        # the per-event hot path of the daemon.
        if self.pevent is not None and self.pevent(event):
            return
        signal = _SIGNAL_BY_BIT.get(event.mask & ~_IN_ISDIR)
        if signal is not None:
            signal.send(sender=self, event=event)


class CreateSignaler(pyinotify.ProcessEvent):
    """Send ``inotifier.signals.in_create`` for IN_CREATE events only."""

    def process_IN_CREATE(self, event: pyinotify.Event) -> None:
        signals.in_create.send(sender=self, event=event)

    def process_IN_Q_OVERFLOW(self, event: pyinotify.Event) -> None:
        signals.in_q_overflow.send(sender=self, event=event)


class CreateViaChunksSignaler(pyinotify.ProcessEvent):
    """Send ``in_create`` once a file arrived through a temporary ``name.part`` file.

    A transfer creates ``name.part``, writes it chunk by chunk, closes it and
    renames it to ``name``. The signal is sent for the final file (the event is
    the IN_MOVED_TO of ``name``, with ``src_pathname`` set) only when the whole
    flow was seen: a ``.part`` file that was not created while watched, or a
    rename to another name, sends nothing. Half-done uploads older than
    ``timeout`` seconds are forgotten. The watch mask needs IN_CREATE,
    IN_MOVED_FROM and IN_MOVED_TO.
    """

    #: Suffix of the temporary file; None reads INOTIFIER_CHUNK_SUFFIX.
    suffix: str | None = None
    #: Seconds a half-done upload is remembered; None reads INOTIFIER_CHUNK_TIMEOUT.
    timeout: float | None = None

    def my_init(self, suffix: str | None = None, timeout: float | None = None, **kwargs: Any) -> None:
        if suffix is not None:
            self.suffix = suffix
        if timeout is not None:
            self.timeout = timeout
        if self.suffix is None:
            self.suffix = str(app_settings.INOTIFIER_CHUNK_SUFFIX)
        if self.timeout is None:
            self.timeout = float(app_settings.INOTIFIER_CHUNK_TIMEOUT)
        if not self.suffix:
            raise ValueError("CreateViaChunksSignaler needs a non-empty suffix")
        self._uploading: dict[str, float] = {}  # pathname of x.part -> created at
        self._moving: dict[int, tuple[str, float]] = {}  # cookie -> (final pathname, since)
        self._next_expiry = 0.0

    def _expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        timeout = float(self.timeout or 0)
        limit = now - timeout
        self._uploading = {p: t for p, t in self._uploading.items() if t >= limit}
        self._moving = {c: v for c, v in self._moving.items() if v[1] >= limit}
        self._next_expiry = now + min(timeout, 60.0)

    def pending(self) -> int:
        """Return how many half-done uploads are remembered."""
        return len(self._uploading) + len(self._moving)

    def process_IN_CREATE(self, event: pyinotify.Event) -> None:
        if not event.dir and event.name.endswith(self.suffix or ""):
            now = time.monotonic()
            self._expire(now)
            self._uploading[event.pathname] = now

    def process_IN_DELETE(self, event: pyinotify.Event) -> None:
        self._uploading.pop(event.pathname, None)

    def process_IN_MOVED_FROM(self, event: pyinotify.Event) -> None:
        created = self._uploading.pop(event.pathname, None)
        if created is not None:
            final = event.pathname[: -len(self.suffix or "")]
            self._moving[event.cookie] = (final, time.monotonic())

    def process_IN_MOVED_TO(self, event: pyinotify.Event) -> None:
        moving = self._moving.pop(event.cookie, None)
        if moving is not None and moving[0] == event.pathname:
            signals.in_create.send(sender=self, event=event)

    def process_IN_Q_OVERFLOW(self, event: pyinotify.Event) -> None:
        signals.in_q_overflow.send(sender=self, event=event)

    def process_default(self, event: pyinotify.Event) -> None:
        pass


#: The processors an admin may pick when INOTIFIER_PROCESSORS is not set.
BUILTIN_PROCESSORS: tuple[str, ...] = (
    "inotifier.event_processors.AllEventsSignaler",
    "inotifier.event_processors.CreateSignaler",
    "inotifier.event_processors.CreateViaChunksSignaler",
    "inotifier.event_processors.AllEventsPrinter",
)
