"""A hostile uploader against the real daemon: links swapped in, roots re-created, names that forge lines."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from inotifier.masks import BITS
from inotifier.models import WatchPath, WatchState

from .conftest import DaemonProcess, wait_for
from .kernelstate import identity, inotify_watches

pytestmark = pytest.mark.daemon

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
IN_CREATE = BITS["IN_CREATE"]
IN_CLOSE_WRITE = BITS["IN_CLOSE_WRITE"]


def watched_inodes(pid: int) -> set[tuple[int, int]]:
    """Return the (device, inode) of every inode the process holds an inotify watch on.

    Read from /proc/<pid>/fdinfo, i.e. from the kernel: what is really watched,
    whatever the daemon believes.
    """
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        found.update(inode for inode, _mask in inotify_watches(text).values())
    return found


def probe(daemon: DaemonProcess, directory: Path, name: str) -> None:
    """Create a file and wait until a receiver saw it: the daemon has caught up."""
    (directory / name).touch()
    daemon.record.wait_path(directory / name, timeout=10)


@pytest.fixture
def fenced(watch_dir: Path, daemon: DaemonProcess) -> tuple[Path, Path]:
    """An allowed root, and beside it a directory outside it holding a secret."""
    allowed = watch_dir / "allowed"
    outside = watch_dir / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    (outside / "deeper").mkdir()
    daemon.env_extra["INOTIFIER_ALLOWED_ROOTS"] = str(allowed)
    return allowed, outside


def test_a_link_swapped_in_for_a_new_directory_is_never_followed(
    daemon: DaemonProcess, fenced: tuple[Path, Path]
) -> None:
    allowed, outside = fenced
    tree = allowed / "uploads"
    tree.mkdir()
    WatchPath.objects.create(
        path=str(tree), mask=IN_CREATE | IN_CLOSE_WRITE, processor=SIGNALER, recursive=True, auto_add=True
    )
    pid = daemon.start()
    probe(daemon, tree, "ready")
    # The uploader's race: a directory appears (the daemon is told), and is replaced
    # by a link to elsewhere before the daemon gets to watch it.
    d = tree / "d"
    for _ in range(300):
        d.mkdir()
        d.rmdir()
        d.symlink_to(outside)
        time.sleep(0.002)
        d.unlink()
    d.symlink_to(outside)  # and left in place
    probe(daemon, tree, "caught-up")
    assert identity(outside) not in watched_inodes(pid)
    assert identity(outside / "deeper") not in watched_inodes(pid)
    # Nothing from outside was reported, neither found there nor written there now.
    (outside / "written-later").write_text("x")
    probe(daemon, tree, "caught-up-again")
    recorded = daemon.record.paths()
    assert not [p for p in recorded if "secret" in p or "written-later" in p or "deeper" in p]
    # The tree itself still works, subdirectories included.
    (tree / "real").mkdir()
    probe(daemon, tree / "real", "inside")
    # And a reload (a forced resync) watches nothing outside either.
    assert daemon.manage("inotifier_reload").returncode == 0
    probe(daemon, tree, "after-reload")
    assert identity(outside) not in watched_inodes(pid)


def test_directories_swapped_for_links_while_a_new_tree_is_walked_are_not_followed(
    daemon: DaemonProcess, fenced: tuple[Path, Path]
) -> None:
    """A big directory moved in is walked by the daemon while its entries become links."""
    allowed, outside = fenced
    tree = allowed / "drop"
    staging = allowed / "staging"
    tree.mkdir()
    staging.mkdir()
    WatchPath.objects.create(
        path=str(tree), mask=IN_CREATE, processor=SIGNALER, recursive=True, auto_add=True
    )
    pid = daemon.start()
    probe(daemon, tree, "ready")
    for round_ in range(3):
        batch = staging / f"t{round_}"
        names = [f"s{i:04d}" for i in range(2000)]
        for name in names:
            (batch / name).mkdir(parents=True)
        moved_in = tree / batch.name
        batch.rename(moved_in)  # the daemon lists it and watches its directories...
        for i, name in enumerate(names):  # ...while each becomes a link to elsewhere
            (moved_in / name).rename(staging / f"junk{round_}-{i}")
            (moved_in / name).symlink_to(outside)
    probe(daemon, tree, "caught-up")
    assert identity(outside) not in watched_inodes(pid)
    assert not [p for p in daemon.record.paths() if p.endswith("/secret.txt")]


def test_a_root_recreated_as_a_link_outside_the_allowed_roots_is_refused(
    daemon: DaemonProcess, fenced: tuple[Path, Path]
) -> None:
    allowed, outside = fenced
    spool = allowed / "spool"
    spool.mkdir()
    row = WatchPath.objects.create(path=str(spool), mask=IN_CREATE, processor=SIGNALER)
    pid = daemon.start()
    probe(daemon, spool, "ready")
    shutil.rmtree(spool)
    spool.symlink_to(outside)
    wait_for(
        lambda: (
            (s := WatchState.objects.filter(watch=row).first()) is not None
            and s.state == "error"
            and "outside INOTIFIER_ALLOWED_ROOTS" in s.message
        ),
        10,
    )
    assert identity(outside) not in watched_inodes(pid)
    (outside / "after").touch()
    time.sleep(0.6)  # more than a poll interval
    assert str(spool / "after") not in daemon.record.paths()
    assert "outside INOTIFIER_ALLOWED_ROOTS" in daemon.stderr_text()
    # The link replaced by a real directory again: watched within a poll, no reload needed.
    spool.unlink()
    spool.mkdir()
    wait_for(lambda: WatchState.objects.get(watch=row).state == "active", 10)
    probe(daemon, spool, "back")


def test_files_written_into_a_recreated_root_before_it_is_watched_again_are_delivered(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    spool = watch_dir / "spool"
    tree = watch_dir / "tree"
    spool.mkdir()
    tree.mkdir()
    daemon.watch_paths = [
        [str(spool), "IN_CREATE|IN_CLOSE_WRITE", SIGNALER],
        [str(tree), "IN_CLOSE_WRITE", SIGNALER, {"recursive": True, "auto_add": True}],
    ]
    daemon.env_extra["INOTIFIER_POLL_INTERVAL"] = "2"  # a wide window before the re-arm
    daemon.start()
    probe(daemon, spool, "ready")
    shutil.rmtree(spool)
    shutil.rmtree(tree)
    wait_for(lambda: WatchState.objects.filter(state="missing").count() == 2, 10)
    spool.mkdir()
    names = [f"early{i}" for i in range(20)]
    for name in names:
        (spool / name).write_text("data")
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "deep.txt").write_text("data")
    (tree / "top.txt").write_text("data")
    wait_for(lambda: WatchState.objects.filter(state="active").count() == 2, 10)
    for name in names:
        daemon.record.wait_path(spool / name, "IN_CREATE", timeout=5)
        daemon.record.wait_path(spool / name, "IN_CLOSE_WRITE", timeout=5)
    daemon.record.wait_path(tree / "a" / "b" / "deep.txt", "IN_CLOSE_WRITE", timeout=5)
    daemon.record.wait_path(tree / "top.txt", "IN_CLOSE_WRITE", timeout=5)
    # Later files arrive through the real events, once each.
    (tree / "a" / "b" / "later.txt").write_text("data")
    daemon.record.wait_path(tree / "a" / "b" / "later.txt", "IN_CLOSE_WRITE", timeout=5)
    assert daemon.record.paths("IN_CLOSE_WRITE").count(str(tree / "a" / "b" / "later.txt")) == 1


def test_names_that_forge_log_lines_or_drive_a_terminal_are_escaped(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    forged = "2026-01-01 00:00:00,000 CRITICAL inotifier.daemon[1]: forged"
    nasty = f"boom\n{forged}\x1b]0;pwned\x07\x1b[2J\u202e"
    tree = watch_dir / "tree"
    (tree / "sub").mkdir(parents=True)
    # A row written behind the admin's back (the admin and the checks refuse such a
    # path): the daemon logs it in error, naming it.
    hostile_row = watch_dir / f"gone\n{forged}\x1b[31m"
    WatchPath.objects.create(path=str(hostile_row), mask=IN_CREATE, processor=SIGNALER)
    daemon.watch_paths = [[str(tree), "IN_CREATE", SIGNALER, {"recursive": True, "auto_add": True}]]
    daemon.env_extra["INOTIFIER_TEST_RAISE"] = "1"  # the test receiver raises on names "boom..."
    daemon.start()
    probe(daemon, tree, "ready")
    (tree / "sub" / nasty).touch()  # the receiver's exception message holds the name
    wait_for(lambda: "receiver exploded" in daemon.stderr_text(), 10)
    (tree / f"new\n{forged}\x1b[2J").mkdir()  # a directory with such a name, watched
    probe(daemon, tree, "after")
    text = daemon.stderr_text()
    assert "contains a control or invisible character" in text  # the row was logged, named
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    for line in text.splitlines():
        assert not line.startswith(forged), line
    assert "\\x1b" in text  # shown, not dropped
