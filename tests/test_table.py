"""The table of kernel watches (``daemon/table.py``): one wd per inode, shared by the watches that hold it.

Real inotify on real directories: what the kernel holds is read back from
``/proc/self/fdinfo`` (every watch, its inode and its mask), not only from the
table's own dicts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from inotifier.daemon.table import WatchTable
from inotifier.masks import IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_MOVED_TO, IN_ONLYDIR

from .kernelstate import Watch, identity, kernel_watches


def attach(table: WatchTable[Watch], watch: Watch, path: Path) -> int:
    """Attach the directory ``path`` for ``watch`` as the daemon does, through a descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return table.attach(watch, str(path), fd, watch.mask | IN_ONLYDIR)
    finally:
        os.close(fd)


def test_a_directory_two_watches_hold_is_one_kernel_watch_with_the_union_of_their_masks(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir)
    assert attach(table, b, watch_dir) == wd
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir), IN_CREATE | IN_DELETE)}
    assert table.nodes[wd].owners == {a: str(watch_dir), b: str(watch_dir)}
    assert a.paths == b.paths == {str(watch_dir): wd}


def test_when_one_watch_leaves_a_shared_directory_the_kernel_mask_shrinks_to_the_others(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir)
    attach(table, b, watch_dir)
    table.detach(b, wd)
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir), IN_CREATE)}
    assert b.paths == {}
    assert a.paths == {str(watch_dir): wd}
    assert table.nodes[wd].owners == {a: str(watch_dir)}


def test_when_the_last_watch_leaves_a_directory_its_kernel_watch_is_removed(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir)
    attach(table, b, watch_dir)
    table.detach(a, wd)
    table.detach(b, wd)
    assert kernel_watches(table.inotify) == {}
    assert table.nodes == {}
    assert a.paths == b.paths == {}
    table.detach(a, wd)  # a wd nobody holds any more: nothing to do, nothing raised
    assert kernel_watches(table.inotify) == {}


def test_a_wd_the_walk_added_itself_is_shared_like_an_attached_one(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    fd = os.open(watch_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        wd = table.inotify.add_watch_fd(fd, IN_CREATE)
    finally:
        os.close(fd)
    table.add_node(a, str(watch_dir), wd)
    assert a.paths == {str(watch_dir): wd}
    assert attach(table, b, watch_dir) == wd
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir), IN_CREATE | IN_DELETE)}
    table.detach(a, wd)
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir), IN_DELETE)}


def test_detach_all_removes_the_kernel_watches_of_a_watch_but_leaves_the_shared_ones_to_the_others(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "x").mkdir()
    (watch_dir / "y").mkdir()
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    for name in ("", "x", "y"):
        attach(table, a, watch_dir / name)
    wd_y = attach(table, b, watch_dir / "y")
    assert len(kernel_watches(table.inotify)) == 3
    table.detach_all(a)
    assert a.paths == {}
    assert kernel_watches(table.inotify) == {wd_y: (identity(watch_dir / "y"), IN_DELETE)}
    assert set(table.nodes) == {wd_y}


def test_detach_all_keeps_the_wd_the_kernel_is_dropping_itself(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "x").mkdir()
    a = Watch(IN_CREATE)
    wd_top = attach(table, a, watch_dir)
    attach(table, a, watch_dir / "x")
    table.detach_all(a, keep=wd_top)
    assert kernel_watches(table.inotify) == {wd_top: (identity(watch_dir), IN_CREATE)}
    assert set(table.nodes) == {wd_top}
    assert a.paths == {str(watch_dir): wd_top}  # until the kernel's IN_IGNORED is forgotten


def test_a_wd_the_kernel_dropped_is_forgotten_by_every_watch_that_held_it(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    gone = watch_dir / "gone"
    gone.mkdir()
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, gone)
    attach(table, b, gone)
    wd_top = attach(table, a, watch_dir)
    gone.rmdir()
    assert set(kernel_watches(table.inotify)) == {wd_top}  # the kernel dropped it itself
    node = table.forget(wd)
    assert node is not None
    assert node.owners == {a: str(gone), b: str(gone)}
    assert a.paths == {str(watch_dir): wd_top}
    assert b.paths == {}
    assert set(table.nodes) == {wd_top}
    assert table.forget(wd) is None


def test_a_renamed_directory_keeps_its_wds_under_the_new_names(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "old" / "in").mkdir(parents=True)
    (watch_dir / "old2").mkdir()  # shares the prefix "old", not the directory
    a = Watch(IN_CREATE)
    wds = {name: attach(table, a, watch_dir / name) for name in ("", "old", "old/in", "old2")}
    before = kernel_watches(table.inotify)
    (watch_dir / "old").rename(watch_dir / "new")
    table.rename(a, str(watch_dir / "old"), str(watch_dir / "new"))
    assert a.paths == {
        str(watch_dir): wds[""],
        str(watch_dir / "new"): wds["old"],
        str(watch_dir / "new" / "in"): wds["old/in"],
        str(watch_dir / "old2"): wds["old2"],
    }
    assert table.nodes[wds["old/in"]].owners == {a: str(watch_dir / "new" / "in")}
    assert kernel_watches(table.inotify) == before  # the same kernel watches, nothing added again


