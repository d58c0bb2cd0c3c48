"""Walking a tree to watch its directories, without ever being led out of it by a link."""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import time
from collections.abc import Callable
from typing import Any

from ..escaping import get_logger
from ..masks import IN_DONT_FOLLOW, IN_ONLYDIR
from ..specs import is_excluded
from .kernel import (
    IN_MASK_ADD,
    NLINK_COUNTS_SUBDIRS,
    O_SUBDIR,
    O_SUBDIR_PATH,
    Kind,
    WatchError,
    fd_path,
    fs_type,
    own_cwd,
    raw_add_watch,
)
from .table import Node, OwnerT, WatchTable

logger = get_logger("inotifier.daemon")

#: Deepest level of a tree walked with a descriptor open per level (beyond: skipped, said so).
MAX_DEPTH = 512
#: Directories between two progress reports of a large set-up.
PROGRESS_EVERY = 10_000

#: Called for each entry found when the walk delivers what it finds:
#: (parent wd, the entry, is it a directory, parent path, entry path).
Found = Callable[[int, "os.DirEntry[str]", bool, str, str], None]
#: Called with (directories added, time.monotonic() at the start, done?).
Progress = Callable[[int, float, bool], None]


def count_dirs(top: str) -> int:
    """Return the directories under ``top``, itself included (for "at least N more needed")."""
    return sum(1 for _walked in os.walk(top))  # one tuple per directory


def walk_tree(
    table: WatchTable[OwnerT],
    owner: OwnerT,
    top_fd: int,
    top: str,
    *,
    excludes: tuple[str, ...],
    kernel_mask: int,
    found: Found | None,
    progress: Progress,
    descend: bool = True,
) -> WatchError | None:
    """Watch every directory below ``top`` (open as ``top_fd``, watched itself) for ``owner``.

    Each directory is opened relative to its parent's descriptor, never
    following a link, and watched through that descriptor: a directory swapped
    for a link while the walk runs is skipped, not followed, so the tree never
    leads out of itself. ``found`` (when set) gets every entry, so a caller can
    deliver what was there before the watch. Without ``descend`` only ``top``
    is listed. Return the first problem (NO_SPACE stops the walk; others are
    logged and skipped), or None.
    """
    started = time.monotonic()
    paths = owner.paths
    nodes = table.nodes
    ifd = table.inotify.fd
    # IN_MASK_ADD: a directory another watch holds keeps its bits until the union is set again.
    kmask = ((kernel_mask | IN_ONLYDIR) & ~IN_DONT_FOLLOW) | IN_MASK_ADD
    # A leaf is watched by its name in its parent, the working directory of this thread (its
    # own: own_cwd), never through a link (IN_DONT_FOLLOW): one path component in place of an
    # open, a /proc/self/fd lookup and a close (bench target 6, recursive set-up). Not when
    # ``found`` runs (it runs the processor: the working directory must be the process's).
    named = found is None and descend and own_cwd()
    leaf_mask = kmask | IN_DONT_FOLLOW
    home = -1  # the working directory to come back to
    here = -1  # the descriptor this thread's working directory is (-1: home, -2: to be set)
    chdir = os.fchdir
    encode = os.fsencode
    new_node: type[Node[OwnerT]] = Node  # Node(wd), not Node[OwnerT](wd): see table.add_node
    add = raw_add_watch
    opener = os.open
    fstat = os.fstat
    close = os.close
    scandir = os.scandir
    counts_subdirs: dict[int, bool] = {}  # st_dev -> does st_nlink count subdirectories?
    problem: WatchError | None = None
    added = 0
    try:
        first = list(scandir(top_fd))
    except OSError as exc:
        return _skipped(exc, top)
    # One open descriptor per level of the current branch: (fd, path, entries left, owned).
    stack: list[tuple[int, str, Any, bool]] = [(top_fd, top, iter(first), False)]
    # The hot loop of a large recursive set-up (50 000 directories, bench target 6):
    # the common case (a directory nobody watches yet) is inlined, the rest goes through
    # table.attach; a leaf directory (st_nlink == 2) is never listed.
    if named:
        home = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    # No collection while the walk makes its nodes (one per directory, no cycle among them): the
    # collector's passes over the growing heap cost 15 % of a large set-up (bench target 6).
    collecting = gc.isenabled()
    gc.disable()
    try:
        while stack:
            pfd, ppath, entries, _owned = stack[-1]
            pwd = paths.get(ppath, -1)
            if named and here != pfd:
                chdir(pfd)
                here = pfd
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if not is_dir and found is None:
                    continue
                name = entry.name
                path = ppath + "/" + name
                if excludes and is_excluded(path, excludes):
                    continue
                if found is not None:
                    found(pwd, entry, is_dir, ppath, path)
                if not is_dir or not descend or path in paths:
                    continue
                if named:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # gone since it was listed
                    if st.st_nlink == 2 and counts_subdirs.get(st.st_dev):
                        wd = add(ifd, encode(name), leaf_mask)
                        if wd >= 0 and wd not in nodes:
                            node = new_node(wd)  # table.add_node, inlined
                            nodes[wd] = node
                            node.owners[owner] = path
                            paths[path] = wd
                            added += 1
                            if not added % PROGRESS_EVERY:
                                _report(progress, added, started, home, here)
                            continue
                        # Anything else (gone, a link, out of watches, a wd a watch holds):
                        # the careful way below says what it is.
                try:
                    # O_PATH: watched and checked through it, not read, so it raises no IN_OPEN
                    # in the watches above (with IN_OPEN in the mask, 50 000 events per 50 000
                    # directories set up: bench target 6, 3.3x -> 1.1x inotifywait -r).
                    cfd = opener(name, O_SUBDIR_PATH, dir_fd=pfd)
                except OSError as exc:
                    # Gone, or swapped for a link since it was listed: never followed.
                    problem = problem or _skipped(exc, path)
                    continue
                wd = add(ifd, fd_path(cfd), kmask)
                if wd >= 0 and wd not in nodes:
                    table.add_node(owner, path, wd)
                elif wd >= 0 and owner in nodes[wd].owners:
                    old = nodes[wd].owners[owner]
                    if not _moved(old, fstat(cfd)):
                        close(cfd)  # the same directory again (a bind mount loop): once is enough
                        continue
                    # Moved here from ``old`` with no IN_MOVED_TO seen (into a directory not yet
                    # watched): its wds and those below it go on under the new name.
                    table.rename(owner, old, path)
                    close(cfd)
                    continue
                else:
                    try:
                        if wd < 0:
                            raise WatchError(ctypes.get_errno(), path)
                        table.attach(owner, path, cfd, kmask)  # shared with another watch
                    except WatchError as exc:
                        close(cfd)
                        if exc.kind is Kind.NO_SPACE:
                            exc.needed = max(1, count_dirs(top) - added)
                            logger.error("%s", exc.message())
                            return exc
                        problem = problem or _skipped(exc, path)
                        continue
                added += 1
                if not added % PROGRESS_EVERY:
                    _report(progress, added, started, home, here)
                if found is None and _is_leaf(fstat(cfd), cfd, counts_subdirs):
                    close(cfd)  # no subdirectory to watch: not listed
                    continue
                if len(stack) >= MAX_DEPTH:
                    close(cfd)
                    problem = problem or _skipped(OSError(errno.EMLINK, "too deep"), path)
                    continue
                try:
                    # Read through a descriptor opened from the one checked and watched: the same
                    # directory, whatever its name leads to now.
                    lfd = opener(".", O_SUBDIR, dir_fd=cfd)
                except OSError as exc:
                    close(cfd)
                    problem = problem or _skipped(exc, path)
                    continue
                close(cfd)
                try:
                    children = list(scandir(lfd))
                except OSError as exc:
                    close(lfd)
                    problem = problem or _skipped(exc, path)
                    continue
                stack.append((lfd, path, iter(children), True))
                here = -2  # another level: its descriptor becomes the working directory
                break
            else:
                stack.pop()
                if _owned:
                    close(pfd)  # (its number may come again, for another directory)
                here = -2
    finally:
        if collecting:
            gc.enable()
        if home >= 0:
            chdir(home)
            close(home)
        for fd, _path, _entries, owned in stack:
            if owned:
                close(fd)
    if added >= PROGRESS_EVERY:
        progress(added, started, True)
    return problem


