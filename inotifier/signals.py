"""One Django signal per inotify event, each sent with the pyinotify event as ``event=``."""

from __future__ import annotations

from django.dispatch import Signal

# Each signal is sent with ``sender`` = the processor instance and ``event`` = the
# pyinotify Event (``event.pathname``, ``event.maskname``, ``event.dir``, ...).
# use_caching: the daemon sends these thousands of times a second with the same
# sender; Django then keeps the receiver list per sender instead of rebuilding
# it at every send (connect/disconnect clear the cache).
in_access = Signal(use_caching=True)
in_attrib = Signal(use_caching=True)
in_close_nowrite = Signal(use_caching=True)
in_close_write = Signal(use_caching=True)
in_create = Signal(use_caching=True)
in_delete = Signal(use_caching=True)
in_delete_self = Signal(use_caching=True)
in_ignored = Signal(use_caching=True)
in_modify = Signal(use_caching=True)
in_move_self = Signal(use_caching=True)
in_moved_from = Signal(use_caching=True)
in_moved_to = Signal(use_caching=True)
in_open = Signal(use_caching=True)
in_q_overflow = Signal(use_caching=True)
in_unmount = Signal(use_caching=True)

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

# Lifecycle of the daemon, sent with sender=the Daemon instance.
daemon_started = Signal()
daemon_stopping = Signal()
reconciled = Signal()  # sent with ``changes`` (a reconcile.Plan summary dict)
