"""TaskDispatcher and the outbox: the payload, the checks, pending_since, the writer and the dispatcher."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import DatabaseError, connection
from django.test import override_settings
from django.utils import timezone

from inotifier import handoff
from inotifier.daemon.events import InotifierEvent
from inotifier.daemon.handoff import Handoff, OutboxBuffer, OutboxConfig, OutboxDispatcher, OutboxWriter
from inotifier.escaping import unescape_path
from inotifier.handoff import Pending, WatchRef, build_payload
from inotifier.handoff.engines import DjangoTasksEngine, load_task
from inotifier.masks import BITS
from inotifier.outbox import OutboxEntry, write_rows
from inotifier.states import HandoffState

from . import handoff_tasks
from .conftest import pump, wait_for
from .task_record import RECEIVED, read_records

pytestmark = pytest.mark.skipif(handoff_tasks.task is None, reason="neither django.tasks nor django-tasks")

IN_CLOSE_WRITE = BITS["IN_CLOSE_WRITE"]
IN_CREATE = BITS["IN_CREATE"]
RECORDER = "tests.handoff_tasks.DjangoRecorder"
FIELDS = {
    "id",
    "pathname",
    "path",
    "name",
    "maskname",
    "mask",
    "dir",
    "src_pathname",
    "watch",
    "host",
    "time",
    "synthetic",
    "count",
    "escaped",
}


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    RECEIVED.clear()
    handoff_tasks.FAIL_NEXT.clear()
    yield
    RECEIVED.clear()
    handoff_tasks.FAIL_NEXT.clear()


def event(pathname: str, mask: int = IN_CLOSE_WRITE, **extra: Any) -> InotifierEvent:
    path, _sep, name = pathname.rpartition("/")
    attrs = {"pathname": pathname, "path": path, "name": name, "mask": mask, "dir": False}
    attrs["maskname"] = "IN_CLOSE_WRITE" if mask == IN_CLOSE_WRITE else "IN_CREATE"
    return InotifierEvent(**attrs, **extra)


def pending(pathname: str, **changes: Any) -> Pending:
    ref = WatchRef("tests.handoff_tasks.record", "settings:0", "/srv/in", None, "host-a")
    row = Pending(
        ref, pathname, "/srv/in", pathname.rpartition("/")[2], 8, "IN_CLOSE_WRITE", False, None, False, 1, 0.0
    )
    changes.setdefault("time", time.time())
    return row._replace(**changes)


# -- the payload ---------------------------------------------------------------------------


def test_the_payload_has_every_field_in_json_types() -> None:
    row = pending(
        "/srv/in/a.txt", src_pathname="/srv/in/a.part", synthetic=True, collapsed=7, time=1700000000.25
    )
    payload = build_payload(row, "5b0c")
    assert set(payload) == FIELDS
    assert json.loads(json.dumps(payload)) == payload
    assert payload == {
        "id": "5b0c",
        "pathname": "/srv/in/a.txt",
        "path": "/srv/in",
        "name": "a.txt",
        "maskname": "IN_CLOSE_WRITE",
        "mask": 8,
        "dir": False,
        "src_pathname": "/srv/in/a.part",
        "watch": "settings:0",
        "host": "host-a",
        "time": "2023-11-14T22:13:20.250000+00:00",
        "synthetic": True,
        "count": 7,
        "escaped": False,
    }
    assert datetime.fromisoformat(payload["time"]).timestamp() == 1700000000.25


def test_names_that_are_not_utf8_arrive_escaped_and_give_their_bytes_back() -> None:
    raw = b"/srv/in/caf\xe9 \\x41.txt"
    name = os.fsdecode(raw)
    row = pending(name, path="/srv/in", name=name.rpartition("/")[2], src_pathname="/srv/in/b\\c")
    payload = build_payload(row, "x")
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # no lone surrogate left
    assert payload["escaped"] is True
    assert payload["pathname"] == "/srv/in/caf\\xe9 \\\\x41.txt"
    assert unescape_path(payload["pathname"]) == raw
    assert unescape_path(payload["name"]) == raw.rpartition(b"/")[2]
    assert unescape_path(payload["src_pathname"]) == b"/srv/in/b\\c"  # escaped with the others
    assert build_payload(pending("/srv/in/b\\c"), "y")["pathname"] == "/srv/in/b\\c"  # valid UTF-8: as is


# -- the task, checked when the processor is created ----------------------------------------


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (
            handoff_tasks.NoTask,
            "NoTask.task is not set: name the task to call as a dotted path (task = 'myapp.tasks.process_file')",
        ),
        (
            handoff_tasks.MissingTask,
            "MissingTask.task: task 'tests.handoff_tasks.no_such_task' cannot be imported: Module "
            '"tests.handoff_tasks" does not define a "no_such_task" attribute/class',
        ),
        (
            handoff_tasks.NotATask,
            "NotATask.task: task 'tests.handoff_tasks.not_a_task' is a int, not a Celery task "
            "(@shared_task, @app.task) nor a task of Django's tasks framework (@task of django.tasks or django_tasks)",
        ),
    ],
)
def test_a_task_that_cannot_be_used_is_refused_naming_the_class_and_the_path(cls: type, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        cls()
    assert str(caught.value) == message


def test_a_bad_task_puts_its_watch_in_error_and_the_others_go_on(in_process: Any, watch_dir: Path) -> None:
    good = watch_dir / "good"
    good.mkdir()
    d = in_process(
        [
            (str(watch_dir), "IN_CLOSE_WRITE", "tests.handoff_tasks.MissingTask"),
            (str(good), "IN_CREATE", "inotifier.event_processors.AllEventsSignaler"),
        ]
    )
    bad, ok = d.watches["settings:0"], d.watches["settings:1"]
    assert bad.state == "error"
    assert "MissingTask.task: task 'tests.handoff_tasks.no_such_task' cannot be imported" in bad.message
    assert ok.state == "active"


def test_the_system_check_names_the_entry_the_class_and_the_task(settings: Any, watch_dir: Path) -> None:
    settings.INOTIFIER_WATCH_PATHS = [
        (str(watch_dir), "IN_CLOSE_WRITE", RECORDER),
        (str(watch_dir), "IN_CLOSE_WRITE", "tests.handoff_tasks.NotATask"),
    ]
    errors = [m for m in run_checks() if m.id == "inotifier.E006"]
    assert [m.msg for m in errors] == [
        "INOTIFIER_WATCH_PATHS[1]: NotATask.task: task 'tests.handoff_tasks.not_a_task' is a int, not a "
        "Celery task (@shared_task, @app.task) nor a task of Django's tasks framework "
        "(@task of django.tasks or django_tasks)"
    ]


# -- outside the daemon: each event written at once -----------------------------------------


def test_outside_the_daemon_each_event_is_written_at_once(db: Any) -> None:
    processor = handoff_tasks.DjangoRecorder()
    before = time.time()
    processor(event("/srv/in/a.txt"))
    processor(event("/srv/in/b", IN_CREATE))
    rows = list(OutboxEntry.objects.order_by("id"))
    assert [r.payload["pathname"] for r in rows] == ["/srv/in/a.txt", "/srv/in/b"]
    assert [r.payload["maskname"] for r in rows] == ["IN_CLOSE_WRITE", "IN_CREATE"]
    assert {r.state for r in rows} == {HandoffState.PENDING}
    assert {r.task for r in rows} == {"tests.handoff_tasks.record"}
    assert rows[0].payload["id"] != rows[1].payload["id"]
    assert datetime.fromisoformat(rows[0].payload["time"]).timestamp() >= before - 0.001
    assert processor.inotifier_pending_since() is None  # durable already


def test_ignored_and_overflow_events_are_not_handed_off(db: Any) -> None:
    processor = handoff_tasks.DjangoRecorder()
    processor(
        InotifierEvent(
            pathname="/srv/in",
            path="/srv/in",
            name="",
            mask=BITS["IN_IGNORED"],
            maskname="IN_IGNORED",
            dir=False,
        )
    )
    processor(InotifierEvent(mask=BITS["IN_Q_OVERFLOW"], maskname="IN_Q_OVERFLOW", dir=False))
    assert OutboxEntry.objects.count() == 0


# -- pending_since: the catch-up watermark's bound -------------------------------------------


def test_pending_since_is_the_oldest_event_accepted_and_not_yet_committed(transactional_db: Any) -> None:
    buffer = OutboxBuffer(100)
    handoff.install(buffer)
    try:
        processor = handoff_tasks.DjangoRecorder()
        processor.inotifier_bind("settings:0", "/srv/in", None, "host-a")
        other = handoff_tasks.DjangoRecorder()
        other.inotifier_bind("settings:1", "/srv/other", None, "host-a")
    finally:
        handoff.uninstall(buffer)
    assert processor.inotifier_pending_since() is None
    times = []
    for name in ("a", "b", "c"):
        before = time.time()
        processor(event(f"/srv/in/{name}"))
        times.append((before, time.time()))
        time.sleep(0.01)
    other(event("/srv/other/x"))
    first = processor.inotifier_pending_since()
    assert first is not None and times[0][0] <= first <= times[0][1]
    assert OutboxEntry.objects.count() == 0  # nothing reached the database: the loop never writes
    # The writer's step, one row: the first row is durable, the second is now the oldest.
    batch = buffer.take(1)
    write_rows(batch)
    buffer.settled(1)
    second = processor.inotifier_pending_since()
    assert second is not None and times[1][0] <= second <= times[1][1]
    OutboxWriter(buffer, OutboxConfig()).flush()
    assert processor.inotifier_pending_since() is None
    assert other.inotifier_pending_since() is None
    assert OutboxEntry.objects.count() == 4
    processor(event("/srv/in/d"))
    assert processor.inotifier_pending_since() is not None  # a new row waits again


def test_a_full_buffer_makes_the_processor_wait_for_the_writer(transactional_db: Any, caplog: Any) -> None:
    buffer = OutboxBuffer(5)
    # A writer that writes only when woken: a full buffer must wake it (on a loaded machine an
    # interval of its own could write the first five before the sixth comes, and nothing waits).
    writer = OutboxWriter(buffer, OutboxConfig(interval=3600))
    processor = handoff_tasks.DjangoRecorder()
    processor._sink = buffer
    for i in range(5):
        processor(event(f"/srv/in/{i}"))
    buffer.wake.clear()  # the five appends asked for a write; the writer is not running yet
    writer.start()
    try:
        started = time.monotonic()
        processor(event("/srv/in/5"))  # the 6th waits until the writer made room
        assert buffer.paused == 1
        assert OutboxEntry.objects.count() >= 5
        assert time.monotonic() - started < 10
    finally:
        writer.stop()
    assert OutboxEntry.objects.count() == 6
    assert "event delivery paused until they are written" in caplog.text
    assert "event delivery resumed after" in caplog.text


def test_bad_outbox_settings_are_named(settings: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    settings.INOTIFIER_OUTBOX_BUFFER = "100k"
    with pytest.raises(
        ImproperlyConfigured, match=r"INOTIFIER_OUTBOX_BUFFER must be a positive whole number, not '100k'"
    ):
        OutboxConfig.from_settings()
    settings.INOTIFIER_OUTBOX_BUFFER = 10
    settings.INOTIFIER_OUTBOX_DISPATCH = "yes"
    with pytest.raises(
        ImproperlyConfigured, match=r"INOTIFIER_OUTBOX_DISPATCH must be None, True or False, not 'yes'"
    ):
        OutboxConfig.from_settings()


# -- the dispatcher, driven by hand --------------------------------------------------------


def dispatcher(**config: Any) -> OutboxDispatcher:
    return OutboxDispatcher(OutboxConfig(**config))


class FlakyEngine(DjangoTasksEngine):
    """The real engine of a django.tasks task, failing its next sends with the errors in FAIL_NEXT.

    The retry policy's unit tests need failures at chosen moments; a real broker
    outage is in tests/test_handoff_brokers.py.
    """

    def send(self, payloads: Any) -> None:
        if handoff_tasks.FAIL_NEXT:
            raise handoff_tasks.FAIL_NEXT.pop(0)
        super().send(payloads)


def flaky_dispatcher(**config: Any) -> OutboxDispatcher:
    return OutboxDispatcher(OutboxConfig(**config), lambda dotted: FlakyEngine(load_task(dotted)[1]))


def test_durable_rows_are_handed_to_the_task_and_marked_done(db: Any) -> None:
    write_rows([pending(f"/srv/in/{i}") for i in range(3)])
    assert dispatcher().cycle() == 3
    assert [e["pathname"] for e in RECEIVED] == ["/srv/in/0", "/srv/in/1", "/srv/in/2"]
    rows = list(OutboxEntry.objects.order_by("id"))
    assert {r.state for r in rows} == {HandoffState.DONE}
    assert all(r.done is not None and r.attempts == 1 for r in rows)
    assert [r.payload for r in rows] == RECEIVED  # the task got the stored dict, its id included
    assert dispatcher().cycle() == 0  # nothing is sent twice


def test_the_dummy_backend_keeps_what_it_was_given(db: Any) -> None:
    from .handoff_tasks import record_dummy

    backend = record_dummy.get_backend()
    backend.clear()
    write_rows([pending("/srv/in/a", ref=pending("x").ref._replace(task="tests.handoff_tasks.record_dummy"))])
    dispatcher().cycle()
    [result] = backend.results
    assert result.kwargs["event"]["pathname"] == "/srv/in/a"
    assert OutboxEntry.objects.get().state == HandoffState.DONE


def flaky_rows(n: int) -> None:
    ref = pending("x").ref._replace(task="tests.handoff_tasks.flaky")
    write_rows([pending(f"/srv/in/{i}", ref=ref) for i in range(n)])


def due_now() -> None:
    OutboxEntry.objects.update(next_attempt=timezone.now() - timedelta(seconds=1))


def test_a_row_failing_for_its_own_reason_becomes_a_dead_letter_and_spares_the_others(
    db: Any, caplog: Any
) -> None:
    flaky_rows(3)
    d = flaky_dispatcher(max_attempts=2)
    handoff_tasks.FAIL_NEXT[:] = [TypeError("cannot serialise <b>this</b>\x1b[2J")]
    d.cycle()
    states = list(OutboxEntry.objects.order_by("id").values_list("state", "attempts"))
    assert states == [(HandoffState.FAILED, 1), (HandoffState.DONE, 1), (HandoffState.DONE, 1)]
    failed = OutboxEntry.objects.get(state=HandoffState.FAILED)
    assert failed.last_error == "TypeError: cannot serialise <b>this</b>\x1b[2J"
    assert failed.next_attempt > timezone.now()  # backed off: not due at once
    assert d.cycle() == 0
    due_now()
    handoff_tasks.FAIL_NEXT[:] = [TypeError("again")]
    d.cycle()
    dead = OutboxEntry.objects.get(pk=failed.pk)
    assert (dead.state, dead.attempts, dead.last_error) == (HandoffState.DEAD, 2, "TypeError: again")
    assert "is a dead letter after 2 attempts: TypeError: again" in caplog.text
    due_now()
    assert d.cycle() == 0  # a dead letter waits for an admin
    assert OutboxEntry.objects.filter(pk=dead.pk).retry() == 1
    d.cycle()
    assert OutboxEntry.objects.get(pk=dead.pk).state == HandoffState.DONE
    assert [e["pathname"] for e in RECEIVED] == ["/srv/in/1", "/srv/in/2", "/srv/in/0"]


def test_an_engine_that_is_down_is_retried_for_as_long_as_it_takes_logged_once(db: Any, caplog: Any) -> None:
    flaky_rows(3)
    d = flaky_dispatcher(max_attempts=2)
    handoff_tasks.FAIL_NEXT[:] = [DatabaseError("backend unreachable")] * 5
    for _ in range(5):
        d.cycle()
        due_now()
        d._outages["tests.handoff_tasks.flaky"].retry_at = 0  # the backoff's wait, skipped
    row = OutboxEntry.objects.order_by("id").first()
    assert row is not None
    assert (row.state, row.attempts) == (HandoffState.FAILED, 5)  # never dead: the engine was down
    assert OutboxEntry.objects.filter(state=HandoffState.PENDING).count() == 2  # untouched, waiting
    assert caplog.text.count("unavailable for task tests.handoff_tasks.flaky") == 1
    d.cycle()
    assert set(OutboxEntry.objects.values_list("state", flat=True)) == {HandoffState.DONE}
    assert "accepts again after" in caplog.text
    assert [e["pathname"] for e in RECEIVED] == ["/srv/in/0", "/srv/in/1", "/srv/in/2"]


def test_a_task_path_that_no_longer_resolves_makes_dead_letters_after_n_attempts(db: Any) -> None:
    ref = pending("x").ref._replace(task="tests.handoff_tasks.gone")
    write_rows([pending("/srv/in/a", ref=ref)])
    d = dispatcher(max_attempts=2)
    d.cycle()
    due_now()
    d.cycle()
    row = OutboxEntry.objects.get()
    assert row.state == HandoffState.DEAD
    assert "cannot be imported" in row.last_error


def test_retention_prunes_done_rows_only(db: Any) -> None:
    write_rows([pending(f"/srv/in/{i}") for i in range(10)])
    dispatcher().cycle()
    write_rows([pending("/srv/in/waiting")])
    old = timezone.now() - timedelta(days=30)
    OutboxEntry.objects.filter(id__in=OutboxEntry.objects.order_by("id").values("id")[:3]).update(done=old)
    assert OutboxEntry.objects.prune(max_age=24 * 3600, max_rows=0) == (3, True)
    assert OutboxEntry.objects.prune(max_age=0, max_rows=4) == (3, True)
    assert OutboxEntry.objects.filter(state=HandoffState.DONE).count() == 4
    assert OutboxEntry.objects.filter(state=HandoffState.PENDING).count() == 1  # never pruned
    newest = list(
        OutboxEntry.objects.filter(state=HandoffState.DONE).order_by("id").values_list("payload", flat=True)
    )
    assert [p["pathname"] for p in newest] == ["/srv/in/6", "/srv/in/7", "/srv/in/8", "/srv/in/9"]


def test_the_prune_command(db: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    write_rows([pending(f"/srv/in/{i}") for i in range(5)])
    dispatcher().cycle()
    out = StringIO()
    call_command("inotifier_prune_outbox", "--max-rows", "2", stdout=out)
    assert out.getvalue() == "3 outbox rows deleted.\n"
    assert OutboxEntry.objects.count() == 2


# -- in the daemon (in-process, real inotify, real database) ----------------------------------


@pytest.fixture
def outbox_daemon(in_process: Any, transactional_db: Any) -> Any:
    def start(entries: Any, **settings: Any) -> Any:
        settings.setdefault("INOTIFIER_OUTBOX_POLL_INTERVAL", 0.2)
        with override_settings(**settings):
            return in_process(entries, use_database=True)

    return start


def test_in_the_daemon_the_loop_appends_and_the_threads_write_and_hand_off(
    outbox_daemon: Any, watch_dir: Path
) -> None:
    d = outbox_daemon([(str(watch_dir), "IN_CLOSE_WRITE", RECORDER)])
    assert isinstance(d.handoff, Handoff) and d.handoff.writer is not None  # started by the bind
    names = [str(watch_dir / f"f{i:03}") for i in range(50)]
    for name in names:
        Path(name).write_text("x")
    pump(d, lambda: len(RECEIVED) >= 50, timeout=30)
    wait_for(lambda: OutboxEntry.objects.filter(state=HandoffState.DONE).count() == 50, 30)
    assert sorted(e["pathname"] for e in RECEIVED) == names
    assert {e["watch"] for e in RECEIVED} == {"settings:0"}
    assert {e["host"] for e in RECEIVED} == {"testhost"}
    assert {(e["maskname"], e["synthetic"], e["count"]) for e in RECEIVED} == {("IN_CLOSE_WRITE", False, 1)}
    [watch] = d.watches.values()
    assert watch.processor.inotifier_pending_since() is None
    row = OutboxEntry.objects.first()
    assert row is not None and (row.watch_key, row.watch_label, row.host) == (
        "settings:0",
        str(watch_dir),
        "testhost",
    )


def test_a_daemon_without_task_dispatchers_starts_no_outbox_threads(
    outbox_daemon: Any, watch_dir: Path
) -> None:
    d = outbox_daemon([(str(watch_dir), "IN_CREATE", "inotifier.event_processors.AllEventsSignaler")])
    assert d.handoff is not None and d.handoff.writer is None and d.handoff.dispatcher is None


def test_rows_left_by_an_earlier_daemon_are_handed_off_at_start(outbox_daemon: Any, watch_dir: Path) -> None:
    write_rows([pending("/srv/in/left-over")])
    d = outbox_daemon([(str(watch_dir), "IN_CLOSE_WRITE", RECORDER)])
    pump(d, lambda: RECEIVED, timeout=30)
    assert [e["pathname"] for e in RECEIVED] == ["/srv/in/left-over"]


def test_stop_writes_what_the_loop_appended(outbox_daemon: Any, watch_dir: Path) -> None:
    d = outbox_daemon(
        [(str(watch_dir), "IN_CLOSE_WRITE", RECORDER)],
        INOTIFIER_OUTBOX_FLUSH_INTERVAL=60.0,
        INOTIFIER_OUTBOX_DISPATCH=False,
    )
    assert d.handoff.dispatcher is None
    for i in range(20):
        (watch_dir / f"f{i}").write_text("x")
    pump(d, lambda: d.handoff.buffer.appended == 20, timeout=30)
    assert OutboxEntry.objects.count() == 0  # not yet: the writer waits for its interval
    d.close()
    assert OutboxEntry.objects.filter(state=HandoffState.PENDING).count() == 20
    assert RECEIVED == []  # this daemon does not dispatch
    assert handoff.current() is not d.handoff.buffer  # no longer installed


def test_the_outbox_is_in_the_metrics(outbox_daemon: Any, watch_dir: Path) -> None:
    from .test_metrics import scrape, value

    write_rows([pending("/srv/in/other-host")])  # another host's row: not this daemon's figure
    d = outbox_daemon(
        [(str(watch_dir), "IN_CLOSE_WRITE", RECORDER)],
        INOTIFIER_OUTBOX_DISPATCH=False,
        INOTIFIER_METRICS_PORT=0,
        INOTIFIER_POLL_INTERVAL=0.1,
    )
    for i in range(3):
        (watch_dir / f"f{i}").write_text("x")
    pump(d, lambda: OutboxEntry.objects.filter(host="testhost").count() == 3, timeout=30)
    first = OutboxEntry.objects.filter(host="testhost").order_by("id")[0]
    OutboxEntry.objects.filter(pk=first.pk).update(state=HandoffState.DEAD, last_error="no such task")

    def figures() -> Any:
        d.tick(timeout=0.02)  # a sample every poll interval
        samples = scrape(d.monitor.exporter.port)
        return samples if value(samples, "inotifier_outbox_rows", state="dead") == 1 else None

    samples = wait_for(figures, 10, interval=0)
    assert value(samples, "inotifier_outbox_rows", state="pending", host="testhost") == 2
    assert value(samples, "inotifier_outbox_rows", state="failed") == 0
    assert value(samples, "inotifier_outbox_rows_written_total") == 3
    assert value(samples, "inotifier_outbox_handed_off_total") == 0
    age = value(samples, "inotifier_outbox_oldest_pending_age_seconds")
    assert age is not None and 0 <= age < 60


# -- a database outage under the real daemon (PostgreSQL through a proxy the test cuts) -------------

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the outage is PostgreSQL's connection refused; run with DATABASE_URL=postgres://...",
)


@pytest.fixture
def proxy(daemon: Any) -> Iterator[Any]:
    from django.db import connection as conn

    from .conftest import database_url
    from .pgproxy import TcpProxy

    p = TcpProxy((conn.settings_dict["HOST"] or "127.0.0.1", int(conn.settings_dict["PORT"] or 5432)))
    daemon.db_url = p.url_for(database_url())
    yield p
    p.close()


def _outage_daemon(daemon: Any, watch_dir: Path, tmp_path: Path) -> Path:
    record = tmp_path / "tasks.tsv"
    daemon.watch_paths = [[str(watch_dir), "IN_CLOSE_WRITE", RECORDER]]
    daemon.env_extra.update({"INOTIFIER_OUTBOX_BUFFER": "50", "INOTIFIER_TEST_TASK_RECORD": str(record)})
    daemon.start()
    for i in range(5):
        (watch_dir / f"before-{i}").write_text("x")
    wait_for(lambda: len(read_records(record)) == 5, 30)
    return record


@pytest.mark.daemon
@pytest.mark.postgres_only
@needs_postgres
def test_through_a_database_outage_rows_wait_delivery_pauses_at_the_bound_and_none_is_lost(
    daemon: Any, watch_dir: Path, tmp_path: Path, proxy: Any
) -> None:
    record = _outage_daemon(daemon, watch_dir, tmp_path)
    proxy.down()
    names = {str(watch_dir / f"during-{i:03}") for i in range(120)}
    for name in sorted(names):
        Path(name).write_text("x")
    wait_for(lambda: "outbox: database unavailable" in daemon.stderr_text(), 30)
    wait_for(lambda: "event delivery paused until they are written" in daemon.stderr_text(), 30)
    assert OutboxEntry.objects.count() == 5
    proxy.up()
    wait_for(lambda: names <= {p for _i, p in read_records(record)}, 90)
    stderr = daemon.stderr_text()
    assert "outbox: database back after" in stderr and "event delivery resumed after" in stderr
    # Once per outage and part: the writer (its rows wait) and the dispatcher (its claims wait).
    assert stderr.count("rows wait in memory and are retried") == 1
    assert stderr.count("; the dispatcher retries") <= 1
    wait_for(lambda: OutboxEntry.objects.filter(state=HandoffState.DONE).count() == 125, 60)
    assert daemon.stop().returncode == 0


@pytest.mark.daemon
@pytest.mark.postgres_only
@needs_postgres
def test_a_stop_while_delivery_is_paused_ends_the_daemon_and_says_what_was_not_written(
    daemon: Any, watch_dir: Path, tmp_path: Path, proxy: Any
) -> None:
    _outage_daemon(daemon, watch_dir, tmp_path)
    proxy.down()
    for i in range(80):
        (watch_dir / f"during-{i:03}").write_text("x")
    wait_for(lambda: "event delivery paused" in daemon.stderr_text(), 30)
    started = time.monotonic()
    result = daemon.stop()
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert time.monotonic() - started < 30
    stderr = daemon.stderr_text()
    assert "rows could not be written before exit (the database is down)" in stderr
    assert "Traceback" not in stderr


def test_what_pending_since_remembers_stays_within_the_buffer(transactional_db: Any) -> None:
    buffer = OutboxBuffer(10_000)
    processor = handoff_tasks.DjangoRecorder()
    processor._sink = buffer
    writer = OutboxWriter(buffer, OutboxConfig())
    for i in range(3000):
        processor(event(f"/srv/in/{i}"))
        if i % 1000 == 999:
            writer.flush()
    # No one asked for inotifier_pending_since(): what was committed is forgotten anyway.
    assert len(processor._unsure) <= 1000
    writer.flush()
    processor(event("/srv/in/last"))
    assert len(processor._unsure) == 1
