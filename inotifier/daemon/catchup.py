"""Catch-up: at each start of a watch, deliver what changed while no daemon watched it."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, TypeAlias

from .. import signals as inotifier_signals
from ..escaping import get_logger
from ..masks import IN_CLOSE_WRITE, IN_CREATE, IN_ISDIR
from ..specs import is_excluded
from ..states import State
from .kernel import O_SUBDIR
from .walk import MAX_DEPTH
from .watches import ActiveWatch
from .watermarks import Watermarks

if TYPE_CHECKING:
    Listing: TypeAlias = os._ScandirIterator[str]  # what os.scandir(fd) returns

logger = get_logger("inotifier.daemon.catchup")

#: Entries listed between two looks at the clock (the scan yields to the loop there).
STEP_ENTRIES = 512


class Scan:
    """One watch's catch-up: its tree listed through descriptors, changed entries delivered.

    A generator the loop steps in its turns (``CatchUp.step``), so live events
    of every watch keep flowing while a large tree is scanned; memory is one
    open directory per level of the current branch, whatever the tree's size.
    """

    __slots__ = ("count", "reason", "since", "started", "steps", "watch")

    def __init__(self, watch: ActiveWatch, since: float | None, reason: str) -> None:
        self.watch = watch
        self.since = since  # deliver entries changed at or after this time.time(); None: all
        self.reason = reason
        self.started = time.monotonic()
        self.count = 0  # events delivered
        self.steps: Generator[None, None, None] = self._run()

    def _run(self) -> Generator[None, None, None]:
        watch = self.watch
        try:
            fd = watch.open_verified(watch.root)
        except OSError as exc:
            logger.warning("catch-up of %s: %s", watch.root, exc)
            return
        if not watch.where[1]:
            os.close(fd)
            return  # a watched file, not a directory: nothing below it to catch up
        # One level per open directory: (fd, path, its entries, wd).
        stack: list[tuple[int, str, Listing, int]] = []
        try:
            stack.append((fd, watch.root, os.scandir(fd), watch.paths.get(watch.root, -1)))
        except OSError:
            os.close(fd)
            return
        try:
            yield from self._walk(stack)
        finally:
            for dfd, _path, entries, _wd in stack:
                entries.close()
                os.close(dfd)

    def _walk(self, stack: list[tuple[int, str, Listing, int]]) -> Iterator[None]:
        watch = self.watch
        spec = watch.spec
        everything = self.since is None
        since = self.since or 0.0
        wanted = spec.mask
        closes = bool(wanted & IN_CLOSE_WRITE)
        # IN_CREATE when asked for, or when nothing else would say the entry is there.
        creates = bool(wanted & IN_CREATE) or not closes
        recursive = spec.recursive
        excludes = spec.excludes
        paths = watch.paths
        deliver = watch.deliver
        opener = os.open
        scandir = os.scandir
        n = 0
        # The hot loop of a catch-up (bench/catchup.py, target <= 2x find -newer): d_type
        # decides directories without a stat, "all" stats nothing, "changed" one fstatat
        # per entry (DirEntry.stat on a descriptor's listing).
        while stack:
            dfd, dpath, entries, wd = stack[-1]
            for entry in entries:
                n += 1
                if not n % STEP_ENTRIES:
                    yield
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if not everything:
                        st = entry.stat(follow_symlinks=False)
                        changed = st.st_ctime >= since or st.st_mtime >= since
                    else:
                        changed = True
                except OSError:
                    continue  # gone since it was listed
                name = entry.name
                if is_dir:
                    pathname = dpath + "/" + name
                    if excludes and is_excluded(pathname, excludes):
                        continue
                    if changed and creates:
                        self.count += 1
                        deliver(wd, IN_CREATE | IN_ISDIR, 0, name, dpath, pathname, True)
                    # Only into directories the watch holds: excludes honoured, a bind-mount
                    # loop watched once; opened below its parent, never through a link.
                    if recursive and pathname in paths and len(stack) < MAX_DEPTH:
                        try:
                            cfd = opener(name, O_SUBDIR, dir_fd=dfd)
                        except OSError:
                            continue  # gone, or swapped for a link: never followed
                        try:
                            stack.append((cfd, pathname, scandir(cfd), paths.get(pathname, -1)))
                        except OSError:
                            os.close(cfd)
                            continue
                        break
                    continue
                if not changed:
                    continue
                pathname = dpath + "/" + name
                if excludes and is_excluded(pathname, excludes):
                    continue
                if creates:
                    self.count += 1
                    deliver(wd, IN_CREATE, 0, name, dpath, pathname, True)
                if closes:
                    try:
                        is_file = entry.is_file(follow_symlinks=False)
                    except OSError:
                        is_file = False
                    if is_file:
                        self.count += 1
                        deliver(wd, IN_CLOSE_WRITE, 0, name, dpath, pathname, True)
            else:
                stack.pop()
                entries.close()
                os.close(dfd)


class CatchUp:
    """The catch-up scans of the watch set: started at each start of a watch, stepped by the loop.

    ``arm(watch, reason)`` at a start; ``step(deadline)`` in the loop's turns;
    ``reappeared`` when a missing root came back (its files, all new, were
    delivered as it was watched again). Each finished catch-up is logged, counted
    and sent as ``inotifier.signals.rescanned``.
    """

    def __init__(self, marks: Watermarks) -> None:
        self.marks = marks
        self.scans: deque[Scan] = deque()
        self.started = False  # False until the loop's first turn: adds are then the daemon's start
        self.done = 0  # catch-ups finished (in inotifier_rescans_total)
        self.delivered = 0  # events they delivered

    def arm(self, watch: ActiveWatch, reason: str | None = None) -> None:
        """Start a catch-up of ``watch`` if it asks for one (reason None: "start" or "added")."""
        mode = watch.spec.catch_up
        if not mode:
            return
        if reason is None:
            reason = "added" if self.started else "start"
        self.cancel(watch)
        since = self.marks.begin(watch)
        if watch.state != State.ACTIVE:
            return  # missing or refused: frozen until it is watched (``reappeared``)
        if mode == "changed" and since is None:
            logger.info("catch-up of %s: first start on this host, nothing to catch up", watch.root)
            self.marks.end(watch)
            return
        self.scans.append(Scan(watch, since if mode == "changed" else None, reason))

    def reappeared(self, watch: ActiveWatch, count: int) -> None:
        """A missing root came back and what it held was delivered: the catch-up is done."""
        if watch.spec.catch_up:
            self.marks.begin(watch)
            self._finished(watch, "reappeared", count, 0.0)

    def cancel(self, watch: ActiveWatch) -> None:
        """Stop the scan of ``watch`` (removed, replaced or started again)."""
        for scan in [s for s in self.scans if s.watch is watch]:
            self.scans.remove(scan)
            scan.steps.close()

    def forget(self, watch: ActiveWatch) -> None:
        """``watch`` is no longer held."""
        self.cancel(watch)
        self.marks.forget(watch)

    def step(self, deadline: float) -> None:
        """Scan until ``deadline`` (time.monotonic()), one watch after the other."""
        self.started = True
        scans = self.scans
        monotonic = time.monotonic
        while scans:
            scan = scans[0]
            try:
                for _ in scan.steps:
                    if monotonic() >= deadline:
                        return
            except Exception:
                logger.exception("catch-up of %s failed", scan.watch.root)
            scans.popleft()
            self._finished(scan.watch, scan.reason, scan.count, monotonic() - scan.started)
            if monotonic() >= deadline:
                return

    def _finished(self, watch: ActiveWatch, reason: str, count: int, seconds: float) -> None:
        self.marks.end(watch)
        self.done += 1
        self.delivered += count
        logger.info(
            "catch-up of %s (%s, %s): %d events in %.2f s",
            watch.root,
            watch.spec.catch_up,
            reason,
            count,
            seconds,
        )
        # Robust: a receiver that raises is logged, and the others still hear of it.
        sent = inotifier_signals.rescanned.send_robust(
            sender=CatchUp, watch=watch.spec, reason=reason, count=count
        )
        for receiver, result in sent:
            if isinstance(result, Exception):
                logger.error("a rescanned receiver (%r) raised", receiver, exc_info=result)
