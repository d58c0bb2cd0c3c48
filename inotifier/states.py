"""The states of a watch: one vocabulary for the daemon, the models, the admin and the commands."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class State(models.TextChoices):
    """What the daemon reports about one watch (``WatchState.state``)."""

    ACTIVE = "active", _("active")
    MISSING = "missing", _("missing")
    ERROR = "error", _("error")


#: Shown instead of a stored state when the daemon that reported it is not alive
#: (stopped, killed, or its heartbeat too old): the state is only as good as its daemon.
UNKNOWN = "unknown"
UNKNOWN_LABEL = _("unknown (daemon not running)")

#: Share of the kernel's inotify watch limit past which the daemon warns (log, admin, metrics).
KERNEL_WATCHES_WARNING = 0.9


def near_watch_limit(used: int, limit: int | None) -> bool:
    """Return True when ``used`` kernel watches are at least KERNEL_WATCHES_WARNING of ``limit``."""
    return limit is not None and limit > 0 and used >= KERNEL_WATCHES_WARNING * limit


class HandoffState(models.TextChoices):
    """Where one outbox row stands on its way to the task queue (``OutboxEntry.state``)."""

    PENDING = "pending", _("pending")  # written, not yet handed to the engine
    FAILED = "failed", _("failed (retrying)")  # the engine refused it; tried again after a backoff
    DEAD = "dead", _("dead letter")  # failed for a reason retrying cannot fix; waits for an admin
    DONE = "done", _("done")  # the engine accepted it (kept for INOTIFIER_OUTBOX_MAX_AGE / _MAX_ROWS)
