"""A tree watch following its directories (``daemon/tree.py``), in-process on real inotify."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testapp.receivers import ListProcessor

from .conftest import pump

LIST = "tests.testapp.receivers.ListProcessor"
TREE = {"recursive": True, "auto_add": True}


@pytest.fixture
def in_daemon(in_process: Any) -> Iterator[Any]:
    ListProcessor.seen.clear()
    yield in_process
    ListProcessor.seen.clear()


def seen(maskname: str) -> list[str]:
    return [e.pathname for e in ListProcessor.seen if e.maskname == maskname]


def held_paths(daemon: Any) -> set[str]:
    """Return the paths the only watch of ``daemon`` holds a kernel watch for."""
    (watch,) = daemon.watches.values()
    return set(watch.paths)


def test_a_directory_renamed_within_the_tree_keeps_its_kernel_watches_under_the_new_name(
    in_daemon: Any, watch_dir: Path
) -> None:
    (watch_dir / "old" / "inner").mkdir(parents=True)
    d = in_daemon([(str(watch_dir), "IN_CLOSE_WRITE|IN_MOVED_TO", LIST, TREE)])
    wds = {d.watches[k].paths[str(watch_dir / "old" / "inner")] for k in d.watches}
    (watch_dir / "old").rename(watch_dir / "new")
    pump(d, lambda: seen("IN_MOVED_TO|IN_ISDIR"))
    d.tick(timeout=0)  # nothing left to read: the moves are settled
    assert held_paths(d) == {str(watch_dir), str(watch_dir / "new"), str(watch_dir / "new" / "inner")}
    (watch,) = d.watches.values()
    assert {watch.paths[str(watch_dir / "new" / "inner")]} == wds  # renamed, not watched again
    (watch_dir / "new" / "inner" / "f").write_text("x")
    pump(d, lambda: seen("IN_CLOSE_WRITE"))
    assert seen("IN_CLOSE_WRITE") == [str(watch_dir / "new" / "inner" / "f")]


def test_a_directory_moved_out_of_the_tree_is_no_longer_watched(
    in_daemon: Any, tmp_path: Path, watch_dir: Path
) -> None:
    root = watch_dir / "root"
    (root / "leaving" / "deep").mkdir(parents=True)
    outside = watch_dir / "outside"
    d = in_daemon([(str(root), "IN_CLOSE_WRITE|IN_MOVED_FROM", LIST, TREE)])
    before = len(d.table.nodes)
    (root / "leaving").rename(outside)
    pump(d, lambda: seen("IN_MOVED_FROM|IN_ISDIR"))
    pump(d, lambda: held_paths(d) == {str(root)})
    assert len(d.table.nodes) == before - 2
    (outside / "deep" / "late").write_text("x")
    (root / "here").write_text("x")
    pump(d, lambda: seen("IN_CLOSE_WRITE"))
    assert seen("IN_CLOSE_WRITE") == [str(root / "here")]  # not the file of the tree that left


def test_a_new_directory_is_watched_and_what_it_held_first_is_delivered(
    in_daemon: Any, watch_dir: Path
) -> None:
    d = in_daemon([(str(watch_dir), "IN_CREATE|IN_CLOSE_WRITE", LIST, TREE)])
    staging = watch_dir.parent / (watch_dir.name + "-staging")
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "early").write_text("x")  # there before the daemon could watch it
    try:
        os.rename(staging, watch_dir / "arrived")  # no IN_MOVED_FROM in the tree: a new directory
        target = str(watch_dir / "arrived" / "sub" / "early")
        pump(d, lambda: target in seen("IN_CLOSE_WRITE"))
    finally:
        if staging.exists():
            staging.rmdir()
    synthetic = {e.pathname for e in ListProcessor.seen if e.synthetic}
    assert target in synthetic and str(watch_dir / "arrived" / "sub") in synthetic
    assert str(watch_dir / "arrived" / "sub") in held_paths(d)
    (watch_dir / "arrived" / "sub" / "later").write_text("x")
    pump(d, lambda: str(watch_dir / "arrived" / "sub" / "later") in seen("IN_CLOSE_WRITE"))


def test_without_auto_add_or_when_excluded_a_new_directory_is_not_watched(
    in_daemon: Any, watch_dir: Path
) -> None:
    plain, fenced = watch_dir / "plain", watch_dir / "fenced"
    plain.mkdir()
    fenced.mkdir()
    d = in_daemon(
        [
            (str(plain), "IN_CREATE", LIST, {"recursive": True, "auto_add": False}),
            (str(fenced), "IN_CREATE", LIST, {**TREE, "exclude": ["skip"]}),
        ]
    )
    (plain / "a").mkdir()
    (fenced / "skip").mkdir()
    (fenced / "kept").mkdir()
    pump(d, lambda: str(fenced / "kept") in seen("IN_CREATE|IN_ISDIR"))
    paths = {p for watch in d.watches.values() for p in watch.paths}
    assert paths == {str(plain), str(fenced), str(fenced / "kept")}


def test_files_in_a_directory_moved_into_a_new_directory_of_the_tree_are_delivered(
    in_daemon: Any, watch_dir: Path
) -> None:
    """Moved before its new parent was watched: no IN_MOVED_TO, the walk of the parent finds it."""
    (watch_dir / "p" / "x" / "sub").mkdir(parents=True)
    d = in_daemon([(str(watch_dir), "IN_CLOSE_WRITE|IN_MOVED_FROM", LIST, TREE)])
    (watch_dir / "q").mkdir()
    os.rename(watch_dir / "p" / "x", watch_dir / "q" / "x")  # before the daemon watches q
    pump(d, lambda: seen("IN_MOVED_FROM|IN_ISDIR"))
    d.tick(timeout=0)  # nothing left to read: the moves are settled
    for name in ("x/f", "x/sub/g", "h"):
        (watch_dir / "q" / name).write_text("x")
    expected = {str(watch_dir / "q" / name) for name in ("x/f", "x/sub/g", "h")}
    pump(d, lambda: set(seen("IN_CLOSE_WRITE")) == expected)
    assert not [p for p in held_paths(d) if p.startswith(str(watch_dir / "p" / "x"))]


def test_a_new_directory_comes_before_what_it_already_held_as_with_pyinotify(
    in_daemon: Any, watch_dir: Path
) -> None:
    d = in_daemon([(str(watch_dir), "IN_CREATE|IN_MOVED_TO", LIST, TREE)])
    staging = watch_dir.parent / (watch_dir.name + "-early")
    (staging / "inner").mkdir(parents=True)
    (staging / "inner" / "file").write_text("x")
    os.rename(staging, watch_dir / "new")  # no IN_MOVED_FROM in the tree: a new directory
    (watch_dir / "made").mkdir()
    (watch_dir / "made" / "file").write_text("x")
    pump(d, lambda: len(seen("IN_CREATE")) >= 2 and len(seen("IN_CREATE|IN_ISDIR")) >= 2)
    order = [e.pathname for e in ListProcessor.seen]
    for parent, child in [("new", "new/inner"), ("new/inner", "new/inner/file"), ("made", "made/file")]:
        assert order.index(str(watch_dir / parent)) < order.index(str(watch_dir / child)), order


# -- an uploader naming a directory like a deleted one ----------------------------------------


def test_a_root_named_like_a_deleted_directory_is_watched(in_process: Any, tmp_path: Path) -> None:
    root = tmp_path / "uploads (deleted)"
    root.mkdir()
    ListProcessor.seen.clear()
    d = in_process([(str(root), "IN_CREATE", LIST)])

    watch = d.watches["settings:0"]
    # It was "missing" forever: the kernel appends " (deleted)" to a deleted inode's name.
    assert watch.state == "active", watch.message


def test_a_new_subdirectory_named_like_a_deleted_one_is_watched_in_a_recursive_tree(
    in_process: Any, tmp_path: Path
) -> None:
    ListProcessor.seen.clear()
    d = in_process([(str(tmp_path), "IN_CREATE", LIST, {"recursive": True, "auto_add": True})])
    sub = tmp_path / "report (deleted)"
    sub.mkdir()
    pump(d, lambda: str(sub) in [e.pathname for e in ListProcessor.seen])
    marker = tmp_path / "marker"
    (sub / "inside").touch()
    marker.touch()  # delivered after "inside" if "inside" is delivered at all

    pump(d, lambda: str(marker) in [e.pathname for e in ListProcessor.seen])

    assert str(sub / "inside") in [e.pathname for e in ListProcessor.seen]
