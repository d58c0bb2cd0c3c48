"""Catch-up (issue 13, part 2): what changed while no daemon watched is delivered at each start."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inotifier import signals
from inotifier.daemon.watermarks import MARGIN_SECONDS, mark_key
from inotifier.models import Watermark
from inotifier.specs import WatchSpec
from tests.testapp.receivers import ListProcessor

from .conftest import DaemonProcess, pump, wait_for

LIST = "tests.testapp.receivers.ListProcessor"
RECORDING = "tests.testapp.receivers.RecordingProcessor"


class PendingProcessor(ListProcessor):
    """Record events; say an event is not yet safe while ``unsure`` is set (as TaskDispatcher does)."""

    unsure: float | None = None

    def inotifier_pending_since(self) -> float | None:
        return PendingProcessor.unsure


@pytest.fixture(autouse=True)
def seen() -> Iterator[list[Any]]:
    ListProcessor.seen.clear()
    PendingProcessor.unsure = None
    yield ListProcessor.seen
    ListProcessor.seen.clear()


@pytest.fixture
def rescans() -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        got.append(kwargs)

    signals.rescanned.connect(receiver, dispatch_uid="test-catchup")
    yield got
    signals.rescanned.disconnect(dispatch_uid="test-catchup")


def idle(daemon: Any, seconds: float = 0.6) -> None:
    """Tick for ``seconds`` (the loop samples "everything read was processed" every 0.5 s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.tick(timeout=0.02)


def delivered(seen: list[Any]) -> set[tuple[str, str]]:
    assert all(getattr(e, "synthetic", False) for e in seen), [e.pathname for e in seen]
    return {(e.pathname, e.maskname) for e in seen}


def entry(path: Path, mode: str, processor: str = LIST, **options: Any) -> list[Any]:
    return [str(path), "IN_CREATE|IN_CLOSE_WRITE", processor, {"catch_up": mode, **options}]


def spec_of(daemon: Any, path: Path) -> WatchSpec:
    return next(w.spec for w in daemon.watches.values() if w.root == str(path))


def stored_mark(spec: WatchSpec, host: str = "testhost") -> float:
    return Watermark.objects.get(host=host, key=mark_key(spec)).mark.timestamp()


def store_mark(path: Path, when: float, processor: str = LIST, host: str = "testhost") -> None:
    spec = WatchSpec(key="settings:0", path=str(path), mask=0, processor=processor)
    Watermark.objects.create(
        host=host, key=mark_key(spec), path=str(path), mark=datetime.fromtimestamp(when, UTC)
    )


def tree(top: Path, outside: Path) -> None:
    """top/a.txt, top/sub/b.txt, top/sub/deep/c.txt, top/skip/x.txt, top/out -> outside (a link)."""
    (top / "sub" / "deep").mkdir(parents=True)
    (top / "skip").mkdir()
    for name in ("a.txt", "sub/b.txt", "sub/deep/c.txt", "skip/x.txt"):
        (top / name).write_text("x")
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("s")
    (top / "out").symlink_to(outside)


# -- "all" ---------------------------------------------------------------------------------------


def test_all_delivers_every_entry_at_start_plain_and_recursive_with_excludes_never_through_a_link(
    in_process: Any, watch_dir: Path, tmp_path: Path, seen: list[Any], rescans: list[dict[str, Any]]
) -> None:
    plain, rec = watch_dir / "plain", watch_dir / "rec"
    tree(plain, tmp_path / "outside")
    tree(rec, tmp_path / "outside")

    def explode(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a receiver that raises")

    signals.rescanned.connect(explode, dispatch_uid="test-catchup-explode")
    try:
        daemon = in_process(
            [entry(plain, "all"), entry(rec, "all", recursive=True, auto_add=True, exclude=["skip"])]
        )
        pump(daemon, lambda: len(rescans) == 2)
    finally:
        signals.rescanned.disconnect(dispatch_uid="test-catchup-explode")
    p, r = str(plain), str(rec)
    assert delivered(seen) == {
        (f"{p}/a.txt", "IN_CREATE"),
        (f"{p}/a.txt", "IN_CLOSE_WRITE"),
        (f"{p}/sub", "IN_CREATE|IN_ISDIR"),
        (f"{p}/skip", "IN_CREATE|IN_ISDIR"),
        (f"{p}/out", "IN_CREATE"),  # the link itself, never what it points to
        (f"{r}/a.txt", "IN_CREATE"),
        (f"{r}/a.txt", "IN_CLOSE_WRITE"),
        (f"{r}/sub", "IN_CREATE|IN_ISDIR"),
        (f"{r}/sub/b.txt", "IN_CREATE"),
        (f"{r}/sub/b.txt", "IN_CLOSE_WRITE"),
        (f"{r}/sub/deep", "IN_CREATE|IN_ISDIR"),
        (f"{r}/sub/deep/c.txt", "IN_CREATE"),
        (f"{r}/sub/deep/c.txt", "IN_CLOSE_WRITE"),
        (f"{r}/out", "IN_CREATE"),
    }
    assert len(seen) == 14  # each once
    by_root = {spec_of(daemon, plain): 5, spec_of(daemon, rec): 9}
    assert {(s["watch"], s["reason"], s["count"]) for s in rescans} == {
        (spec, "start", count) for spec, count in by_root.items()
    }
    # Live events go on after the catch-up (the raising receiver stopped nothing).
    (rec / "sub" / "live.txt").write_text("y")
    pump(daemon, lambda: any(e.pathname.endswith("live.txt") for e in seen))
    live = [e for e in seen if e.pathname.endswith("live.txt")]
    assert not any(getattr(e, "synthetic", False) for e in live)
    assert daemon.watchset.rescans + daemon.watchset.catchup.done >= 2
    sample = daemon.monitor.sampler.take()
    assert sample.catchup_events == 14 and sample.rescans >= 2  # inotifier_catchup_events_total


def test_all_only_the_close_write_a_mask_asks_for(in_process: Any, watch_dir: Path, seen: list[Any]) -> None:
    (watch_dir / "f.txt").write_text("x")
    (watch_dir / "d").mkdir()
    daemon = in_process([[str(watch_dir), "IN_CLOSE_WRITE", LIST, {"catch_up": "all"}]])
    pump(daemon, lambda: not daemon.watchset.catchup.scans and seen)
    daemon.tick(timeout=0.05)
    assert delivered(seen) == {(f"{watch_dir}/f.txt", "IN_CLOSE_WRITE")}


# -- "changed" and the watermark -----------------------------------------------------------------


@pytest.mark.parametrize("lister", ["find", "python", "a find without -newermt"])
def test_changed_delivers_what_changed_since_the_mark_a_file_moved_in_too(
    lister: str,
    monkeypatch: pytest.MonkeyPatch,
    transactional_db: Any,
    in_process: Any,
    watch_dir: Path,
    tmp_path: Path,
    seen: list[Any],
    rescans: list[dict[str, Any]],
) -> None:
    top = watch_dir / "top"
    tree(top, tmp_path / "outside")
    time.sleep(0.05)
    mark = time.time()
    store_mark(top, mark)
    time.sleep(0.05)
    (top / "sub" / "deep" / "new.txt").write_text("n")
    (top / "skip" / "new.txt").write_text("n")  # excluded
    (tmp_path / "outside" / "new.txt").write_text("n")  # behind the link top/out: never followed
    (top / "a.txt").write_text("modified")
    old = watch_dir / "old.txt"
    old.write_text("o")
    os.utime(old, (946684800, 946684800))  # 2000-01-01: its mtime is older than the mark
    os.rename(old, top / "sub" / "moved-in.txt")
    if lister == "python":  # where find(1) is not installed: the scan lists the tree itself
        monkeypatch.setattr("inotifier.daemon.catchup.FIND", None)
    elif lister != "find":  # one that fails at once, printing nothing (busybox): the same
        monkeypatch.setattr("inotifier.daemon.finder.FIND", shutil.which("false"))
    daemon = in_process([entry(top, "changed", recursive=True, exclude=["skip"])], use_database=True)
    pump(daemon, lambda: rescans)
    t = str(top)
    names = {(p[len(t) :], m) for p, m in delivered(seen)}
    # a.txt and the directories that got a new entry changed; b.txt, c.txt did not.
    assert names == {
        ("/a.txt", "IN_CREATE"),
        ("/a.txt", "IN_CLOSE_WRITE"),
        ("/sub", "IN_CREATE|IN_ISDIR"),
        ("/sub/moved-in.txt", "IN_CREATE"),
        ("/sub/moved-in.txt", "IN_CLOSE_WRITE"),
        ("/sub/deep", "IN_CREATE|IN_ISDIR"),
        ("/sub/deep/new.txt", "IN_CREATE"),
        ("/sub/deep/new.txt", "IN_CLOSE_WRITE"),
    }
    assert rescans[0]["reason"] == "start" and rescans[0]["count"] == len(seen)
    # A clean stop writes the mark (it moves once MARGIN_SECONDS have passed since the seed).
    idle(daemon)  # idle turns: everything read was processed
    daemon.close()
    spec = spec_of(daemon, top)
    assert stored_mark(spec) >= mark - 1e-5  # written, never moved back


def test_changed_delivers_nothing_at_the_very_first_start_and_writes_a_mark(
    transactional_db: Any, in_process: Any, watch_dir: Path, seen: list[Any], rescans: list[dict[str, Any]]
) -> None:
    (watch_dir / "there-before.txt").write_text("x")
    daemon = in_process([entry(watch_dir, "changed")], use_database=True)
    idle(daemon)
    assert seen == [] and rescans == []
    daemon.close()
    assert stored_mark(spec_of(daemon, watch_dir)) > time.time() - MARGIN_SECONDS - 2


def test_settings_reordered_keep_the_mark(
    transactional_db: Any, in_process: Any, watch_dir: Path, seen: list[Any], rescans: list[dict[str, Any]]
) -> None:
    first, other = watch_dir / "first", watch_dir / "other"
    first.mkdir()
    other.mkdir()
    (first / "old.txt").write_text("x")
    daemon = in_process([entry(first, "changed")], use_database=True)
    idle(daemon)
    daemon.close()
    key = mark_key(spec_of(daemon, first))
    mark = Watermark.objects.get(key=key).mark
    time.sleep(0.05)
    # Written while stopped (after the mark, by construction: the margin is behind it).
    (first / "new.txt").write_text("y")
    again = in_process([entry(other, "all"), entry(first, "changed")], use_database=True)
    assert spec_of(again, first).key == "settings:1"
    # "first" is caught up (a first start would send nothing): its mark was found under the new key.
    pump(again, lambda: {r["watch"].path for r in rescans} == {str(first), str(other)})
    mine = {e.pathname for e in seen if e.pathname.startswith(str(first))}
    # The mark is MARGIN_SECONDS behind: old.txt (written just before) is delivered again too.
    assert f"{first}/new.txt" in mine
    # One mark for that watch, under the same key: the reorder made no new one.
    assert Watermark.objects.filter(path=str(first)).count() == 1
    assert Watermark.objects.get(key=key).mark >= mark


def test_the_mark_never_passes_an_event_not_yet_processed_nor_one_not_yet_safe(
    transactional_db: Any, in_process: Any, watch_dir: Path, seen: list[Any]
) -> None:
    processor = "tests.test_catchup.PendingProcessor"
    store_mark(watch_dir, time.time() - 100, processor=processor)
    daemon = in_process([entry(watch_dir, "changed", processor=processor)], use_database=True)
    spec = spec_of(daemon, watch_dir)
    idle(daemon)
    daemon.status.write(force=True)
    first = stored_mark(spec)
    # The loop is held: a file is written, the kernel queues its events, nobody reads them.
    time.sleep(MARGIN_SECONDS / 2)
    written = time.time()
    (watch_dir / "late.txt").write_text("x")
    time.sleep(MARGIN_SECONDS + 0.2)
    daemon.status.write(force=True)
    assert stored_mark(spec) < written - MARGIN_SECONDS / 2
    # Processed, but not yet safe (e.g. not committed to the outbox): still held back.
    PendingProcessor.unsure = time.time()
    pump(daemon, lambda: any(e.pathname.endswith("late.txt") for e in seen))
    idle(daemon)
    daemon.status.write(force=True)
    held = stored_mark(spec)
    assert first <= held < written - MARGIN_SECONDS / 2
    # Safe now: the mark moves on, past the file.
    PendingProcessor.unsure = None
    idle(daemon)
    daemon.status.write(force=True)
    assert stored_mark(spec) > written - MARGIN_SECONDS


# -- the other starts: a directory that appears, an overflow ---------------------------------------


def test_a_missing_directory_that_appears_is_caught_up(
    transactional_db: Any, in_process: Any, watch_dir: Path, seen: list[Any], rescans: list[dict[str, Any]]
) -> None:
    late = watch_dir / "late"
    daemon = in_process([entry(late, "changed", recursive=True)], use_database=True)
    (late / "sub").mkdir(parents=True)
    (late / "sub" / "f.txt").write_text("x")
    daemon.watchset.check_missing()
    pump(daemon, lambda: rescans)
    assert rescans[0]["reason"] == "reappeared" and rescans[0]["count"] == len(seen) == 3
    assert delivered(seen) == {
        (f"{late}/sub", "IN_CREATE|IN_ISDIR"),
        (f"{late}/sub/f.txt", "IN_CREATE"),
        (f"{late}/sub/f.txt", "IN_CLOSE_WRITE"),
    }


def test_an_overflow_starts_a_catch_up_that_finds_every_file(
    in_process: Any, watch_dir: Path, seen: list[Any], rescans: list[dict[str, Any]]
) -> None:
    from inotifier.daemon.kernel import read_sysctl

    # A reader buffer of a few events: the kernel's own queue is what overflows.
    daemon = in_process([entry(watch_dir, "all", recursive=True, auto_add=True)], INOTIFIER_QUEUE_SIZE=64)
    pump(daemon, lambda: rescans)  # the start's catch-up: nothing there yet
    rescans.clear()
    limit = int(read_sysctl("max_queued_events") or 16384)
    names = [f"{watch_dir}/f{i:06}" for i in range(limit + 100)]
    for name in names:  # two events each (create, close): the kernel's queue overflows
        with open(name, "w"):
            pass
    pump(daemon, lambda: rescans, timeout=30)
    assert daemon.status.overflows >= 1
    assert rescans[0]["reason"] == "overflow"
    found = {e.pathname for e in seen if e.maskname == "IN_CLOSE_WRITE"}
    assert found >= set(names)


# -- the real daemon: stopped, then started ---------------------------------------------------------


@pytest.mark.daemon
def test_files_written_while_the_daemon_was_stopped_are_delivered_at_the_next_start(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    (watch_dir / "before.txt").write_text("x")
    time.sleep(MARGIN_SECONDS + 0.2)  # older than any mark the first start can write
    daemon.watch_paths = [[str(watch_dir), "IN_CLOSE_WRITE", RECORDING, {"catch_up": "changed"}]]
    daemon.start()
    assert daemon.stop().returncode == 0  # the first start: nothing; its mark is written
    assert daemon.record.paths() == []
    assert Watermark.objects.count() == 1
    names = [watch_dir / f"while-stopped-{i}.txt" for i in range(20)]
    for name in names:
        name.write_text("y")
    daemon.start()
    wait_for(lambda: {str(n) for n in names} <= set(daemon.record.paths()), 20)
    assert str(watch_dir / "before.txt") not in daemon.record.paths()
    assert daemon.stop().returncode == 0


def test_an_exclusive_watch_taken_over_starts_from_the_newest_mark_of_any_host(
    transactional_db: Any,
    settings: Any,
    in_process: Any,
    watch_dir: Path,
    seen: list[Any],
    rescans: list[dict[str, Any]],
) -> None:
    from inotifier.masks import BITS
    from inotifier.models import WatchPath

    (watch_dir / "handled-by-the-old-holder.txt").write_text("x")
    time.sleep(0.05)
    mark = time.time()
    time.sleep(0.05)
    (watch_dir / "missed-meanwhile.txt").write_text("y")
    settings.INOTIFIER_PROCESSORS = [LIST]
    daemon = in_process([], use_database=True, hostname="files-2")
    pump(daemon, lambda: daemon.watchset.catchup.started)
    row = WatchPath.objects.create(
        path=str(watch_dir), mask=BITS["IN_CLOSE_WRITE"], processor=LIST, exclusive=True, catch_up="changed"
    )
    old = datetime.fromtimestamp(mark - 50, UTC)
    Watermark.objects.create(host="files-0", key=f"row:{row.pk}", path=str(watch_dir), mark=old)
    Watermark.objects.create(
        host="files-1", key=f"row:{row.pk}", path=str(watch_dir), mark=datetime.fromtimestamp(mark, UTC)
    )
    daemon.reconcile()
    pump(daemon, lambda: rescans)
    assert rescans[0]["reason"] == "added"
    assert delivered(seen) == {(f"{watch_dir}/missed-meanwhile.txt", "IN_CLOSE_WRITE")}


def test_the_admin_lists_watermarks_read_only_and_escaped(admin_client: Any) -> None:
    from django.urls import reverse

    Watermark.objects.create(
        host="files-1", key="row:7", path="/srv/in/<b>x</b>\x1b[31m", mark=datetime.fromtimestamp(1.8e9, UTC)
    )
    page = admin_client.get(reverse("admin:inotifier_watermark_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "files-1" in text and "row:7" in text
    assert "<b>x</b>" not in text and "\x1b" not in text
    assert admin_client.get(reverse("admin:inotifier_watermark_add")).status_code == 403
    mark = Watermark.objects.get()
    admin_client.post(reverse("admin:inotifier_watermark_change", args=[mark.pk]), {"key": "row:8"})
    assert Watermark.objects.get().key == "row:7"


def test_the_mark_stays_where_a_running_catch_up_started_from(
    transactional_db: Any, in_process: Any, watch_dir: Path, rescans: list[dict[str, Any]]
) -> None:
    seed = time.time() - 60
    store_mark(watch_dir, seed)
    (watch_dir / "f.txt").write_text("x")
    daemon = in_process([entry(watch_dir, "changed")], use_database=True)
    marks = daemon.watchset.catchup.marks
    watch = daemon.watches["settings:0"]
    assert daemon.watchset.catchup.scans  # armed at the start, not stepped yet
    marks.drained(time.time())
    time.sleep(0.01)
    assert marks.current(watch) == pytest.approx(seed)  # frozen: the scan has not delivered yet
    pump(daemon, lambda: rescans)
    idle(daemon)
    assert marks.current(watch) > seed + 50  # caught up: it moves on