def test_a_renamed_shared_directory_is_remasked_through_its_new_name(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "old").mkdir()
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir / "old")
    attach(table, b, watch_dir / "old")
    (watch_dir / "old").rename(watch_dir / "new")
    table.rename(a, str(watch_dir / "old"), str(watch_dir / "new"))
    table.detach(b, wd)  # b never heard of the rename: the mask is set through a's name
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir / "new"), IN_CREATE)}


def test_detach_under_drops_a_directory_and_what_is_below_it_but_not_a_sibling_sharing_its_prefix(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "x" / "y").mkdir(parents=True)
    (watch_dir / "xy").mkdir()
    a = Watch(IN_CREATE)
    for name in ("", "x", "x/y", "xy"):
        attach(table, a, watch_dir / name)
    table.detach_under(a, str(watch_dir / "x"))
    assert set(a.paths) == {str(watch_dir), str(watch_dir / "xy")}
    held = {ident for ident, _mask in kernel_watches(table.inotify).values()}
    assert held == {identity(watch_dir), identity(watch_dir / "xy")}


def test_remask_sets_a_changed_mask_on_every_wd_of_a_watch_and_keeps_the_shared_bits(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "x").mkdir()
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd_top = attach(table, a, watch_dir)
    wd_x = attach(table, a, watch_dir / "x")
    attach(table, b, watch_dir / "x")
    a.mask = IN_CLOSE_WRITE
    table.remask(a)
    assert kernel_watches(table.inotify) == {
        wd_top: (identity(watch_dir), IN_CLOSE_WRITE),
        wd_x: (identity(watch_dir / "x"), IN_CLOSE_WRITE | IN_DELETE),
    }
    assert a.paths == {str(watch_dir): wd_top, str(watch_dir / "x"): wd_x}


def test_a_shared_directory_whose_name_now_leads_elsewhere_is_not_left_watched_there(
    table: WatchTable[Watch], watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (watch_dir / "d").mkdir()
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir / "d")
    attach(table, b, watch_dir / "d")
    (watch_dir / "d").rename(watch_dir / "away")
    (watch_dir / "d").mkdir()  # another inode under the name a holds
    with caplog.at_level(logging.WARNING, "inotifier.daemon"):
        table.detach(b, wd)
    # Only the directory a holds is watched (with the mask it had: it could not be reached).
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir / "away"), IN_CREATE | IN_DELETE)}
    assert f"updating the mask of {str(watch_dir / 'd')!r} failed: it was replaced" in caplog.messages


def test_when_the_name_leads_to_a_directory_another_watch_holds_its_own_mask_is_restored(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "d").mkdir()
    (watch_dir / "other").mkdir()
    a, b, c = Watch(IN_CREATE), Watch(IN_DELETE), Watch(IN_MOVED_TO)
    wd = attach(table, a, watch_dir / "d")
    attach(table, b, watch_dir / "d")
    wd_other = attach(table, c, watch_dir / "other")
    (watch_dir / "d").rename(watch_dir / "away")
    (watch_dir / "other").rename(watch_dir / "d")
    table.detach(b, wd)
    assert kernel_watches(table.inotify) == {
        wd: (identity(watch_dir / "away"), IN_CREATE | IN_DELETE),
        wd_other: (identity(watch_dir / "d"), IN_MOVED_TO),
    }


def test_a_shared_directory_that_cannot_be_reached_keeps_its_mask_and_nothing_is_raised(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    (watch_dir / "d").mkdir()
    a, b = Watch(IN_CREATE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir / "d")
    attach(table, b, watch_dir / "d")
    (watch_dir / "d").rename(watch_dir / "away")  # a's name for it leads nowhere now
    table.detach(b, wd)
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir / "away"), IN_CREATE | IN_DELETE)}
    assert table.nodes[wd].owners == {a: str(watch_dir / "d")}
    assert b.paths == {}


def test_attaching_again_a_directory_a_watch_already_shares_keeps_the_other_watches_bits(
    table: WatchTable[Watch], watch_dir: Path
) -> None:
    """A directory both walked and announced (its IN_CREATE came after the walk) is attached twice."""
    a, b = Watch(IN_CLOSE_WRITE), Watch(IN_DELETE)
    wd = attach(table, a, watch_dir)
    attach(table, b, watch_dir)
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir), IN_CLOSE_WRITE | IN_DELETE)}
    assert attach(table, a, watch_dir) == wd
    assert kernel_watches(table.inotify) == {wd: (identity(watch_dir), IN_CLOSE_WRITE | IN_DELETE)}
