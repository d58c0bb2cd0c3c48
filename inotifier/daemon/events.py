"""The event a processor gets (a pyinotify ``Event``, built for about a microsecond); the daemon's signals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyinotify

from .. import signals as inotifier_signals
from ..escaping import get_logger
from ..masks import IN_ISDIR, event_maskname

logger = get_logger("inotifier.daemon")


class InotifierEvent(pyinotify.Event):
    """A pyinotify Event built without pyinotify's per-event costs.

    It has every attribute pyinotify's Event has (wd, mask, maskname, cookie,
    path, name, pathname, dir and, for paired moves, src_pathname), and
    ``synthetic``: True for an event the daemon made up for a file it found
    already there (a new or re-created directory listed once it is watched),
    and ``count``: how many events of its type it stands for (more than 1 only
    on a settled watch, which collapses a path's events).
    """

    synthetic = False
    count = 1

    def __init__(self, **attrs: Any) -> None:  # for tests and users; the daemon uses make_event
        self.__dict__.update(attrs)


#: A processor: a pyinotify ``ProcessEvent`` instance (or any callable taking an event).
Processor = Callable[[pyinotify.Event], object]


def make_event(wd: int, mask: int, cookie: int, name: str, path: str, pathname: str) -> InotifierEvent:
    """Return an event; ``__new__`` + one dict keeps this at about a microsecond (bench: drain)."""
    event = InotifierEvent.__new__(InotifierEvent)
    event.__dict__ = {
        "wd": wd,
        "mask": mask,
        "maskname": event_maskname(mask),
        "cookie": cookie,
        "path": path,
        "name": name,
        "pathname": pathname,
        "dir": bool(mask & IN_ISDIR),
    }
    return event


def tell_receivers(name: str, sender: object, **named: object) -> None:
    """Send the signal ``inotifier.signals.<name>`` robustly.

    A receiver that raises is logged with its traceback; the other receivers
    still hear it and the daemon goes on (the daemon's life signals, overflow,
    catch-up: every signal the daemon sends itself rather than a processor).
    """
    signal = getattr(inotifier_signals, name)
    for receiver, result in signal.send_robust(sender=sender, **named):
        if isinstance(result, Exception):
            logger.error("a %s receiver (%r) raised", name, receiver, exc_info=result)