def _is_leaf(st: os.stat_result, fd: int, counts_subdirs: dict[int, bool]) -> bool:
    """Return True when the directory open as ``fd`` surely has no subdirectory."""
    if st.st_nlink != 2:
        return False
    known = counts_subdirs.get(st.st_dev)
    if known is None:
        known = counts_subdirs[st.st_dev] = fs_type(fd) in NLINK_COUNTS_SUBDIRS
    return known


def _report(progress: Progress, added: int, started: float, home: int, here: int) -> None:
    """Report progress from the process's working directory (``home``), then go back to ``here``.

    The callback runs as the rest of the process does; the leaves that follow are
    watched by name from ``here``, so it must be the working directory again.
    """
    if here != -1:
        os.fchdir(home)
    try:
        progress(added, started, False)
    finally:
        if here >= 0:
            os.fchdir(here)


def _moved(old: str, st: os.stat_result) -> bool:
    """Return True when the directory ``st`` is no longer at ``old`` (never following a link)."""
    try:
        there = os.stat(old, follow_symlinks=False)
    except OSError:
        return True
    return (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino)


def _skipped(exc: OSError, path: str) -> WatchError | None:
    """Log a directory of a tree that is not watched; return the problem (None if simply gone)."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return None  # gone since it was listed, or a link now: nothing to say
    if exc.errno == errno.EMLINK:
        problem = WatchError(errno.EMLINK, path, Kind.OTHER)
        problem.strerror = f"deeper than {MAX_DEPTH} levels: not followed"
    else:
        problem = WatchError.of(exc, path)
    logger.warning("%s", problem.message())
    return problem
