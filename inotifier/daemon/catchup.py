"""Catch-up: at each start of a watch, deliver what changed while no daemon watched it."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Generator, Iterator
from itertools import islice
from typing import TYPE_CHECKING, TypeAlias

from ..escaping import get_logger
from ..masks import IN_CLOSE_WRITE, IN_CREATE, IN_ISDIR
from ..specs import is_excluded
from ..states import State
from .events import tell_receivers
from .finder import FIND, Finder
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

    __slots__ = ("count", "deadline", "reason", "since", "started", "steps", "watch")

    def __init__(self, watch: ActiveWatch, since: float | None, reason: str) -> None:
        self.watch = watch
        self.since = since  # deliver entries changed at or after this time.time(); None: all
        self.reason = reason
        self.started = time.monotonic()
        self.count = 0  # events delivered
        self.deadline = 0.0  # time.monotonic() at which the current step gives the loop back
        # "changed" is listed by a find(1) child, its fstatat on another core (bench/catchup.py,
        # 1 000 000 files: 1.15x find -newer; the listing in Python: 1.6-1.9x); "all" needs no stat.
        changed = since is not None and since != float("-inf")
        self.steps: Generator[None, None, None] = self._find() if changed and FIND else self._run()

    def _open_root(self) -> int | None:
        """Open the watch's root, checked to be the directory it watches; None: nothing to list."""
        watch = self.watch
        try:
            fd = watch.open_verified(watch.root)
        except OSError as exc:
            logger.warning("catch-up of %s: %s", watch.root, exc)
            return None
        if not watch.where[1]:
            os.close(fd)
            return None  # a watched file, not a directory: nothing below it to catch up
        return fd

    def _find(self) -> Generator[None, None, None]:
        watch = self.watch
        fd = self._open_root()
        if fd is None:
            return
        try:
            finder = Finder(fd, self.since or 0.0, watch.spec.recursive)
        except OSError as exc:
            logger.warning("catch-up of %s: find could not run (%s); listing it here", watch.root, exc)
            yield from self._run()
            return
        finally:
            os.close(fd)
        try:
            yield from self._deliver_found(finder)
        finally:
            finder.close()
        if finder.failed:
            logger.warning("catch-up of %s: %s cannot list it; listing it here", watch.root, finder.program)
            yield from self._run()

    def _deliver_found(self, finder: Finder) -> Iterator[None]:
        watch = self.watch
        spec = watch.spec
        root = watch.root
        closes = bool(spec.mask & IN_CLOSE_WRITE)
        creates = bool(spec.mask & IN_CREATE) or not closes
        excludes = spec.excludes
        paths = watch.paths
        deliver = watch.deliver
        fsdecode = os.fsdecode
        monotonic = time.monotonic
        while True:
            found = finder.read(self.deadline - monotonic())
            if found is None:
                return
            for line in found:
                kind = line[:1]
                pathname = root + "/" + fsdecode(line[1:])
                path, _, name = pathname.rpartition("/")
                wd = paths.get(path)
                if wd is None:
                    continue  # below a directory the watch does not hold (excluded, or not yet)
                if excludes and is_excluded(pathname, excludes):
                    continue
                if kind == b"d":
                    if creates:
                        self.count += 1
                        deliver(wd, IN_CREATE | IN_ISDIR, 0, name, path, pathname, True)
                    continue
                if creates:
                    self.count += 1
                    deliver(wd, IN_CREATE, 0, name, path, pathname, True)
                if closes and kind == b"f":
                    self.count += 1
                    deliver(wd, IN_CLOSE_WRITE, 0, name, path, pathname, True)
            yield

    def _run(self) -> Generator[None, None, None]:
        watch = self.watch
        fd = self._open_root()
        if fd is None:
            return
        stack: list[Level] = []
        try:
            stack.append(Level(fd, watch.root, os.scandir(fd), watch.paths.get(watch.root, -1)))
        except OSError:
            os.close(fd)
            return
        try:
            yield from self._walk(stack)
        finally:
            for level in stack:
                level.close()

    def _walk(self, stack: list[Level]) -> Iterator[None]:
        watch = self.watch
        spec = watch.spec
        everything = self.since is None
        since = self.since or 0.0
        closes = bool(spec.mask & IN_CLOSE_WRITE)
        # IN_CREATE when asked for, or when nothing else would say the entry is there.
        creates = bool(spec.mask & IN_CREATE) or not closes
        excludes = spec.excludes
        deliver = watch.deliver
        # The hot loop of a catch-up (bench/catchup.py, target <= 2x find -newer): d_type
        # decides directories without a stat, "all" stats nothing, "changed" one fstatat
        # per entry (DirEntry.stat on a descriptor's listing); the loop gets the hand back
        # every STEP_ENTRIES entries, with no per-entry counter.
        while stack:
            level = stack[-1]
            entries = level.entries
            if entries is None:  # listed: on to its next subdirectory, or back up
                if level.subdirs and len(stack) < MAX_DEPTH:
                    self._descend(stack, level, level.subdirs.pop())
                else:
                    stack.pop()
                    level.close()
                continue
            dpath, wd = level.path, level.wd
            batch = list(islice(entries, STEP_ENTRIES))
            for entry in batch:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        self._dir(level, entry, everything, since, creates)
                        continue
                    if not everything:
                        st = entry.stat(follow_symlinks=False)
                        if st.st_ctime < since and st.st_mtime < since:
                            continue
                    is_file = closes and entry.is_file(follow_symlinks=False)
                except OSError:
                    continue  # gone since it was listed
                name = entry.name
                pathname = dpath + "/" + name
                if excludes and is_excluded(pathname, excludes):
                    continue
                if creates:
                    self.count += 1
                    deliver(wd, IN_CREATE, 0, name, dpath, pathname, True)
                if is_file:
                    self.count += 1
                    deliver(wd, IN_CLOSE_WRITE, 0, name, dpath, pathname, True)
            if len(batch) < STEP_ENTRIES:
                entries.close()
                level.entries = None
            yield

    def _dir(
        self, level: Level, entry: os.DirEntry[str], everything: bool, since: float, creates: bool
    ) -> None:
        """A directory in a listing: delivered if it changed; descended into if the watch holds it."""
        name = entry.name
        pathname = level.path + "/" + name
        watch = self.watch
        if watch.cfg.excludes and is_excluded(pathname, watch.cfg.excludes):
            return
        if creates:
            st = None if everything else entry.stat(follow_symlinks=False)
            if st is None or st.st_ctime >= since or st.st_mtime >= since:
                self.count += 1
                watch.deliver(level.wd, IN_CREATE | IN_ISDIR, 0, name, level.path, pathname, True)
        # Only into directories the watch holds: excludes honoured, a bind-mount loop
        # watched once.
        if watch.spec.recursive and pathname in watch.paths:
            level.subdirs.append(name)

    def _descend(self, stack: list[Level], level: Level, name: str) -> None:
        """Open ``name`` below ``level`` (never through a link) and list it next."""
        try:
            fd = os.open(name, O_SUBDIR, dir_fd=level.fd)
        except OSError:
            return  # gone, or swapped for a link since it was listed: never followed
        path = level.path + "/" + name
        try:
            stack.append(Level(fd, path, os.scandir(fd), self.watch.paths.get(path, -1)))
        except OSError:
            os.close(fd)


class Level:
    """One open directory of a scan: its descriptor, its listing, the subdirectories to visit."""

    __slots__ = ("entries", "fd", "path", "subdirs", "wd")

    def __init__(self, fd: int, path: str, entries: Listing, wd: int) -> None:
        self.fd = fd
        self.path = path
        self.entries: Listing | None = entries
        self.wd = wd
        self.subdirs: list[str] = []

    def close(self) -> None:
        if self.entries is not None:
            self.entries.close()
            self.entries = None
        os.close(self.fd)


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
            scan.deadline = deadline
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
        tell_receivers("rescanned", CatchUp, watch=watch.spec, reason=reason, count=count)
