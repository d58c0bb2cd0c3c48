"""A tree watch's directories as they change: new ones watched, renamed ones followed, moved-out ones dropped.

``watches.ActiveWatch`` holds one ``Tree`` and hands it every IN_ISDIR event of
its tree; the tree asks of the watch only what ``TreeOwner`` names.
"""

from __future__ import annotations

import os
from typing import Protocol, Self, TypeVar

from ..escaping import get_logger
from ..masks import IN_CREATE, IN_DONT_FOLLOW, IN_MOVED_FROM, IN_MOVED_TO, IN_ONLYDIR
from ..specs import WatchSpec, is_excluded
from .kernel import Kind, WatchError, open_subdir
from .table import Owner, WatchTable
from .watchparts import Config

logger = get_logger("inotifier.daemon")


class TreeOwner(Owner, Protocol):
    """What following a tree asks of the watch whose tree it is."""

    spec: WatchSpec
    cfg: Config
    #: Where the root really is (None: gone) and whether it is a directory.
    where: tuple[str | None, bool]

    def expected_real(self, path: str) -> str: ...

    def walk(
        self, table: WatchTable[Self], fd: int, top: str, synthesize: bool, descend: bool = True
    ) -> WatchError | None: ...

    def tree_problem(self, problem: WatchError) -> None: ...


T = TypeVar("T", bound=TreeOwner)


class Tree:
    """The directories of one tree watch moved out of it, and what to do with each IN_ISDIR event.

    A directory moved out (IN_MOVED_FROM) may be a rename within the tree: when
    the IN_MOVED_TO of the same cookie follows, its kernel watches are renamed,
    not made again. Those for which none came are dropped by ``drop_moved_out``,
    which the loop runs once the events read so far are processed.
    """

    __slots__ = ("moved_out",)

    def __init__(self) -> None:
        self.moved_out: dict[int, str] = {}  # cookie -> old path of a directory moved out

    def dir_event(self, watch: T, table: WatchTable[T], mask: int, cookie: int, pathname: str) -> bool:
        """Follow one IN_ISDIR event of ``watch``'s tree; True when a directory moved out."""
        if mask & IN_MOVED_FROM:
            self.moved_out[cookie] = pathname
            return True
        if not mask & (IN_CREATE | IN_MOVED_TO) or not watch.spec.auto_add:
            return False
        excludes = watch.cfg.excludes
        if excludes and is_excluded(pathname, excludes):
            return False
        old = self.moved_out.pop(cookie, None) if mask & IN_MOVED_TO else None
        if old is not None:
            table.rename(watch, old, pathname)
        elif watch.where[0] is not None:  # (not while the root itself is gone)
            self._watch_new_dir(watch, table, pathname)
        return False

    def drop_moved_out(self, watch: T, table: WatchTable[T]) -> None:
        """Drop the kernel watches of directories moved out of the tree (no IN_MOVED_TO followed)."""
        moved, self.moved_out = self.moved_out, {}
        for old in moved.values():
            table.detach_under(watch, old)

    @staticmethod
    def _watch_new_dir(watch: T, table: WatchTable[T], pathname: str) -> None:
        """Watch a directory that appeared in the tree, and deliver what it already holds."""
        try:
            fd = open_subdir(pathname, watch.expected_real(pathname))
        except WatchError as exc:
            if exc.kind is not Kind.MISSING:
                logger.warning("%s", exc.message())
            return
        try:
            table.attach(watch, pathname, fd, (watch.kernel_mask | IN_ONLYDIR) & ~IN_DONT_FOLLOW)
            # Files (and directories) created before the watch existed are delivered.
            problem = watch.walk(table, fd, pathname, synthesize=True)
        except WatchError as exc:
            if exc.kind is not Kind.MISSING:
                logger.warning("%s", exc.message())
            return
        finally:
            os.close(fd)
        if problem is not None:
            watch.tree_problem(problem)
