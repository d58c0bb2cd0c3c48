"""Watches in the daemon (driven in-process on real inotify) against pyinotify's own Notifier."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyinotify
import pytest
from django.test import override_settings

from tests.testapp.receivers import ListProcessor

from .conftest import PyinotifyRun, pump

LIST = "tests.testapp.receivers.ListProcessor"


class Reference:
    """What pyinotify's own Notifier hands a processor on the same directory: what its users got."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.runs: list[PyinotifyRun] = []

    def watch(self, path: Path, mask: int, rec: bool = False) -> None:
        events = self.events

        class Keep(pyinotify.ProcessEvent):
            def process_default(self, event: Any) -> None:
                events.append(event)

        self.runs.append(PyinotifyRun(path, mask, Keep(), rec=rec))

    def pump(self, until: Any, timeout: float = 5.0) -> None:
        for run in self.runs:
            run.pump(until, timeout)

    def close(self) -> None:
        for run in self.runs:
            run.close()


@pytest.fixture
def reference() -> Iterator[Reference]:
    ref = Reference()
    yield ref
    ref.close()


@pytest.fixture
def in_daemon(in_process: Any) -> Iterator[Any]:
    ListProcessor.seen.clear()
    yield in_process
    ListProcessor.seen.clear()


def seen(events: list[Any]) -> list[tuple[str, str, bool]]:
    return [(e.maskname, e.pathname, bool(e.dir)) for e in events]


def test_self_events_of_a_directory_say_dir_and_ignored_reaches_the_processor(
    in_daemon: Any, reference: Reference, watch_dir: Path
) -> None:
    target = watch_dir / "target"
    target.mkdir()
    mask = pyinotify.IN_DELETE_SELF | pyinotify.IN_CREATE
    reference.watch(target, mask)
    d = in_daemon([(str(target), mask, LIST)])
    target.rmdir()
    expected = [("IN_DELETE_SELF", str(target), True), ("IN_IGNORED", str(target), False)]
    reference.pump(lambda: len(reference.events) >= 2)
    pump(d, lambda: len(ListProcessor.seen) >= 2)
    assert seen(reference.events) == expected  # what pyinotify's users got in 2010 and today
    assert seen(ListProcessor.seen) == expected


def test_ignored_reaches_the_processor_whatever_the_mask(in_daemon: Any, watch_dir: Path) -> None:
    target = watch_dir / "target"
    target.mkdir()
    d = in_daemon([(str(target), "IN_CLOSE_WRITE", LIST)])
    target.rmdir()
    pump(d, lambda: ListProcessor.seen)
    assert seen(ListProcessor.seen) == [("IN_IGNORED", str(target), False)]


def test_a_deleted_subdirectory_of_a_tree_matches_pyinotify(
    in_daemon: Any, reference: Reference, watch_dir: Path
) -> None:
    (watch_dir / "a" / "b").mkdir(parents=True)
    mask = pyinotify.IN_DELETE | pyinotify.IN_DELETE_SELF
    reference.watch(watch_dir, mask, rec=True)
    d = in_daemon([(str(watch_dir), mask, LIST, {"recursive": True, "auto_add": True})])
    shutil.rmtree(watch_dir / "a")
    reference.pump(lambda: len(reference.events) >= 6)
    pump(d, lambda: len(ListProcessor.seen) >= 6)
    assert sorted(seen(ListProcessor.seen)) == sorted(seen(reference.events))
    assert ("IN_DELETE_SELF", str(watch_dir / "a" / "b"), True) in seen(ListProcessor.seen)


def test_a_file_root_is_not_a_directory(in_daemon: Any, reference: Reference, watch_dir: Path) -> None:
    target = watch_dir / "file.txt"
    target.write_text("x")
    mask = pyinotify.IN_DELETE_SELF
    reference.watch(target, mask)
    d = in_daemon([(str(target), mask, LIST)])
    target.unlink()
    reference.pump(lambda: len(reference.events) >= 2)
    pump(d, lambda: len(ListProcessor.seen) >= 2)
    assert seen(ListProcessor.seen) == seen(reference.events)
    assert seen(ListProcessor.seen)[0] == ("IN_DELETE_SELF", str(target), False)


def test_a_root_given_through_a_link_is_watched_where_it_leads(in_daemon: Any, watch_dir: Path) -> None:
    real = watch_dir / "releases" / "r2"
    real.mkdir(parents=True)
    current = watch_dir / "current"
    current.symlink_to(real)
    d = in_daemon([(str(current), "IN_CREATE", LIST, {"recursive": True, "auto_add": True})])
    (real / "new").mkdir()
    (real / "new" / "f").touch()
    pump(d, lambda: str(current / "new" / "f") in [e.pathname for e in ListProcessor.seen])
    watch = d.watches["settings:0"]
    assert watch.state == "active"
    assert str(current / "new") in watch.paths


def test_leaf_directories_are_watched_without_being_listed(in_daemon: Any, watch_dir: Path) -> None:
    for a in range(3):
        for b in range(4):
            (watch_dir / f"a{a}" / f"b{b}").mkdir(parents=True)
    d = in_daemon([(str(watch_dir), "IN_CREATE", LIST, {"recursive": True})])
    watch = d.watches["settings:0"]
    assert len(watch.paths) == 1 + 3 + 12
    (watch_dir / "a2" / "b3" / "f").touch()
    pump(d, lambda: [e.pathname for e in ListProcessor.seen] == [str(watch_dir / "a2" / "b3" / "f")])


def test_healthy_watches_are_summarised_and_each_problem_logged_once(
    in_daemon: Any, watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entries: list[Any] = []
    for i in range(30):
        (watch_dir / f"ok{i}").mkdir()
        entries.append((str(watch_dir / f"ok{i}"), "IN_CREATE", LIST))
    entries.append((str(watch_dir / "nowhere"), "IN_CREATE", LIST))
    entries.append((str(watch_dir / "ok0"), "IN_CREATE", "tests.testapp.receivers.NOT_A_CLASS"))
    with caplog.at_level(logging.INFO, logger="inotifier"), override_settings(INOTIFIER_WATCH_PATHS=entries):
        d = in_daemon(entries)
        d.reconcile(force=True)  # nothing changed: nothing new to say
        d.watchset.check_missing()
    lines = [r.getMessage() for r in caplog.records]
    about_ok = [line for line in lines if "/ok1 " in line or line.endswith("/ok1")]
    assert about_ok == []  # a healthy watch is counted, not logged one by one
    missing = [line for line in lines if "nowhere" in line]
    assert len(missing) == 1 and "does not exist" in missing[0]
    broken = [line for line in lines if "NOT_A_CLASS" in line]
    assert len(broken) == 1 and "not a class" in broken[0]
    summary = [line for line in lines if line.startswith("reconciled in")]
    assert summary and "32 watches: 30 active, 1 missing, 1 in error" in summary[0]
    os.mkdir(watch_dir / "nowhere")
    with caplog.at_level(logging.INFO, logger="inotifier"):
        d.watchset.check_missing()
    assert any(
        "watching" in line and "nowhere" in line and "again" in line
        for line in [r.getMessage() for r in caplog.records]
    )
