"""The kernel watches held against the kernel's limit: one WARNING each time 90 % is passed."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..escaping import get_logger
from ..states import KERNEL_WATCHES_WARNING, near_watch_limit
from .kernel import watch_limit

logger = get_logger("inotifier.daemon")

#: Below this share of the limit the warning is re-armed: a tree that hovers around 90 %
#: (a directory made and removed over and over) warns once, not at every poll.
REARM_BELOW = 0.85


class WatchBudget:
    """Compare the kernel watches in use with the effective limit; warn once per crossing.

    ``name`` and ``limit`` are those of the last ``check()`` (the status rows and the
    metrics show them). The limit is per user: every inotify user of the same uid
    (editors, other watchers) takes from it too, which this daemon cannot count.
    """

    def __init__(self, read_limit: Callable[[], tuple[str, int | None]] = watch_limit) -> None:
        self.name = "fs.inotify.max_user_watches"
        self.limit: int | None = None
        self.warned = False
        self._read_limit = read_limit

    def check(self, used: int) -> bool:
        """Read the limit again; warn when ``used`` passes 90 % of it; return True while it does."""
        self.name, limit = self._read_limit()
        self.limit = limit
        near = near_watch_limit(used, limit)
        if near and not self.warned:
            self.warned = True
            assert limit is not None
            logger.warning(
                "%d kernel watches in use: %.0f %% of the limit %s = %d (shared by every inotify user "
                "of uid %d); new directories go unwatched once it is reached: raise it (e.g. sysctl %s=%d)",
                used,
                100 * used / limit,
                self.name,
                limit,
                os.getuid(),
                self.name,
                max(2 * limit, used + 8192),
            )
        elif self.warned and (limit is None or used < REARM_BELOW * limit):
            self.warned = False
            logger.info(
                "kernel watches back under %.0f %% of the limit: %d of %s = %s",
                100 * KERNEL_WATCHES_WARNING,
                used,
                self.name,
                limit,
            )
        return near
