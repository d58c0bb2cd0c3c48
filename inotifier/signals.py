"""One Django signal per inotify event, each sent with the pyinotify event as ``event=``."""

from __future__ import annotations

import weakref
from typing import Any

from django.dispatch import Signal


class SenderCache(weakref.WeakKeyDictionary[Any, Any]):
    """Django's per-sender receiver cache, for every sender Django accepts.

    ``Signal(use_caching=True)`` keeps its cache in a WeakKeyDictionary, which
    refuses ``None``, a str or an int as a key (``TypeError: cannot create weak
    reference``): such a send would fail once a receiver is connected. Here
    those senders are simply not cached (Django then builds their receiver
    list at each send, as an uncached Signal does); every other sender is.
    """

    data: dict[Any, Any]  # WeakKeyDictionary's own storage: weakref(key) -> value

    def get(self, key: Any, default: Any = None) -> Any:
        # WeakKeyDictionary.get's own body, inlined: this runs twice per send.
        try:
            return self.data.get(weakref.ref(key), default)
        except TypeError:  # not weakly referenceable, or not hashable
            return default

    def __setitem__(self, key: Any, value: Any) -> None:
        try:
            super().__setitem__(key, value)
        except TypeError:
            pass


class EventSignal(Signal):
    """A Signal that caches its receivers per sender, and accepts any sender.

    The daemon sends these thousands of times a second with the same sender
    (the processor instance): Django then reuses the receiver list of that
    sender instead of rebuilding it at every send (connect and disconnect clear
    the cache). A sender that cannot be cached (``None``, a string), as code
    firing these signals by hand uses, is served uncached.
    """

    def __init__(self) -> None:
        super().__init__(use_caching=True)
        self.sender_receivers_cache = SenderCache()


# Each signal is sent with ``sender`` = the processor instance and ``event`` = the
# pyinotify Event (``event.pathname``, ``event.maskname``, ``event.dir``, ...).
in_access = EventSignal()
in_attrib = EventSignal()
in_close_nowrite = EventSignal()
in_close_write = EventSignal()
in_create = EventSignal()
in_delete = EventSignal()
in_delete_self = EventSignal()
in_ignored = EventSignal()
in_modify = EventSignal()
in_move_self = EventSignal()
in_moved_from = EventSignal()
in_moved_to = EventSignal()
in_open = EventSignal()
in_q_overflow = EventSignal()
in_unmount = EventSignal()

#: Event name (``"IN_CREATE"``) -> signal.
SIGNALS: dict[str, Signal] = {
    "IN_ACCESS": in_access,
    "IN_ATTRIB": in_attrib,
    "IN_CLOSE_NOWRITE": in_close_nowrite,
    "IN_CLOSE_WRITE": in_close_write,
    "IN_CREATE": in_create,
    "IN_DELETE": in_delete,
    "IN_DELETE_SELF": in_delete_self,
    "IN_IGNORED": in_ignored,
    "IN_MODIFY": in_modify,
    "IN_MOVE_SELF": in_move_self,
    "IN_MOVED_FROM": in_moved_from,
    "IN_MOVED_TO": in_moved_to,
    "IN_OPEN": in_open,
    "IN_Q_OVERFLOW": in_q_overflow,
    "IN_UNMOUNT": in_unmount,
}

# Lifecycle of the daemon, sent with sender=the Daemon class and daemon=the running instance.
daemon_started = Signal()
daemon_stopping = Signal()
reconciled = Signal()  # sent with ``changes`` (a reconcile.Plan summary dict)
#: Sent every 10 000 directories of a large recursive set-up, and once at its end, with
#: ``watch`` (the WatchSpec), ``directories`` (watched so far) and ``done``.
setup_progress = Signal()
#: Sent after a catch-up scan delivered what changed while the watch could not see it, with
#: ``watch`` (the WatchSpec), ``reason`` ("start", "added", "reappeared", "overflow") and
#: ``count`` (the events it delivered): receivers keeping their own state resync it.
rescanned = Signal()
