"""Settle: a path's events held until it is quiet, then delivered collapsed (real inotify, real daemon)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyinotify
import pytest
from django.test import Client, override_settings
from django.urls import reverse

from inotifier.checks import check_watch_paths
from inotifier.daemon.settle import Hold
from inotifier.forms import WatchPathForm
from inotifier.masks import BITS
from inotifier.models import EventLog, WatchPath

from .conftest import DaemonProcess, pump, wait_for

TIMED = "tests.test_settle.Timed"
SIGNALER = "inotifier.event_processors.AllEventsSignaler"
RAISING = "tests.testapp.receivers.RaisingProcessor"


class Timed(pyinotify.ProcessEvent):
    """Keep ``(time.monotonic(), event)`` of every event; ``closes``: what process_IN_CLOSE_WRITE got."""

    seen: list[tuple[float, Any]] = []
    closes: list[Any] = []

    def process_IN_CLOSE_WRITE(self, event: Any) -> None:
        Timed.closes.append(event)
        self.process_default(event)

    def process_default(self, event: Any) -> None:
        Timed.seen.append((time.monotonic(), event))


def seen() -> list[tuple[str, str, int]]:
    return [(e.maskname, e.pathname, e.count) for _t, e in Timed.seen]


def by_path() -> dict[str, list[tuple[str, int]]]:
    """The events delivered, per pathname, in the order they came."""
    paths: dict[str, list[tuple[str, int]]] = {}
    for _t, e in Timed.seen:
        paths.setdefault(e.pathname, []).append((e.maskname, e.count))
    return paths


@pytest.fixture
def settled(in_process: Any) -> Iterator[Callable[..., Any]]:
    Timed.seen.clear()
    Timed.closes.clear()
    yield in_process
    Timed.seen.clear()
    Timed.closes.clear()


def append_chunks(paths: list[Path], chunks: int, every: float = 0.01) -> float:
    """Append to each path ``chunks`` times (open, write, close), ``every`` s apart; return when done."""
    for _ in range(chunks):
        for path in paths:
            with open(path, "a") as fh:
                fh.write("0123456789")
        time.sleep(every)
    return time.monotonic()


def run_while(daemon: Any, work: Callable[[], float], until: Callable[[], Any], timeout: float = 15) -> float:
    """Run ``work`` in a thread while the daemon ticks, until it is done and ``until()``; return its result."""
    result: list[float] = []
    writer = threading.Thread(target=lambda: result.append(work()))
    writer.start()
    try:
        pump(daemon, lambda: not writer.is_alive() and until(), timeout)
    finally:
        writer.join()
    return result[0]


def tick_for(daemon: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.tick(timeout=0.02)


def test_a_file_written_in_100_chunks_is_one_close_write_with_its_count(
    settled: Any, watch_dir: Path
) -> None:
    d = settled([(str(watch_dir), "IN_CLOSE_WRITE|IN_MODIFY", TIMED, {"settle": 0.2})])
    upload = watch_dir / "upload.bin"
    done = run_while(d, lambda: append_chunks([upload], 100), lambda: Timed.closes)
    tick_for(d, 0.3)  # nothing more comes
    # One event per type, in the order of each type's last occurrence, each with its count.
    assert seen() == [("IN_MODIFY", str(upload), 100), ("IN_CLOSE_WRITE", str(upload), 100)]
    assert len(Timed.closes) == 1  # pyinotify's method dispatch: process_IN_CLOSE_WRITE, once
    delivered_at = Timed.seen[0][0]
    assert delivered_at >= done + 0.2 - 0.05  # held until the path was quiet for settle
    assert len(d.watches["settings:0"].hold) == 0


def test_two_files_written_interleaved_stay_apart(settled: Any, watch_dir: Path) -> None:
    d = settled([(str(watch_dir), "IN_CLOSE_WRITE", TIMED, {"settle": 0.2})])
    a, b = watch_dir / "a.txt", watch_dir / "b.txt"
    run_while(d, lambda: append_chunks([a, b], 30), lambda: len(Timed.seen) >= 2)
    tick_for(d, 0.3)
    assert by_path() == {str(a): [("IN_CLOSE_WRITE", 30)], str(b): [("IN_CLOSE_WRITE", 30)]}
    assert a.read_text() == b.read_text() == "0123456789" * 30


def test_a_file_that_never_stops_changing_is_delivered_after_settle_max(
    settled: Any, watch_dir: Path
) -> None:
    d = settled([(str(watch_dir), "IN_CLOSE_WRITE", TIMED, {"settle": 0.3, "settle_max": 0.6})])
    log = watch_dir / "growing.log"
    started = time.monotonic()
    done = run_while(d, lambda: append_chunks([log], 80, every=0.02), lambda: Timed.seen)
    during = [(t, e) for t, e in Timed.seen if t < done]
    assert len(during) >= 1  # delivered while it was still being written
    assert during[0][0] >= started + 0.6 - 0.05  # not before settle_max
    pump(d, lambda: sum(e.count for _t, e in Timed.seen) == 80)  # the rest, once quiet: none lost
    assert {e.maskname for _t, e in Timed.seen} == {"IN_CLOSE_WRITE"}


def test_events_outside_the_mask_extend_the_quiet_period(settled: Any, watch_dir: Path) -> None:
    d = settled([(str(watch_dir), "IN_CREATE", TIMED, {"settle": 0.2})])
    watch = d.watches["settings:0"]
    assert watch.kernel_mask & BITS["IN_MODIFY"]  # asked of the kernel, though not in the mask
    new = watch_dir / "new.txt"
    new.touch()

    def keep_writing() -> float:
        for _ in range(12):
            time.sleep(0.05)
            with open(new, "a") as fh:  # IN_MODIFY, IN_CLOSE_WRITE: not delivered, but changes
                fh.write("x")
        return time.monotonic()

    done = run_while(d, keep_writing, lambda: Timed.seen)
    tick_for(d, 0.3)
    assert seen() == [("IN_CREATE", str(new), 1)]
    assert Timed.seen[0][0] >= done + 0.2 - 0.05


def test_types_come_in_the_order_of_their_last_occurrence_moves_keep_their_source(
    settled: Any, watch_dir: Path
) -> None:
    mask = "IN_CREATE|IN_MODIFY|IN_ATTRIB|IN_CLOSE_WRITE|IN_DELETE|IN_MOVED_FROM|IN_MOVED_TO"
    d = settled([(str(watch_dir), mask, TIMED, {"settle": 0.3})])
    f, g, h, h2 = (watch_dir / name for name in ("f", "g", "h", "h2"))
    f.write_text("x")  # IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE
    f.chmod(0o600)  # IN_ATTRIB
    with open(f, "a") as fh:  # IN_MODIFY, IN_CLOSE_WRITE again: they move after IN_ATTRIB
        fh.write("y")
    g.write_text("")  # IN_CREATE, IN_CLOSE_WRITE ...
    g.unlink()  # ... IN_DELETE: created and deleted while held, both still delivered
    h.write_text("z")
    h.rename(h2)  # IN_MOVED_FROM on h, IN_MOVED_TO on h2
    pump(d, lambda: str(h2) in by_path() and str(f) in by_path() and str(g) in by_path())
    tick_for(d, 0.1)
    paths = by_path()
    assert paths[str(f)] == [("IN_CREATE", 1), ("IN_ATTRIB", 1), ("IN_MODIFY", 2), ("IN_CLOSE_WRITE", 2)]
    assert paths[str(g)] == [("IN_CREATE", 1), ("IN_CLOSE_WRITE", 1), ("IN_DELETE", 1)]
    assert paths[str(h)] == [("IN_CREATE", 1), ("IN_MODIFY", 1), ("IN_CLOSE_WRITE", 1), ("IN_MOVED_FROM", 1)]
    assert paths[str(h2)] == [("IN_MOVED_TO", 1)]
    events = {(e.pathname, e.maskname): e for _t, e in Timed.seen}
    moved_to, moved_from = events[str(h2), "IN_MOVED_TO"], events[str(h), "IN_MOVED_FROM"]
    assert moved_to.src_pathname == str(h)
    assert moved_to.cookie == moved_from.cookie != 0
    assert (moved_to.path, moved_to.name, moved_to.dir) == (str(watch_dir), "h2", False)
    assert all(not e.synthetic for _t, e in Timed.seen)


def test_a_settled_directory_and_its_tree(settled: Any, watch_dir: Path) -> None:
    d = settled(
        [
            (
                str(watch_dir),
                "IN_CREATE|IN_CLOSE_WRITE",
                TIMED,
                {"settle": 0.2, "recursive": True, "auto_add": True},
            )
        ]
    )
    sub = watch_dir / "sub"
    sub.mkdir()
    pump(d, lambda: str(sub) in d.watches["settings:0"].paths)  # followed at once, though held
    for i in range(5):
        (sub / "f").write_text(str(i))
    pump(d, lambda: len(Timed.seen) >= 3)
    tick_for(d, 0.3)
    assert by_path() == {
        str(sub): [("IN_CREATE|IN_ISDIR", 1)],
        str(sub / "f"): [("IN_CREATE", 1), ("IN_CLOSE_WRITE", 5)],
    }
    assert [e.dir for _t, e in Timed.seen if e.pathname == str(sub)] == [True]


def test_held_events_are_delivered_at_close_and_the_end_of_a_watch_at_once(
    settled: Any, watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = watch_dir / "spool"
    spool.mkdir()
    d = settled([(str(spool), "IN_CREATE|IN_DELETE_SELF", TIMED, {"settle": 60})])
    watch = d.watches["settings:0"]
    assert watch.held_since() is None
    before = time.time()
    (spool / "a").touch()
    (spool / "b").touch()
    pump(d, lambda: len(watch.hold) == 2)
    since = watch.held_since()
    assert since is not None and before - 0.01 <= since <= time.time()
    held = {f.name: f for f in d.monitor.sampler.take().extra}["inotifier_settle_held_paths"]
    assert held.samples == (((str(spool), "settings:0"), 2.0),)
    (spool / "a").unlink()  # IN_DELETE, not in the mask: only keeps "a" from being quiet
    (spool / "b").unlink()
    spool.rmdir()
    # The end of the kernel watch is not held: IN_DELETE_SELF and IN_IGNORED come at once.
    pump(d, lambda: len(Timed.seen) == 2)
    assert seen() == [("IN_DELETE_SELF", str(spool), 1), ("IN_IGNORED", str(spool), 1)]
    assert watch.state == "missing"
    with caplog.at_level(logging.INFO, logger="inotifier"):
        d.close()  # a clean stop: what is held is delivered first
    assert seen()[2:] == [("IN_CREATE", str(spool / "a"), 1), ("IN_CREATE", str(spool / "b"), 1)]
    assert any("2 held events of 2 paths delivered" in r.getMessage() for r in caplog.records)


def test_a_rebuilt_watch_keeps_its_held_paths_and_a_removed_one_delivers_them(
    settled: Any, watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry: list[Any] = [str(watch_dir), "IN_CREATE", TIMED, {"settle": 60}]
    d = settled([entry])
    old = d.watches["settings:0"]
    (watch_dir / "a").touch()
    pump(d, lambda: len(old.hold) == 1)
    with override_settings(INOTIFIER_WATCH_PATHS=[[*entry[:3], {"settle": 60, "recursive": True}]]):
        d.reconcile(force=True)  # another tree: a new watch replaces the old one
    new = d.watches["settings:0"]
    assert new is not old and new.hold is not None and len(new.hold) == 1 and Timed.seen == []
    with caplog.at_level(logging.INFO, logger="inotifier"), override_settings(INOTIFIER_WATCH_PATHS=[]):
        d.reconcile(force=True)
    assert seen() == [("IN_CREATE", str(watch_dir / "a"), 1)]
    assert any(
        "stopped watching; 1 held events of 1 paths delivered" in r.getMessage() for r in caplog.records
    )
    assert not d.watchset.holding


def test_a_burst_of_due_paths_is_delivered_a_turn_at_a_time_each_file_once(
    settled: Any, watch_dir: Path
) -> None:
    files = 20_000
    d = settled([(str(watch_dir), "IN_CLOSE_WRITE", TIMED, {"settle": 0.05})])
    watch = d.watches["settings:0"]
    writer = "import os, sys\nfor i in range(int(sys.argv[2])):\n    open(os.path.join(sys.argv[1], f'f{i}'), 'w').close()\n"
    subprocess.run([sys.executable, "-c", writer, str(watch_dir), str(files)], check=True)
    pump(d, lambda: len(watch.hold) + len(Timed.seen) == files and not d.dispatcher.has_work(), 30)
    while watch.hold and d.watchset.next_due() > time.monotonic():
        time.sleep(0.01)  # (all due, or some delivered already)
    before = len(Timed.seen)
    d.dispatcher.process(deadline=time.monotonic())  # one loop turn's share
    if before < files:  # (a machine fast enough to deliver them all while routing: nothing to check)
        assert before < len(Timed.seen) < files  # a turn of them, not all at once: the loop goes on
    pump(d, lambda: len(Timed.seen) == files, 30)
    assert sorted(e.pathname for _t, e in Timed.seen) == sorted(
        str(watch_dir / f"f{i}") for i in range(files)
    )
    assert {(e.maskname, e.count) for _t, e in Timed.seen} == {("IN_CLOSE_WRITE", 1)}


@pytest.mark.django_db(transaction=True)
def test_an_exclusive_watch_removed_drops_what_it_held_and_says_so(
    in_process: Any, settings: Any, watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Timed.seen.clear()
    settings.INOTIFIER_POLL_INTERVAL = 3600
    settings.INOTIFIER_PROCESSORS = [TIMED]
    settings.INOTIFIER_WATCH_PATHS = []
    row = WatchPath.objects.create(
        path=str(watch_dir), mask=BITS["IN_CREATE"], processor=TIMED, exclusive=True, settle=60
    )
    d = in_process(use_database=True)
    watch = d.watches[f"row:{row.pk}"]
    (watch_dir / "f").touch()
    pump(d, lambda: len(watch.hold) == 1)
    WatchPath.objects.filter(pk=row.pk).update(enabled=False)
    with caplog.at_level(logging.INFO, logger="inotifier"):
        d.reconcile(force=True)
    assert f"row:{row.pk}" not in d.watches
    assert Timed.seen == []  # another daemon may hold it now: it does not deliver after it
    assert any("1 held paths dropped (an exclusive watch" in r.getMessage() for r in caplog.records)


def test_the_loop_wakes_for_the_next_due_path(settled: Any, watch_dir: Path, settings: Any) -> None:
    settings.INOTIFIER_POLL_INTERVAL = 30  # nothing else would wake an idle loop for seconds
    d = settled([(str(watch_dir), "IN_CREATE", TIMED, {"settle": 0.2})])
    (watch_dir / "f").touch()
    pump(d, lambda: len(d.watches["settings:0"].hold) == 1)
    started = time.monotonic()
    while not Timed.seen and time.monotonic() - started < 10:
        d.tick()  # no timeout given: the loop computes it from its deadlines
    assert seen() == [("IN_CREATE", str(watch_dir / "f"), 1)]
    assert time.monotonic() - started < 2.0  # woken by the hold, not by the 5 s sample or the poll


def test_a_processor_raising_on_a_collapsed_event_does_not_stop_the_daemon(
    settled: Any, watch_dir: Path
) -> None:
    d = settled([(str(watch_dir), "IN_CLOSE_WRITE", RAISING, {"settle": 0.1})])
    for i in range(3):
        for _ in range(4):
            with open(watch_dir / f"boom{i}", "a") as fh:
                fh.write("x")
    pump(d, lambda: d.watchset.errors == 3)
    (watch_dir / "after").write_text("x")
    pump(d, lambda: d.watchset.errors == 4)
    assert d.watches["settings:0"].errors == 4
    assert d.watches["settings:0"].state == "active"


def test_the_hold_orders_types_by_last_occurrence_and_counts_each() -> None:
    """The hold alone (no inotify), fed by hand: what ``deliver`` hands on for a path."""
    hold = Hold(quiet=0.0, longest=10.0)
    out: list[tuple[int, str, str, str, int]] = []

    def emit(wd: int, mask: int, cookie: int, name: str, path: str, pathname: str, *rest: Any) -> None:
        out.append((mask, name, path, pathname, rest[-1]))

    first = hold.add("/d/f", 1, 7, 0, "/d", "", False)
    for mask in (2, 8, 2, 2, 4, 8):
        assert hold.add("/d/f", mask, 7, 0, "/d", "", False) is False
    hold.add("/d", 4, 6, 0, "/d", "", False)  # an event about the directory itself: no name
    assert first is True and len(hold) == 2
    assert hold.release(emit, time.monotonic() + 1) == 5
    assert out == [
        (1, "f", "/d", "/d/f", 1),
        (2, "f", "/d", "/d/f", 3),
        (4, "f", "/d", "/d/f", 1),
        (8, "f", "/d", "/d/f", 2),
        (4, "", "/d", "/d", 1),
    ]
    assert len(hold) == 0 and hold.held_since() is None and hold.next_due() == float("inf")


@pytest.mark.django_db(transaction=True)
def test_collapsed_events_are_logged_once_each(in_process: Any, settings: Any, watch_dir: Path) -> None:
    Timed.seen.clear()
    settings.INOTIFIER_POLL_INTERVAL = 3600
    settings.INOTIFIER_PROCESSORS = [TIMED]
    settings.INOTIFIER_WATCH_PATHS = [[str(watch_dir), "IN_CLOSE_WRITE|IN_MODIFY", TIMED, {"settle": 0.1}]]
    d = in_process(
        settings.INOTIFIER_WATCH_PATHS,
        use_database=True,
        INOTIFIER_EVENT_LOG=True,
        INOTIFIER_EVENT_LOG_FLUSH_INTERVAL=3600,
    )
    for _ in range(10):
        with open(watch_dir / "f", "a") as fh:
            fh.write("x")
    pump(d, lambda: len(Timed.seen) == 2)
    assert d.event_log is not None and d.event_log.flush()
    rows = EventLog.objects.filter(pathname=str(watch_dir / "f")).order_by("pk")
    assert [r.maskname for r in rows] == ["IN_MODIFY", "IN_CLOSE_WRITE"]  # one row per collapsed event
    Timed.seen.clear()


def admin_post(client: Client, row: WatchPath, **fields: Any) -> Any:
    data: dict[str, Any] = {
        "path": row.path,
        "mask": ["IN_CREATE"],
        "processor": row.processor,
        "enabled": "on",
        "exclude": "",
        "host": "",
        "event_log": "on",
        "description": "",
        "settle": "",
        "settle_max": "",
        "catch_up": "",
    }
    data.update(fields)
    return client.post(reverse("admin:inotifier_watchpath_change", args=[row.pk]), data)


@pytest.mark.django_db(transaction=True)
def test_settle_set_in_the_admin_is_applied_in_place(
    in_process: Any, settings: Any, watch_dir: Path, django_user_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    Timed.seen.clear()
    settings.INOTIFIER_POLL_INTERVAL = 3600
    settings.INOTIFIER_PROCESSORS = [TIMED]
    settings.INOTIFIER_WATCH_PATHS = []
    row = WatchPath.objects.create(path=str(watch_dir), mask=BITS["IN_CREATE"], processor=TIMED)
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("admin", "a@example.com", "pw"))
    d = in_process(use_database=True)
    key = f"row:{row.pk}"
    assert d.watches[key].hold is None

    response = admin_post(client, row, settle="30")
    assert response.status_code == 302, response.content.decode()[-2000:]
    row.refresh_from_db()
    assert (row.settle, row.settle_max) == (30.0, None)
    d.reconcile()
    watch = d.watches[key]
    assert watch.hold is not None and (watch.hold.quiet, watch.hold.longest) == (30.0, 300.0)
    assert watch.kernel_mask & BITS["IN_MODIFY"]
    (watch_dir / "f").touch()
    pump(d, lambda: len(watch.hold) == 1)

    assert admin_post(client, row, settle="40", settle_max="50").status_code == 302
    d.reconcile()
    assert d.watches[key] is watch and len(watch.hold) == 1  # new times, the held path kept
    assert (watch.hold.quiet, watch.hold.longest) == (40.0, 50.0)
    assert Timed.seen == []

    with caplog.at_level(logging.INFO, logger="inotifier"):
        assert admin_post(client, row, settle="0").status_code == 302
        d.reconcile()
    assert seen() == [("IN_CREATE", str(watch_dir / "f"), 1)]  # settle off: delivered at once
    assert d.watches[key].hold is None and not d.watchset.holding
    assert not d.watches[key].kernel_mask & BITS["IN_MODIFY"]
    assert any(
        "settle turned off; 1 held events of 1 paths delivered" in r.getMessage() for r in caplog.records
    )
    Timed.seen.clear()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"settle": -1}, "settle must be between 0 and 3600 seconds, not -1"),
        ({"settle": "soon"}, "settle must be a number of seconds, not 'soon'"),
        ({"settle": 1, "settle_max": 0.5}, "settle_max (0.5 s) is shorter than settle (1.0 s)"),
        ({"settle_max": 5}, "settle_max is set but settle is 0 (off)"),
        ({"settle": 7200}, "settle must be between 0 and 3600 seconds, not 7200"),
    ],
)
def test_bad_settle_options_in_settings_are_named(
    settings: Any, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    settings.INOTIFIER_WATCH_PATHS = [(str(tmp_path), "IN_CREATE", SIGNALER, options)]
    assert [(m.id, m.msg) for m in check_watch_paths()] == [
        ("inotifier.E001", f"INOTIFIER_WATCH_PATHS[0]: {message}")
    ]


def test_a_watch_past_its_settle_max_paths_delivers_the_least_recently_changed_early(
    settled: Any, watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An uploader who creates files without end must not make the daemon's memory grow without
    # end: past INOTIFIER_SETTLE_MAX_PATHS the oldest paths go, delivered, never dropped.
    with override_settings(INOTIFIER_SETTLE_MAX_PATHS=50):
        d = settled([(str(watch_dir), "IN_CLOSE_WRITE", TIMED, {"settle": 60})])
    watch = d.watches["settings:0"]
    names = [watch_dir / f"f{i:03}" for i in range(120)]
    with caplog.at_level(logging.WARNING, logger="inotifier"):
        for path in names:
            path.write_text("x")
        pump(d, lambda: len(Timed.seen) >= 70)
        d.tick(timeout=0.05)
    assert len(watch.hold) <= 50
    assert [p for _m, p, _c in seen()] == [str(p) for p in names[: len(Timed.seen)]]  # oldest first
    assert any("more than INOTIFIER_SETTLE_MAX_PATHS (50)" in r.getMessage() for r in caplog.records)
    d.close()
    assert sorted(p for _m, p, _c in seen()) == [str(p) for p in names]  # each once, none lost


def test_a_bad_settle_max_paths_is_named(settings: Any) -> None:
    settings.INOTIFIER_SETTLE_MAX_PATHS = "lots"
    assert [(m.id, m.msg) for m in check_watch_paths()] == [
        ("inotifier.E001", "INOTIFIER_SETTLE_MAX_PATHS must be a positive integer (paths), not 'lots'")
    ]


@pytest.mark.parametrize(
    ("settle", "settle_max", "field", "message"),
    [
        ("-1", "", "settle", "settle must be between 0 and 3600 seconds, not -1.0"),
        ("2", "1", "settle_max", "settle_max (1.0 s) is shorter than settle (2.0 s)"),
        ("0", "3", "settle_max", "settle_max is set but settle is 0 (off)"),
    ],
)
def test_bad_settle_values_in_the_admin_form_are_named(
    db: Any, settings: Any, tmp_path: Path, settle: str, settle_max: str, field: str, message: str
) -> None:
    settings.INOTIFIER_PROCESSORS = None
    settings.INOTIFIER_WATCH_PATHS = []
    form = WatchPathForm(
        data={
            "path": str(tmp_path),
            "mask": ["IN_CLOSE_WRITE"],
            "processor": SIGNALER,
            "enabled": "on",
            "event_log": "on",
            "settle": settle,
            "settle_max": settle_max,
        }
    )
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


@pytest.mark.daemon
def test_a_settled_watch_from_the_settings_dict_in_the_real_daemon(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    chunks, later = watch_dir / "chunks", watch_dir / "later"
    chunks.mkdir()
    later.mkdir()
    daemon.watch_paths = [
        [str(chunks), "IN_CLOSE_WRITE", SIGNALER, {"settle": 0.2}],
        [str(later), "IN_CREATE", SIGNALER, {"settle": 60}],
    ]
    daemon.start()
    target = chunks / "upload"
    append_chunks([target], 30)
    daemon.record.wait_path(target, "IN_CLOSE_WRITE")
    (later / "held").touch()
    time.sleep(0.5)  # the upload had time to be delivered twice, were it not settled
    assert daemon.record.paths("IN_CLOSE_WRITE") == [str(target)]
    assert str(later / "held") not in daemon.record.paths()  # held for 60 s ...
    assert daemon.stop().returncode == 0
    wait_for(lambda: daemon.pid() is None, 10)
    assert daemon.record.paths("IN_CREATE") == [str(later / "held")]  # ... and delivered at the stop
    assert "1 held events of 1 paths delivered" in daemon.stderr_text()
