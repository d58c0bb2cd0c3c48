"""One Django signal per inotify event, each sent with the pyinotify event as ``event=``."""

from __future__ import annotations

from django.dispatch import Signal

# Each signal is sent with ``sender`` = the processor instance and ``event`` = the
# pyinotify Event (``event.pathname``, ``event.maskname``, ``event.dir``, ...).
in_access = Signal()
in_attrib = Signal()
in_close_nowrite = Signal()
in_close_write = Signal()
in_create = Signal()
in_delete = Signal()
in_delete_self = Signal()
in_ignored = Signal()
in_modify = Signal()
in_move_self = Signal()
in_moved_from = Signal()
in_moved_to = Signal()
in_open = Signal()
in_q_overflow = Signal()
in_unmount = Signal()

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
