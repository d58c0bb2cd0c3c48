"""Walking a tree to watch it (``daemon/walk.py``): every directory, through descriptors, never through a link.

A real ``Inotify`` and a real ``WatchTable`` on real directories: what the
kernel watches is read back from ``/proc/self/fdinfo``, and every walk is
checked to close each descriptor it opened.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inotifier.daemon import walk as walk_module
from inotifier.daemon.kernel import NLINK_COUNTS_SUBDIRS, Inotify, Kind, WatchError, fs_type, parse
from inotifier.daemon.table import WatchTable
from inotifier.daemon.walk import MAX_DEPTH, Found, count_dirs, walk_tree
from inotifier.masks import BITS, IN_CREATE, IN_DELETE, IN_DONT_FOLLOW, IN_ISDIR, IN_ONLYDIR

from .kernelstate import Watch, identity, in_a_user_namespace, kernel_watches, watched

NOBODY = 65534
IN_OPEN = BITS["IN_OPEN"]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def walk(
    table: WatchTable[Watch],
    watch: Watch,
    top: Path,
    *,
    excludes: tuple[str, ...] = (),
    found: Found | None = None,
    progress: Callable[[int, float, bool], None] | None = None,
    descend: bool = True,
) -> WatchError | None:
    """Watch ``top`` for ``watch`` and walk it as the daemon does; check no descriptor is left open."""
    before = open_fds()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        table.attach(watch, str(top), fd, watch.mask | IN_ONLYDIR)
        problem = walk_tree(
            table,
            watch,
            fd,
            str(top),
            excludes=excludes,
            kernel_mask=watch.mask,
            found=found,
            progress=progress or (lambda added, started, done: None),
            descend=descend,
        )
    finally:
        os.close(fd)
    assert open_fds() == before, "the walk left descriptors open"
    return problem


def make_dirs(top: Path, *names: str) -> None:
    for name in names:
        (top / name).mkdir(parents=True)


def test_every_directory_below_the_top_is_watched_by_the_kernel_once(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "a/b/c", "d/e", "f")
    (watch_dir / "file").write_text("x")
    (watch_dir / "a" / "b" / "file").write_text("x")
    watch = Watch(IN_CREATE)
    assert walk(table, watch, watch_dir) is None
    names = ("", "a", "a/b", "a/b/c", "d", "d/e", "f")
    assert set(watch.paths) == {str(watch_dir / name).rstrip("/") for name in names}
    assert kernel_watches(table.inotify) == {
        watch.paths[str(watch_dir / name).rstrip("/")]: (identity(watch_dir / name), IN_CREATE)
        for name in names
    }
    assert set(table.nodes) == set(watch.paths.values())


def test_a_link_to_a_directory_outside_is_neither_followed_nor_watched(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    top, outside = watch_dir / "top", watch_dir / "outside"
    make_dirs(top, "inner")
    make_dirs(outside, "sub")
    (top / "link").symlink_to(outside)
    (top / "inner" / "deeper").symlink_to(outside / "sub")
    watch = Watch(IN_CREATE)
    assert walk(table, watch, top) is None
    assert set(watch.paths) == {str(top), str(top / "inner")}
    assert watched(table.inotify) == {identity(top), identity(top / "inner")}


def test_a_directory_swapped_for_a_link_after_it_was_listed_is_not_followed(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    top, outside = watch_dir / "top", watch_dir / "outside"
    make_dirs(top, "swapped/sub", "removed/sub", "kept")
    make_dirs(outside, "sub")

    def swap(wd: int, entry: os.DirEntry[str], is_dir: bool, path: str, pathname: str) -> None:
        # Called after the entry was listed, before the walk opens it: the race, made certain.
        if entry.name == "swapped":
            os.rename(pathname, watch_dir / "moved-away")
            os.symlink(outside, pathname)
        elif entry.name == "removed":
            (top / "removed" / "sub").rmdir()
            (top / "removed").rmdir()

    watch = Watch(IN_CREATE)
    assert walk(table, watch, top, found=swap) is None  # gone or a link now: nothing to report
    assert set(watch.paths) == {str(top), str(top / "kept")}
    assert watched(table.inotify) == {identity(top), identity(top / "kept")}


def test_excluded_directories_and_what_is_below_them_are_neither_watched_nor_reported(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "src/cache/deep", "cache", "skip/x", "keep/y")
    (watch_dir / "src" / "cache" / "file").write_text("x")
    (watch_dir / "skip" / "file").write_text("x")
    reported: list[str] = []
    watch = Watch(IN_CREATE)
    problem = walk(
        table,
        watch,
        watch_dir,
        excludes=("cache", f"{watch_dir}/skip"),
        found=lambda wd, entry, is_dir, path, pathname: reported.append(pathname),
    )
    assert problem is None
    kept = {str(watch_dir), str(watch_dir / "src"), str(watch_dir / "keep"), str(watch_dir / "keep" / "y")}
    assert set(watch.paths) == kept
    assert watched(table.inotify) == {identity(path) for path in kept}
    assert sorted(reported) == sorted(kept - {str(watch_dir)})


def test_leaf_directories_are_watched_but_never_opened_to_be_listed(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    fd = os.open(watch_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fs_type(fd) not in NLINK_COUNTS_SUBDIRS:
            pytest.skip("the temporary directory is on a file system whose st_nlink says nothing")
    finally:
        os.close(fd)
    make_dirs(watch_dir, "leaf", "branch/leaf")
    watch = Watch(IN_OPEN)
    assert walk(table, watch, watch_dir) is None
    assert len(kernel_watches(table.inotify)) == 4
    # Opening a watched directory raises IN_OPEN on it (and, named, on its watched parent).
    by_wd = {wd: path for path, wd in watch.paths.items()}
    opened = set()
    for wd, mask, _cookie, name in parse(os.read(table.inotify.fd, 65536)):
        assert mask == IN_OPEN | IN_ISDIR
        opened.add(by_wd[wd] + "/" + name if name else by_wd[wd])
    assert opened == {str(watch_dir / "branch")}
    with pytest.raises(BlockingIOError):
        os.read(table.inotify.fd, 65536)


def test_found_gets_every_entry_with_the_wd_and_path_of_its_parent_leaves_included(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "a/leaf")
    (watch_dir / "f").write_text("x")
    (watch_dir / "a" / "g").write_text("x")
    (watch_dir / "a" / "leaf" / "h").write_text("x")
    (watch_dir / "link").symlink_to(watch_dir / "a")
    reported: set[tuple[int, str, bool, str, str]] = set()
    watch = Watch(IN_CREATE)

    def found(wd: int, entry: os.DirEntry[str], is_dir: bool, path: str, pathname: str) -> None:
        reported.add((wd, entry.name, is_dir, path, pathname))

    assert walk(table, watch, watch_dir, found=found) is None
    top, a, leaf = str(watch_dir), str(watch_dir / "a"), str(watch_dir / "a" / "leaf")
    wd = watch.paths
    assert reported == {
        (wd[top], "f", False, top, top + "/f"),
        (wd[top], "a", True, top, a),
        (wd[top], "link", False, top, top + "/link"),
        (wd[a], "g", False, a, a + "/g"),
        (wd[a], "leaf", True, a, leaf),
        (wd[leaf], "h", False, leaf, leaf + "/h"),
    }
    assert set(wd) == {top, a, leaf}


def test_without_descend_only_the_entries_of_the_top_are_reported_and_nothing_below_is_watched(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "a/b")
    (watch_dir / "f").write_text("x")
    (watch_dir / "a" / "g").write_text("x")
    reported: list[str] = []
    watch = Watch(IN_CREATE)
    problem = walk(
        table,
        watch,
        watch_dir,
        found=lambda wd, entry, is_dir, path, pathname: reported.append(pathname),
        descend=False,
    )
    assert problem is None
    assert sorted(reported) == [str(watch_dir / "a"), str(watch_dir / "f")]
    assert set(watch.paths) == {str(watch_dir)}
    assert watched(table.inotify) == {identity(watch_dir)}


def test_progress_is_reported_every_so_many_directories_and_once_when_done(
    table: WatchTable[Watch], watch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walk_module, "PROGRESS_EVERY", 3)
    make_dirs(watch_dir, "a/b/c", "d/e", "f/g")
    calls: list[tuple[int, float, bool]] = []
    before = time.monotonic()
    assert walk(table, Watch(IN_CREATE), watch_dir, progress=lambda *args: calls.append(args)) is None
    assert [(added, done) for added, _started, done in calls] == [(3, False), (6, False), (7, True)]
    started = {started for _added, started, _done in calls}
    assert len(started) == 1
    assert before <= started.pop() <= time.monotonic()


def test_a_tree_smaller_than_the_progress_step_reports_no_progress(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "a/b", "c")
    calls: list[tuple[int, float, bool]] = []
    assert walk(table, Watch(IN_CREATE), watch_dir, progress=lambda *args: calls.append(args)) is None
    assert calls == []


def walk_as_nobody(table: WatchTable[Watch], watch: Watch, top: Path) -> WatchError | None:
    """Walk in a thread whose file-system uid is not root (when it is), so permissions apply.

    The file-system uid is per thread (``setfsuid``): the other threads keep theirs.
    """
    if os.geteuid() != 0:
        return walk(table, watch, top)
    libc = ctypes.CDLL(None, use_errno=True)
    returned: list[WatchError | None] = []
    raised: list[BaseException] = []

    def run() -> None:
        libc.setfsuid(NOBODY)
        try:
            if libc.setfsuid(-1) != NOBODY:
                raise OSError("setfsuid did not take")
            returned.append(walk(table, watch, top))
        except BaseException as exc:
            raised.append(exc)
        finally:
            libc.setfsuid(0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if raised:
        raise raised[0]
    (problem,) = returned
    return problem


def open_to_all(top: Path) -> None:
    """Let everyone read and search ``top`` and every directory below it."""
    for path, _dirnames, _files in os.walk(top):
        os.chmod(path, 0o755)


@pytest.fixture
def permissions(watch_dir: Path) -> Iterator[Path]:
    """A top below which the tests set modes; they are put back for the clean-up."""
    top = watch_dir / "top"
    top.mkdir()
    watch_dir.chmod(0o755)
    yield top
    open_to_all(top)


def test_a_directory_that_cannot_be_read_is_skipped_and_its_problem_returned(
    table: WatchTable[Watch], permissions: Path
) -> None:
    top = permissions
    # One made before the locked one, one after: in either listing order, one comes after it.
    make_dirs(top, "first/sub", "locked/sub", "last/sub")
    open_to_all(top)
    (top / "locked").chmod(0o000)
    watch = Watch(IN_CREATE)
    problem = walk_as_nobody(table, watch, top)
    assert problem is not None
    assert (problem.kind, problem.errno, problem.path) == (Kind.PERMISSION, errno.EACCES, str(top / "locked"))
    assert problem.message().startswith(f"permission denied watching {str(top / 'locked')!r}")
    names = ("", "first", "first/sub", "last", "last/sub")
    assert set(watch.paths) == {str(top / name).rstrip("/") for name in names}
    assert watched(table.inotify) == {identity(top / name) for name in names}


def test_a_directory_that_can_be_watched_but_not_listed_is_watched_and_its_problem_returned(
    table: WatchTable[Watch], permissions: Path
) -> None:
    top = permissions
    make_dirs(top, "unlisted/sub", "other/sub")
    open_to_all(top)
    (top / "unlisted").chmod(0o444)  # may be read (watched), not searched (its entries not opened)
    watch = Watch(IN_CREATE)
    problem = walk_as_nobody(table, watch, top)
    assert problem is not None
    assert (problem.kind, problem.path) == (Kind.PERMISSION, str(top / "unlisted"))
    names = ("", "unlisted", "other", "other/sub")
    assert set(watch.paths) == {str(top / name).rstrip("/") for name in names}
    assert watched(table.inotify) == {identity(top / name) for name in names}


def test_a_tree_deeper_than_max_depth_is_watched_down_to_it_and_the_rest_reported(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "/".join(["d"] * (MAX_DEPTH + 2))).mkdir(parents=True)
    watch = Watch(IN_CREATE)
    problem = walk(table, watch, watch_dir)
    deepest = str(watch_dir) + "/d" * MAX_DEPTH
    assert problem is not None
    assert (problem.errno, problem.path) == (errno.EMLINK, deepest)
    assert f"deeper than {MAX_DEPTH} levels: not followed" in problem.message()
    assert len(watch.paths) == len(kernel_watches(table.inotify)) == MAX_DEPTH + 1  # the top and 512 below
    assert deepest in watch.paths
    assert deepest + "/d" not in watch.paths


def test_a_directory_another_watch_holds_is_shared_with_the_union_of_both_masks(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "shared/own")
    other = Watch(IN_DELETE)
    fd = os.open(watch_dir / "shared", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        wd_shared = table.attach(other, str(watch_dir / "shared"), fd, IN_DELETE | IN_ONLYDIR)
    finally:
        os.close(fd)
    watch = Watch(IN_CREATE)
    assert walk(table, watch, watch_dir) is None
    assert watch.paths[str(watch_dir / "shared")] == wd_shared
    assert table.nodes[wd_shared].owners == {
        other: str(watch_dir / "shared"),
        watch: str(watch_dir / "shared"),
    }
    assert kernel_watches(table.inotify) == {
        watch.paths[str(watch_dir)]: (identity(watch_dir), IN_CREATE),
        wd_shared: (identity(watch_dir / "shared"), IN_CREATE | IN_DELETE),
        watch.paths[str(watch_dir / "shared" / "own")]: (identity(watch_dir / "shared" / "own"), IN_CREATE),
    }


def test_walking_a_tree_again_leaves_what_is_held_and_shared_as_it_was(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "shared/own", "mine")
    other = Watch(IN_DELETE)
    fd = os.open(watch_dir / "shared", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        table.attach(other, str(watch_dir / "shared"), fd, IN_DELETE | IN_ONLYDIR)
    finally:
        os.close(fd)
    watch = Watch(IN_CREATE)
    assert walk(table, watch, watch_dir) is None
    held, kernel = dict(watch.paths), kernel_watches(table.inotify)
    assert walk(table, watch, watch_dir) is None
    assert watch.paths == held
    assert kernel_watches(table.inotify) == kernel


def test_dont_follow_in_the_mask_still_watches_the_directories_not_the_descriptor_links(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    make_dirs(watch_dir, "a/b", "c")
    watch = Watch(IN_CREATE | IN_DONT_FOLLOW)
    assert walk(table, watch, watch_dir) is None
    names = ("", "a", "a/b", "c")
    assert watched(table.inotify) == {identity(watch_dir / name) for name in names}


def test_out_of_kernel_watches_the_walk_stops_and_says_at_least_how_many_more_it_needs(
    watch_dir: Path,
) -> None:
    make_dirs(watch_dir, "a/b/c/d/e")  # 6 directories, the top included: full two levels down

    def work() -> dict[str, Any]:
        inotify = Inotify()
        table: WatchTable[Watch] = WatchTable(inotify)
        watch = Watch(IN_CREATE)
        problem = walk(table, watch, watch_dir)  # which checks no descriptor is left open
        assert problem is not None
        return {
            "kind": problem.kind.name,
            "errno": problem.errno,
            "needed": problem.needed,
            "message": problem.message(),
            "held": len(watch.paths),
            "kernel": len(kernel_watches(inotify)),
        }

    result = in_a_user_namespace(3, work)
    assert (result["kind"], result["errno"]) == ("NO_SPACE", errno.ENOSPC)
    assert result["held"] == result["kernel"] == 3
    assert result["needed"] >= 6 - 3
    assert "user.max_inotify_watches (3) is reached" in result["message"]
    assert f"at least {result['needed']} more needed" in result["message"]


def test_count_dirs_counts_each_directory_once_and_never_follows_a_link(
    watch_dir: Path,
) -> None:
    top, outside = watch_dir / "top", watch_dir / "outside"
    make_dirs(top, "a/b/c", "d", "e/f")
    make_dirs(outside, "1/2/3/4/5/6/7/8")
    (top / "file").write_text("x")
    (top / "a" / "file").write_text("x")
    assert count_dirs(str(top / "d")) == 1  # itself
    assert count_dirs(str(top)) == 7  # "at least N more needed": neither too few nor twice too many
    (top / "a" / "link").symlink_to(outside)
    assert count_dirs(str(top)) == 7  # a link to a directory is not one of the tree's


def test_a_watched_directory_moved_into_a_new_directory_keeps_its_wds_under_the_new_name(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    """No IN_MOVED_TO is seen for it (its new parent was not watched yet): the walk finds it."""
    make_dirs(watch_dir, "p/x/sub")
    watch = Watch(IN_CREATE)
    assert walk(table, watch, watch_dir) is None
    wds = {watch.paths[str(watch_dir / "p" / "x")], watch.paths[str(watch_dir / "p" / "x" / "sub")]}
    (watch_dir / "q").mkdir()
    os.rename(watch_dir / "p" / "x", watch_dir / "q" / "x")
    # What the tree does on the IN_CREATE of q (tree._watch_new_dir): attach it, walk it.
    fd = os.open(watch_dir / "q", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        table.attach(watch, str(watch_dir / "q"), fd, IN_CREATE | IN_ONLYDIR)
        assert (
            walk_tree(
                table,
                watch,
                fd,
                str(watch_dir / "q"),
                excludes=(),
                kernel_mask=IN_CREATE,
                found=lambda *entry: None,
                progress=lambda *args: None,
            )
            is None
        )
    finally:
        os.close(fd)
    assert {watch.paths[str(watch_dir / "q" / "x")], watch.paths[str(watch_dir / "q" / "x" / "sub")]} == wds
    # What the tree does on the IN_MOVED_FROM of p/x that no IN_MOVED_TO followed (drop_moved_out).
    table.detach_under(watch, str(watch_dir / "p" / "x"))
    assert {identity(watch_dir / "q" / "x"), identity(watch_dir / "q" / "x" / "sub")} <= watched(
        table.inotify
    )
    assert not [p for p in watch.paths if p.startswith(str(watch_dir / "p" / "x"))]


def test_a_directory_reached_twice_through_a_bind_mount_is_watched_once(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    """The same inode still at its first name: not a move, walked once (no loop)."""
    make_dirs(watch_dir, "real/inner", "mnt")
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    import subprocess

    mounted = subprocess.run(
        ["mount", "--bind", str(watch_dir / "real"), str(watch_dir / "mnt")], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"mount --bind refused here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        watch = Watch(IN_CREATE)
        listed: list[str] = []
        assert (
            walk(table, watch, watch_dir, found=lambda wd, entry, d, parent, path: listed.append(path))
            is None
        )
        real, mnt = str(watch_dir / "real"), str(watch_dir / "mnt")
        first = next(path for path in listed if path in (real, mnt))
        assert [path for path in (real, mnt) if path in watch.paths] == [first]  # kept the first name
        assert first + "/inner" in watch.paths
        held = dict(watch.paths)
        assert walk(table, watch, watch_dir) is None  # a rescan: the second name is no move
        assert watch.paths == held
    finally:
        subprocess.run(["umount", str(watch_dir / "mnt")], check=False)


def test_the_walk_changes_no_other_threads_working_directory_and_comes_back_to_its_own(
    table: WatchTable[Watch], watch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaves are watched by name from their parent, this thread's working directory (its own)."""
    monkeypatch.setattr(walk_module, "PROGRESS_EVERY", 50)
    for top in range(20):
        make_dirs(watch_dir, *(f"t{top}/d{leaf}" for leaf in range(20)))
    start = os.getcwd()
    seen_elsewhere: set[str] = set()
    seen_by_progress: set[str] = set()
    walking = threading.Event()

    def look() -> None:
        while not walking.is_set():
            seen_elsewhere.add(os.getcwd())

    other = threading.Thread(target=look)
    other.start()
    try:
        watch = Watch(IN_CREATE)
        problem = walk(table, watch, watch_dir, progress=lambda *args: seen_by_progress.add(os.getcwd()))
    finally:
        walking.set()
        other.join()
    assert problem is None and len(watch.paths) == 1 + 20 + 400
    assert watched(table.inotify) == {identity(Path(p)) for p in watch.paths}
    assert seen_elsewhere == {start} and seen_by_progress == {start}
    assert os.getcwd() == start


def test_a_leaf_after_a_progress_report_is_watched_in_the_tree_not_in_the_process_working_directory(
    table: WatchTable[Watch], watch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report runs from the process's working directory; the walk must come back before a leaf."""
    monkeypatch.setattr(walk_module, "PROGRESS_EVERY", 1)
    names = [f"d{i}" for i in range(20)]
    tree, decoy = watch_dir / "tree", watch_dir / "decoy"
    make_dirs(tree, *names)
    make_dirs(decoy, *names)  # the same names where the process stands
    monkeypatch.chdir(decoy)
    watch = Watch(IN_CREATE)
    assert walk(table, watch, tree, progress=lambda *args: None) is None
    assert watched(table.inotify) == {identity(tree)} | {identity(tree / name) for name in names}
