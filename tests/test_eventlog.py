"""The event log: batched writes off the read loop, flush on stop, outages, retention, opt-out."""

from __future__ import annotations

import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inotifier.daemon.eventlog import EventLog as EventLogWriter
from inotifier.daemon.eventlog import StoreConfig
from inotifier.daemon.eventlog.buffer import ROW_OVERHEAD
from inotifier.daemon.eventlog.rows import ROW_ITEMS, pack_rows, rows_from_flat, unpack_rows
from inotifier.daemon.eventlog.store import EventLogStore
from inotifier.daemon.events import InotifierEvent
from inotifier.daemon.runner import Daemon as InProcessDaemon
from inotifier.masks import BITS
from inotifier.models import DaemonStatus, EventLog, WatchPath, escape_path, unescape_path
from tests.testapp.receivers import ListProcessor

from .conftest import DaemonProcess, alive, database_url, wait_for
from .pgproxy import TcpProxy

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
RAISING = "tests.testapp.receivers.RaisingProcessor"
LIST = "tests.testapp.receivers.ListProcessor"
IN_CREATE = BITS["IN_CREATE"]
IN_ISDIR = BITS["IN_ISDIR"]

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the outage is PostgreSQL's connection refused; run with DATABASE_URL=postgres://...",
)

# -- helpers ---------------------------------------------------------------------------


#: The watch a row is logged for: (WatchPath id, or None for a settings entry; label).
TAIL = (None, "/watched")


def prune_events(max_age: Any = None, max_rows: Any = None, batch: int = 1000) -> int:
    """Apply the retention as ``inotifier_prune_events`` does; return the rows deleted."""
    return EventLog.objects.prune(max_age, max_rows, batch)[0]


def prune_step(max_age: Any = None, max_rows: Any = None, batch: int = 1000, deadline: Any = None) -> Any:
    return EventLog.objects.prune(max_age, max_rows, batch, deadline)


def fake_event(pathname: str, mask: int = IN_CREATE, maskname: Any = "IN_CREATE") -> Any:
    return InotifierEvent(pathname=pathname, mask=mask, maskname=maskname, dir=bool(mask & IN_ISDIR))


def make_rows(n: int, start: Any, step: timedelta, **fields: Any) -> list[EventLog]:
    """Create ``n`` EventLog rows, the first at ``start``, ``step`` apart."""
    rows = [
        EventLog(
            timestamp=start + i * step,
            pathname=f"/srv/f{i}",
            mask=IN_CREATE,
            maskname="IN_CREATE",
            host="h",
            **fields,
        )
        for i in range(n)
    ]
    return EventLog.objects.bulk_create(rows)


def logged_paths() -> set[str]:
    return set(EventLog.objects.values_list("pathname", flat=True))


# -- escaping ----------------------------------------------------------------------------


def test_escape_path_round_trips_any_bytes() -> None:
    rng = random.Random(4)
    names = [
        b"plain.txt",
        b"caf\xc3\xa9",
        b"caf\xe9",
        b"back\\slash",
        b"\\xff literal",
        b"\xff\\x41",
    ]
    alphabet = b"ab\\x0f\xc3\xa9\xe9\xff\x80/ "
    names += [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(2000)]
    for raw in names:
        text, escaped = escape_path(os.fsdecode(raw))
        text.encode("utf-8")  # storable in any database
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            assert escaped
            assert unescape_path(text) == raw
        else:
            assert not escaped
            assert text == raw.decode("utf-8")


def test_both_paths_escaped_when_one_needs_it(transactional_db: Any) -> None:
    writer = EventLogWriter("h", capacity=10, interval=1, prune=False)
    moved = fake_event("/w/back\\slash \\x41", mask=BITS["IN_MOVED_TO"], maskname="IN_MOVED_TO")
    moved.src_pathname = os.fsdecode(b"/w/caf\xe9")
    writer.offer(time.time(), moved, TAIL)
    assert writer.flush()
    row = EventLog.objects.get()
    assert row.escaped
    assert row.raw_pathname() == b"/w/back\\slash \\x41"
    assert unescape_path(row.src_pathname) == b"/w/caf\xe9"


# -- the writer in this process --------------------------------------------------------------


def test_offer_is_bounded_and_counts_drops(transactional_db: Any, caplog: pytest.LogCaptureFixture) -> None:
    writer = EventLogWriter("h", capacity=10, interval=3600, prune=False)
    for i in range(25):
        writer.offer(time.time(), fake_event(f"/w/{i}"), TAIL)
    assert (writer.buffer.accepted, writer.buffer.dropped, writer.buffer.pending) == (10, 15, 10)
    writer.feeder._report_drops()
    [record] = [r for r in caplog.records if "rows dropped" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.name == "inotifier.daemon.eventlog"
    assert "15 rows dropped (15 in total)" in record.getMessage()
    assert writer.flush()
    assert writer.buffer.pending == 0
    assert logged_paths() == {f"/w/{i}" for i in range(10)}
    writer.offer(time.time(), fake_event("/w/after"), TAIL)  # room again
    assert writer.buffer.pending == 1


def test_a_row_the_database_refuses_does_not_hold_back_the_others(
    transactional_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    writer = EventLogWriter("h", capacity=100, interval=3600, prune=False)
    for i in range(9):
        writer.offer(time.time(), fake_event(f"/w/{i}"), TAIL)
    writer.offer(1e20, fake_event("/w/bad"), TAIL)  # a time no database can store
    assert writer.flush()
    assert len(logged_paths()) == 9
    assert (writer.buffer.tally.written, writer.buffer.tally.rejected, writer.buffer.pending) == (9, 1, 0)
    assert "row rejected by the database and dropped" in caplog.text


def write_one_while_running(writer: EventLogWriter, pathname: str) -> None:
    """Start ``writer``, offer one row, wait until it is in the table, stop the writer."""
    writer.start()
    try:
        writer.offer(time.time(), fake_event(pathname), TAIL)
        wait_for(lambda: EventLog.objects.filter(pathname=pathname).exists(), 10)
    finally:
        writer.stop()
    assert not writer.feeder.is_alive()


def test_writer_thread_flushes_while_events_flow_and_on_stop(transactional_db: Any) -> None:
    write_one_while_running(EventLogWriter("h", capacity=1000, interval=0.25, prune=False), "/w/first")

    # With a flush interval of an hour, only stop() can write these.
    writer = EventLogWriter("h", capacity=1000, interval=3600, prune=False)
    writer.start()
    for i in range(100):
        writer.offer(time.time(), fake_event(f"/w/late{i}"), TAIL)
    writer.stop()
    assert not writer.feeder.is_alive()
    assert EventLog.objects.filter(pathname__startswith="/w/late").count() == 100


def test_writer_wakes_early_when_half_full(transactional_db: Any) -> None:
    writer = EventLogWriter("h", capacity=40, interval=3600, prune=False)
    writer.start()
    try:
        for i in range(20):
            writer.offer(time.time(), fake_event(f"/w/{i}"), TAIL)
        wait_for(lambda: EventLog.objects.count() == 20, 10)
    finally:
        writer.stop()


@pytest.fixture
def live(transactional_db: Any, in_process: Any, settings: Any) -> Iterator[InProcessDaemon]:
    """A Daemon in this process with the event log on, driven by tick().

    Its feeder writes only every hour: the test writes from its own thread. At
    the end its writer process writes what came meanwhile (the IN_IGNORED of
    the removed directory), in its own connection: hence a transactional test.
    """
    ListProcessor.seen.clear()
    settings.INOTIFIER_PROCESSORS = [LIST]
    settings.INOTIFIER_POLL_INTERVAL = 3600
    d = in_process(use_database=True, INOTIFIER_EVENT_LOG=True, INOTIFIER_EVENT_LOG_FLUSH_INTERVAL=3600)
    assert d.event_log is not None
    yield d


def test_1000_real_events_are_written_in_a_handful_of_queries(live: InProcessDaemon, watch_dir: Path) -> None:
    with override_settings(INOTIFIER_WATCH_PATHS=[[str(watch_dir), "IN_CREATE", LIST]]):
        live.reconcile(force=True)
    writer = live.event_log
    assert writer is not None
    for i in range(1000):
        (watch_dir / f"f{i:04}").touch()

    # The read loop only appends to the buffer: not one query while it runs.
    with CaptureQueriesContext(connection) as loop_queries:

        def step() -> bool:
            live.tick(timeout=0.02)
            return writer.buffer.pending >= 1000

        wait_for(step, 30, interval=0)
    assert len(ListProcessor.seen) == 1000  # the processor got them too
    assert [q["sql"] for q in loop_queries.captured_queries if "eventlog" in q["sql"]] == []

    with CaptureQueriesContext(connection) as queries:
        assert writer.flush()
    inserts = [q for q in queries.captured_queries if q["sql"].startswith(("INSERT", "COPY"))]
    if connection.vendor == "postgresql":
        assert [q["sql"].split(" ", 1)[0] for q in inserts] == ["COPY"]  # one COPY for the batch
    else:
        fields = [f for f in EventLog._meta.concrete_fields if not f.primary_key]
        per_statement = connection.ops.bulk_batch_size(fields, [None] * 1000)
        assert len(inserts) == math.ceil(1000 / min(per_statement, writer.config.batch_size))
    assert len(queries.captured_queries) <= len(inserts) + 3  # + savepoint / release
    assert len(inserts) <= 11  # 1 on PostgreSQL; SQLite's 999-parameter limit makes it 11

    rows = EventLog.objects.filter(host="testhost")
    assert rows.count() == 1000
    assert set(rows.values_list("pathname", flat=True)) == {str(watch_dir / f"f{i:04}") for i in range(1000)}
    row = rows.first()
    assert row is not None
    assert (row.maskname, row.mask, row.is_dir, row.watch_id) == (
        "IN_CREATE",
        IN_CREATE,
        False,
        None,
    )
    assert row.watch_label == str(watch_dir)


def test_thread_mode_writes_without_a_process(transactional_db: Any) -> None:
    assert EventLogWriter("h").config.process  # a database other processes can open: a writer process
    writer = EventLogWriter("h", capacity=100, interval=0.05, prune=False, process=False)
    write_one_while_running(writer, "/w/threaded")
    assert writer.feeder.restarts == 0 and writer.buffer.tally.written == 1  # no process started


def test_a_writer_process_that_cannot_run_gives_way_to_a_thread(
    transactional_db: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dies = tmp_path / "python"  # an "interpreter" that exits at once, whatever it is asked
    dies.write_text("#!/bin/sh\nexit 3\n")
    dies.chmod(0o755)
    writer = EventLogWriter(
        "h", capacity=100, interval=0.05, prune=False, executable=str(dies), restart_delay=0.01
    )
    writer.start()
    try:
        wait_for(lambda: not writer.feeder.process, 20)
        writer.offer(time.time(), fake_event("/w/after-fallback"), TAIL)
        wait_for(lambda: EventLog.objects.filter(pathname="/w/after-fallback").exists(), 10)
    finally:
        writer.stop()
    assert caplog.text.count("ended unexpectedly (exit status 3)") == writer.config.fallback_after
    assert "3 writer processes in a row ended without writing a row" in caplog.text


def test_rows_travel_as_flat_lists_and_come_back_whole() -> None:
    tails: list[Any] = []
    moved = os.fsdecode(b"/w/caf\xe9")
    flat = ["/w/a", 1.5, (0 << 32) | IN_CREATE, "", "/w/b", 2.5, (1 << 32) | BITS["IN_MOVED_TO"], moved]
    payload = pack_rows(flat, [(None, "/w"), (7, "row 7")])
    assert unpack_rows(payload, tails) == [
        (1.5, "/w/a", "", IN_CREATE, "IN_CREATE", (None, "/w")),
        (2.5, "/w/b", moved, BITS["IN_MOVED_TO"], "IN_MOVED_TO", (7, "row 7")),
    ]
    assert unpack_rows(pack_rows(["/w/c", 3.0, 1 << 32 | IN_CREATE, ""], []), tails)[0][-1] == (
        7,
        "row 7",
    )  # the receiver keeps the tails it was sent
    with pytest.raises(ValueError, match="multiple of ROW_ITEMS"):
        rows_from_flat(["/w/a", 1.5, IN_CREATE], tails)


def test_the_bound_holds_while_the_read_loop_appends_unchecked(transactional_db: Any) -> None:
    """The read loop appends without a check; poke cuts the newest rows beyond the bound."""
    writer = EventLogWriter("h", capacity=30, interval=3600, prune=False)
    key = writer.tail_key(None, "/w")
    for i in range(50):
        writer.buffer.incoming += (f"/w/{i}", time.time(), key | IN_CREATE, "")
    writer.poke()
    assert (writer.buffer.accepted, writer.buffer.dropped, writer.buffer.pending) == (30, 20, 30)
    assert len(writer.buffer.take(10)) == 10 * ROW_ITEMS  # 10 rows in flight now
    writer.buffer.incoming += ("/w/late", time.time(), key | IN_CREATE, "")
    writer.poke()
    assert (writer.buffer.accepted, writer.buffer.dropped) == (30, 21)  # 10 in flight + 20 waiting: full
    assert writer.flush()  # the 20 waiting; the 10 taken by hand are never written
    assert logged_paths() == {f"/w/{i}" for i in range(10, 30)}


# -- the buffer's bound in memory ------------------------------------------------------------


def test_the_row_size_estimate_matches_what_rows_cost(transactional_db: Any) -> None:
    """ROW_OVERHEAD + sys.getsizeof(path): what a row costs in the loop's list and in the writer's deque."""
    n = 50_000
    writer = EventLogWriter("h", interval=3600, prune=False)
    key, mask = writer.tail_key(None, "/srv/spool"), IN_CREATE
    prefix = "/srv/spool/incoming/" + "x" * 40  # longer than INITIAL_PATH_BYTES assumes
    names = [f"{i:08d}" for i in range(n)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in names:  # as ActiveWatch.deliver does: a fresh path and key per event
            writer.buffer.incoming += (prefix + "/" + name, time.time(), key | mask, "")
        in_loop = (tracemalloc.get_traced_memory()[0] - before) / n
        writer.poke()
        payload = pack_rows(writer.buffer.take(), writer.buffer.tails)
        before = tracemalloc.get_traced_memory()[0]
        in_writer: deque[Any] = deque(unpack_rows(payload, []))
        in_process = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(in_writer) == n
    path_size = sys.getsizeof(prefix + "/" + names[0])
    assert writer.buffer.path_bytes == path_size  # sampled by poke()
    estimate = writer.buffer.row_bytes
    # Never below what a row costs where it waits; close to the dearer place, the writer's deque.
    assert in_loop <= estimate, (in_loop, estimate)
    assert in_process <= estimate <= in_process * 1.1, (in_process, estimate)


def test_the_buffer_is_bounded_by_memory(transactional_db: Any, caplog: pytest.LogCaptureFixture) -> None:
    writer = EventLogWriter("h", interval=3600, prune=False, max_bytes=1_000_000)
    assert writer.buffer.row_cap is None  # INOTIFIER_EVENT_LOG_BUFFER is None by default
    key = writer.tail_key(None, "/w")
    long_name = "/w/" + "L" * 400
    for i in range(10_000):
        writer.buffer.incoming += (f"{long_name}{i:05}", time.time(), key | IN_CREATE, "")
    writer.poke()
    row = ROW_OVERHEAD + sys.getsizeof(long_name + "00000")
    assert writer.buffer.row_bytes == row
    assert writer.buffer.accepted == 1_000_000 // row  # about 1 700 rows of 585 bytes
    assert writer.buffer.dropped == 10_000 - writer.buffer.accepted
    writer.feeder._report_drops()
    assert (
        f"event log buffer full (INOTIFIER_EVENT_LOG_BUFFER_BYTES = 1000000: {writer.buffer.accepted} rows of "
        f"about {row} bytes): {writer.buffer.dropped} rows dropped"
    ) in caplog.text
    assert writer.flush() and writer.buffer.pending == 0

    # Short paths: more rows fit; the estimate comes down over a few ticks, not at once
    # (and is sampled only while more than an eighth of the bound is pending).
    short = ROW_OVERHEAD + sys.getsizeof("/w/s")
    for tick in range(40):
        for _row in range(1100):  # > an eighth of the bound however small the rows, > SAMPLE_EVERY
            writer.buffer.incoming += ("/w/s", time.time(), key | IN_CREATE, "")
        writer.poke()
        if tick == 0:
            assert short < writer.buffer.row_bytes < row
        assert writer.flush()
    assert short <= writer.buffer.row_bytes <= short + 10
    assert writer.buffer.capacity == 1_000_000 // writer.buffer.row_bytes  # about 5 500 rows
    assert writer.buffer.dropped == 10_000 - 1_000_000 // row  # none more

    # INOTIFIER_EVENT_LOG_BUFFER, when set, caps the rows too.
    capped = EventLogWriter("h", capacity=50, interval=3600, prune=False, max_bytes=1_000_000)
    for i in range(80):
        capped.buffer.incoming += (f"/w/{i}", time.time(), key | IN_CREATE, "")
    capped.poke()
    assert (capped.buffer.accepted, capped.buffer.dropped) == (50, 30)
    capped.feeder._report_drops()
    assert "(INOTIFIER_EVENT_LOG_BUFFER = 50 rows): 30 rows dropped" in caplog.text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INOTIFIER_EVENT_LOG_BUFFER_BYTES", "64MB"),
        ("INOTIFIER_EVENT_LOG_BUFFER_BYTES", 0),
        ("INOTIFIER_EVENT_LOG_BUFFER_BYTES", None),
        ("INOTIFIER_EVENT_LOG_BUFFER_BYTES", float("inf")),
        ("INOTIFIER_EVENT_LOG_BUFFER", -5),
        ("INOTIFIER_EVENT_LOG_BUFFER", "many"),
        ("INOTIFIER_EVENT_LOG_MAX_ROWS", -1),
        ("INOTIFIER_EVENT_LOG_MAX_ROWS", "100k"),
    ],
)
def test_bad_buffer_settings_are_named(transactional_db: Any, name: str, value: Any) -> None:
    with override_settings(**{name: value}), pytest.raises(ImproperlyConfigured) as info:
        EventLogWriter("h")
    assert str(info.value) == f"{name} must be a positive whole number, not {value!r}"


@pytest.mark.daemon
def test_a_bad_buffer_setting_stops_the_start_with_a_sentence(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra.update(INOTIFIER_EVENT_LOG="1", INOTIFIER_EVENT_LOG_BUFFER_BYTES="0")
    result = daemon.manage("inotifier_start")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "File monitoring did not start: ImproperlyConfigured: "
        "INOTIFIER_EVENT_LOG_BUFFER_BYTES must be a positive whole number, not 0"
    ), result.stderr
    assert "Traceback" not in result.stderr


# -- retention ---------------------------------------------------------------------------


def test_prune_by_age(db: Any) -> None:
    now = timezone.now()
    make_rows(50, now - timedelta(days=10), timedelta(minutes=1))
    make_rows(30, now - timedelta(hours=1), timedelta(seconds=1))
    assert prune_events(max_age=7 * 86400, max_rows=0) == 50
    assert EventLog.objects.count() == 30
    assert not EventLog.objects.filter(timestamp__lt=now - timedelta(days=7)).exists()


def test_prune_by_count_keeps_the_newest(db: Any) -> None:
    now = timezone.now()
    make_rows(80, now - timedelta(hours=2), timedelta(seconds=1))
    make_rows(40, now - timedelta(minutes=1), timedelta(0))  # 40 rows with one timestamp
    newest = list(EventLog.objects.order_by("-timestamp", "-id").values_list("id", flat=True)[:50])
    assert prune_events(max_age=0, max_rows=50) == 70
    assert sorted(EventLog.objects.values_list("id", flat=True)) == sorted(newest)
    assert prune_events(max_age=0, max_rows=50) == 0


def test_prune_deletes_in_small_batches(db: Any) -> None:
    make_rows(100, timezone.now() - timedelta(days=30), timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        assert prune_events(max_age=86400, max_rows=0, batch=20) == 100
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 5
    for sql in deletes:
        assert len(re.findall(r"\d+", sql.split(" IN (", 1)[1])) == 20, sql


@pytest.mark.postgres_only
@needs_postgres
def test_a_prune_delete_takes_the_primary_key_index(transactional_db: Any) -> None:
    """A table that grew faster than autovacuum analyses it (a burst): no statistics yet.

    PostgreSQL then planned a scan of the whole table for ``id IN (1 000 ids)``,
    9x slower than the primary key's index at 100 000 rows, 20x at 1 000 000.
    """
    with connection.cursor() as cursor:  # 100 000 rows as the daemon writes them, not analysed
        cursor.execute(
            "INSERT INTO inotifier_eventlog (timestamp, pathname, src_pathname, escaped, mask, maskname,"
            " is_dir, watch_label, host) SELECT now() - interval '30 days' + n * interval '1 second',"
            " '/srv/spool/incoming/file-' || lpad(n::text, 9, '0') || '.dat', '', false, 256,"
            " 'IN_CREATE', false, '/srv/spool/incoming', 'files-1' FROM generate_series(1, 100000) n"
        )
    with CaptureQueriesContext(connection) as queries:
        assert prune_events(max_age=0, max_rows=99_000) == 1000
    [delete] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + delete)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan and "inotifier_eventlog_pkey" in plan, plan


def test_prune_step_stops_at_its_deadline(db: Any) -> None:
    make_rows(100, timezone.now() - timedelta(days=30), timedelta(seconds=1))
    assert prune_step(max_age=86400, max_rows=0, batch=30, deadline=0.0) == (30, False)
    assert prune_step(max_age=86400, max_rows=0, batch=30) == (70, True)


def test_prune_defaults_come_from_settings(db: Any) -> None:
    make_rows(30, timezone.now() - timedelta(minutes=30), timedelta(seconds=1))
    with override_settings(INOTIFIER_EVENT_LOG_MAX_AGE=3600, INOTIFIER_EVENT_LOG_MAX_ROWS=10):
        assert prune_events() == 20
    with override_settings(INOTIFIER_EVENT_LOG_MAX_AGE=60, INOTIFIER_EVENT_LOG_MAX_ROWS=0):
        assert prune_events() == 10


def test_prune_command(db: Any) -> None:
    now = timezone.now()
    make_rows(20, now - timedelta(days=10), timedelta(seconds=1))
    make_rows(20, now - timedelta(minutes=5), timedelta(seconds=1))
    out = StringIO()
    call_command("inotifier_prune_events", "--max-age", "86400", "--max-rows", "15", stdout=out)
    assert out.getvalue().strip() == "25 event log rows deleted."
    assert EventLog.objects.count() == 15
    out = StringIO()
    call_command("inotifier_prune_events", stdout=out)  # the settings' defaults: nothing more
    assert out.getvalue().strip() == "0 event log rows deleted."
    with pytest.raises(CommandError, match="--max-rows must be 0 or more"):
        call_command("inotifier_prune_events", "--max-rows", "-1")


def test_writer_prunes_a_little_at_a_time(transactional_db: Any) -> None:
    make_rows(300, timezone.now() - timedelta(days=30), timedelta(seconds=1))
    make_rows(50, timezone.now() - timedelta(minutes=5), timedelta(seconds=1))
    with override_settings(INOTIFIER_EVENT_LOG_MAX_AGE=86400, INOTIFIER_EVENT_LOG_MAX_ROWS=40):
        # The tuning reaches the writer process inside its StoreConfig.
        writer = EventLogWriter(
            "h", capacity=100, interval=0.05, first_prune_delay=0.0, prune_batch=100, prune_budget=0.0
        )
        writer.start()
        try:
            wait_for(lambda: EventLog.objects.count() == 40, 20)
        finally:
            writer.stop()
    assert writer.buffer.tally.pruned == 310
    assert not EventLog.objects.filter(timestamp__lt=timezone.now() - timedelta(days=1)).exists()


def rows_of(paths: list[str]) -> list[Any]:
    """Rows as the writer receives them, logged now for TAIL."""
    return [(time.time(), path, "", IN_CREATE, "IN_CREATE", TAIL) for path in paths]


def test_each_write_keeps_the_table_within_the_row_limit(
    transactional_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oldest rows beyond INOTIFIER_EVENT_LOG_MAX_ROWS go in the transaction that added rows."""
    with override_settings(INOTIFIER_EVENT_LOG_MAX_ROWS=200, INOTIFIER_EVENT_LOG_MAX_AGE=0):
        store = EventLogStore(StoreConfig.from_settings("h", batch_size=300))  # several writes per flush
    counts: list[int] = []
    real_trim = store._trim

    def trim_and_count(model: Any, inserted: int) -> tuple[int | None, int]:
        result = real_trim(model, inserted)
        counts.append(EventLog.objects.count())  # what the transaction commits
        return result

    monkeypatch.setattr(store, "_trim", trim_and_count)
    store.rows.extend(rows_of([f"/w/{i:04}" for i in range(1000)]))
    assert store.flush()
    assert len(counts) == 4 and max(counts) <= 200 * 1.02, counts
    assert logged_paths() == {f"/w/{i:04}" for i in range(800, 1000)}  # the newest
    assert (store.tally.written, store.tally.pruned, store.table_rows) == (1000, 800, 200)

    # Rows of another host, seen at the next count: trimmed as well, oldest first.
    make_rows(500, timezone.now() - timedelta(hours=1), timedelta(seconds=1))
    store.config = store.config.replace(recount_interval=0.0)
    store._next_count = 0.0
    store.rows.extend(rows_of(["/w/last"]))
    assert store.flush()
    assert EventLog.objects.count() == 200
    assert (
        "/w/last" in logged_paths()
        and not EventLog.objects.filter(host="h", pathname__startswith="/srv/").exists()
    )


def test_a_big_excess_is_left_to_the_budgeted_pass(transactional_db: Any) -> None:
    """A lowered limit: one write deletes at most trim_backlog more rows than it adds."""
    make_rows(400, timezone.now() - timedelta(hours=1), timedelta(seconds=1))
    with override_settings(INOTIFIER_EVENT_LOG_MAX_ROWS=10, INOTIFIER_EVENT_LOG_MAX_AGE=0):
        store = EventLogStore(StoreConfig.from_settings("h", trim_backlog=100, prune_batch=50))
        with CaptureQueriesContext(connection) as queries:
            store.rows.extend(rows_of(["/w/new"]))
            assert store.flush()
        assert EventLog.objects.count() == 401 - 101
        deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
        assert len(deletes) == 3  # 50 + 50 + 1 rows: short statements
        assert store._next_prune <= time.monotonic()  # the pass is due at once
        store._cycle()
    assert EventLog.objects.count() == 10
    assert "/w/new" in logged_paths()


# -- the real daemon ---------------------------------------------------------------------------


@pytest.mark.daemon
def test_event_log_is_off_by_default(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.start()
    (watch_dir / "not-logged").touch()
    daemon.record.wait_path(watch_dir / "not-logged", "IN_CREATE")
    assert daemon.stop().returncode == 0
    assert EventLog.objects.count() == 0


@pytest.mark.daemon
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_flushes_every_accepted_event(
    daemon: DaemonProcess, watch_dir: Path, signum: int
) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    # An hour between flushes (and 2 000 rows, far under the early flush at half
    # the buffer's bound): whatever reaches the table got there through the stop.
    daemon.env_extra["INOTIFIER_EVENT_LOG_FLUSH_INTERVAL"] = "3600"
    if signum == signal.SIGINT:
        proc = daemon.start_foreground()
        pid = proc.pid
    else:
        pid = daemon.start()
    names = {str(watch_dir / f"file-{i:04}") for i in range(2000)}
    for name in names:
        Path(name).touch()
    wait_for(lambda: names <= set(daemon.record.paths("IN_CREATE")), 60)
    assert EventLog.objects.count() == 0
    os.kill(pid, signum)
    if signum == signal.SIGINT:
        daemon.foreground.communicate(timeout=60)  # type: ignore[union-attr]
        assert daemon.foreground.returncode == 0  # type: ignore[union-attr]
    wait_for(lambda: not alive(pid), 60)
    assert logged_paths() == names
    assert EventLog.objects.count() == 2000
    status = DaemonStatus.objects.get()
    assert (status.running, status.log_dropped) == (False, 0)


@pytest.mark.daemon
def test_opt_out_per_watch_and_independence_from_the_processor(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    dirs = {
        name: watch_dir / name for name in ("settings_on", "settings_off", "row_on", "row_off", "raising")
    }
    for d in dirs.values():
        d.mkdir()
    row_on = WatchPath.objects.create(path=str(dirs["row_on"]), mask=IN_CREATE, processor=SIGNALER)
    WatchPath.objects.create(path=str(dirs["row_off"]), mask=IN_CREATE, processor=SIGNALER, event_log=False)
    daemon.watch_paths = [
        [str(dirs["settings_on"]), "IN_CREATE", SIGNALER],
        [str(dirs["settings_off"]), "IN_CREATE", SIGNALER, {"event_log": False}],
        [str(dirs["raising"]), "IN_CREATE", RAISING],
    ]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    daemon.start()
    for name, d in dirs.items():
        (d / f"{name}.txt").touch()
    for name in ("settings_on", "settings_off", "row_on", "row_off"):
        daemon.record.wait_path(dirs[name] / f"{name}.txt", "IN_CREATE")
    wait_for(lambda: "processor exploded on" in daemon.stderr_text(), 10)
    assert daemon.stop().returncode == 0
    rows = {r.pathname: r for r in EventLog.objects.all()}
    assert set(rows) == {
        str(dirs["settings_on"] / "settings_on.txt"),
        str(dirs["row_on"] / "row_on.txt"),
        str(dirs["raising"] / "raising.txt"),  # logged although its processor raised
    }
    on_row = rows[str(dirs["row_on"] / "row_on.txt")]
    assert (on_row.watch_id, on_row.watch_label) == (row_on.pk, str(dirs["row_on"]))
    on_settings = rows[str(dirs["settings_on"] / "settings_on.txt")]
    assert (on_settings.watch_id, on_settings.watch_label) == (None, str(dirs["settings_on"]))


@pytest.mark.daemon
def test_non_utf8_and_hostile_names_are_stored_losslessly(daemon: DaemonProcess, watch_dir: Path) -> None:
    hostile_dir = watch_dir / "<script>alert(1)<"
    hostile_dir.mkdir()
    daemon.watch_paths = [
        [str(watch_dir), "IN_CREATE|IN_MOVED_FROM|IN_MOVED_TO", SIGNALER],
        [str(hostile_dir), "IN_CREATE", SIGNALER],
    ]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    daemon.start()
    base = os.fsencode(str(watch_dir))
    latin1 = base + b"/caf\xe9 \\x41.txt"
    os.close(os.open(latin1, os.O_CREAT | os.O_WRONLY, 0o644))
    os.rename(latin1, base + b"/renamed \\ ok.txt")
    (watch_dir / "naïve ☃.txt").touch()
    (hostile_dir / "script>").touch()
    (watch_dir / "after").touch()
    daemon.record.wait_path(watch_dir / "after", "IN_CREATE")
    daemon.record.wait_path(hostile_dir / "script>", "IN_CREATE")
    wait_for(lambda: EventLog.objects.filter(pathname=str(watch_dir / "after")).exists(), 10)

    created = EventLog.objects.get(maskname="IN_CREATE", escaped=True)
    assert created.raw_pathname() == latin1
    assert "\\xe9" in created.pathname
    moved = EventLog.objects.get(maskname="IN_MOVED_TO")
    assert moved.escaped
    assert moved.raw_pathname() == base + b"/renamed \\ ok.txt"
    assert unescape_path(moved.src_pathname) == latin1
    unicode = EventLog.objects.get(pathname=str(watch_dir / "naïve ☃.txt"))
    assert not unicode.escaped
    assert EventLog.objects.filter(pathname=str(watch_dir) + "/<script>alert(1)</script>").exists()
    assert "Traceback" not in daemon.stderr_text()


@pytest.mark.daemon
def test_daemon_enforces_retention(daemon: DaemonProcess, watch_dir: Path) -> None:
    now = timezone.now()
    make_rows(150, now - timedelta(hours=2), timedelta(seconds=1))
    make_rows(150, now - timedelta(minutes=30), timedelta(seconds=1))
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra.update(
        INOTIFIER_EVENT_LOG="1",
        INOTIFIER_EVENT_LOG_MAX_AGE="3600",
        INOTIFIER_EVENT_LOG_MAX_ROWS="100",
    )
    daemon.start()
    wait_for(lambda: EventLog.objects.count() == 100, 30)
    assert not EventLog.objects.filter(timestamp__lt=now - timedelta(hours=1)).exists()
    wait_for(lambda: "pruned 200 old rows" in daemon.stderr_text(), 10)
    (watch_dir / "new").touch()
    wait_for(lambda: EventLog.objects.filter(pathname=str(watch_dir / "new")).exists(), 10)


#: Creates files argv[3:argv[4]] named f<index> in argv[1], as fast as it can (argv[2]: content).
FILE_WRITER = (
    "import os, sys\n"
    "d, data, start, stop = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4])\n"
    "for i in range(start, stop):\n"
    "    fd = os.open(os.path.join(d, f'f{i:06}'), os.O_CREAT | os.O_WRONLY, 0o644)\n"
    "    os.write(fd, data)\n"
    "    os.close(fd)\n"
)


def write_files(directory: Path, start: int, stop: int) -> subprocess.Popen[bytes]:
    """Start a process that creates files f<start>..f<stop - 1> in ``directory``."""
    return subprocess.Popen([sys.executable, "-c", FILE_WRITER, str(directory), "x", str(start), str(stop)])


def summary(daemon: DaemonProcess) -> dict[str, int]:
    """The figures of the event log's last summary line in the daemon's log (logged at stop)."""
    lines = [ln for ln in daemon.stderr_text().splitlines() if "rows written," in ln]
    assert lines, daemon.stderr_text()[-3000:]
    found = re.search(
        r"(\d+) rows written, (\d+) dropped, (\d+) rejected, (\d+) lost, (\d+) pruned; "
        r"at most (\d+) rows waited",
        lines[-1],
    )
    assert found, lines[-1]
    keys = ("written", "dropped", "rejected", "lost", "pruned", "peak")
    return dict(zip(keys, map(int, found.groups()), strict=True))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(ln for ln in fh if ln.startswith("VmRSS:")).split()[1])


@pytest.mark.daemon
def test_the_row_limit_holds_while_rows_pour_in(daemon: DaemonProcess, watch_dir: Path) -> None:
    """INOTIFIER_EVENT_LOG_MAX_ROWS = 2 000, 40 000 events as fast as they come: never above + 10 %."""
    limit, files = 2000, 40_000
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra.update(
        INOTIFIER_EVENT_LOG="1",
        INOTIFIER_EVENT_LOG_MAX_ROWS=str(limit),
        INOTIFIER_EVENT_LOG_BUFFER=str(files),  # whatever the buffer's default: no row dropped
        INOTIFIER_TEST_RECORD="",  # no receiver: events as fast as the loop goes
    )
    daemon.start()
    samples: list[int] = []
    last = str(watch_dir / f"f{files - 1:06}")
    writer = write_files(watch_dir, 0, files)
    deadline = time.monotonic() + 120
    while not EventLog.objects.filter(pathname=last).exists():
        samples.append(EventLog.objects.count())
        assert time.monotonic() < deadline, samples[-20:]
    samples.append(EventLog.objects.count())
    assert writer.wait(30) == 0
    assert daemon.stop().returncode == 0
    growing = [n for n in samples if n > 0]
    assert len(growing) >= 20, samples  # the table was watched while it was written
    assert max(samples) <= limit * 1.1, max(samples)
    # The newest rows are the ones kept.
    kept = EventLog.objects.count()
    assert limit <= kept <= limit * 1.1
    assert logged_paths() == {str(watch_dir / f"f{i:06}") for i in range(files - kept, files)}
    figures = summary(daemon)
    assert (figures["written"], figures["dropped"], figures["pruned"]) == (files, 0, files - kept)


@pytest.mark.daemon
def test_a_50000_file_burst_is_logged_whole_at_default_settings(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    """Two rows a file (IN_CREATE, IN_CLOSE_WRITE), every one written: nothing dropped."""
    files = 50_000
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE|IN_CLOSE_WRITE", SIGNALER]]
    daemon.env_extra.update(
        INOTIFIER_EVENT_LOG="1",
        INOTIFIER_EVENT_LOG_MAX_ROWS="0",  # retention aside: the table shows every row written
        INOTIFIER_TEST_RECORD="",  # no receiver: events as fast as the loop goes
    )
    pid = daemon.start()
    [log_process] = wait_for(lambda: writer_processes(pid), 10)
    rss = {pid: rss_kib(pid), log_process: rss_kib(log_process)}
    growth = dict.fromkeys(rss, 0)
    writer = write_files(watch_dir, 0, files)
    deadline = time.monotonic() + 180
    seen, seen_at = -1, time.monotonic()
    while True:  # until every row is in, or the count stood still for 5 s after the burst
        for p, start in rss.items():
            growth[p] = max(growth[p], rss_kib(p) - start)
        count = EventLog.objects.count()
        now = time.monotonic()
        if count == 2 * files or (writer.poll() is not None and count == seen and now - seen_at > 5):
            break
        if count != seen:
            seen, seen_at = count, now
        assert now < deadline, count
        time.sleep(0.05)
    assert writer.wait(30) == 0
    assert daemon.stop().returncode == 0
    status = DaemonStatus.objects.get()
    assert status.events == 2 * files  # delivered
    assert (EventLog.objects.count(), status.log_dropped) == (2 * files, 0)
    figures = summary(daemon)
    print(
        f"burst: {figures}; RSS growth: daemon {growth[pid] / 1024:.1f} MiB, "
        f"writer process {growth[log_process] / 1024:.1f} MiB"
    )
    assert (figures["written"], figures["dropped"]) == (2 * files, 0)
    # The burst outran the writer: more rows waited than the former default bound (10 000) held.
    assert figures["peak"] > 10_000


# -- the writer process ----------------------------------------------------------------------


def writer_processes(daemon_pid: int) -> list[int]:
    """Pids of the daemon's event-log writer processes (``inotifier-log``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if comm == "inotifier-log" and int(fields[1]) == daemon_pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])


@pytest.mark.daemon
def test_rows_are_written_by_a_lower_priority_process_that_ignores_stop_signals(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    pid = daemon.start()
    [writer] = wait_for(lambda: writer_processes(pid), 10)
    assert niceness(writer) == niceness(pid) + 10  # INOTIFIER_EVENT_LOG_NICE
    # A service manager signalling the whole group, a Ctrl-C: the writer stays, the rows too.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(writer, signum)
    (watch_dir / "one").touch()
    wait_for(lambda: EventLog.objects.filter(pathname=str(watch_dir / "one")).exists(), 10)
    assert alive(writer) and writer_processes(pid) == [writer]
    assert daemon.stop().returncode == 0
    wait_for(lambda: not alive(writer), 10)


@pytest.mark.daemon
def test_a_writer_process_that_dies_is_replaced_and_its_loss_counted(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    pid = daemon.start()
    (watch_dir / "before").touch()
    wait_for(lambda: EventLog.objects.filter(pathname=str(watch_dir / "before")).exists(), 10)
    [first] = writer_processes(pid)
    os.kill(first, signal.SIGKILL)
    gone = f"writer process (pid {first}) ended unexpectedly (killed by SIGKILL)"
    wait_for(lambda: gone in daemon.stderr_text(), 10)
    wait_for(lambda: "writer process restarted" in daemon.stderr_text(), 10)
    [second] = wait_for(lambda: writer_processes(pid), 10)
    assert second != first
    (watch_dir / "after").touch()
    daemon.record.wait_path(watch_dir / "after", "IN_CREATE")  # events never stopped
    wait_for(lambda: EventLog.objects.filter(pathname=str(watch_dir / "after")).exists(), 10)
    assert daemon.pid() == pid
    assert daemon.stop().returncode == 0
    # Every row was confirmed before the kill: nothing counted as lost.
    assert DaemonStatus.objects.get().log_dropped == 0


@pytest.mark.daemon
def test_the_writer_process_never_outlives_the_daemon(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    pid = daemon.start()
    [writer] = wait_for(lambda: writer_processes(pid), 10)
    for i in range(200):
        (watch_dir / f"f{i}").touch()
    wait_for(lambda: EventLog.objects.count() == 200, 20)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(writer), 15)  # its stdin closed: it writes what it holds and exits
    assert EventLog.objects.count() == 200


# -- database outage (PostgreSQL through a proxy the test cuts) ---------------------------------


@pytest.fixture
def proxy(daemon: DaemonProcess) -> Iterator[TcpProxy]:
    """A proxy to the test database that the daemon's DATABASE_URL points at."""
    from django.db import connection as conn

    p = TcpProxy((conn.settings_dict["HOST"] or "127.0.0.1", int(conn.settings_dict["PORT"] or 5432)))
    daemon.db_url = p.url_for(database_url())
    yield p
    p.close()


def _start_logging_daemon(daemon: DaemonProcess, watch_dir: Path, proxy: TcpProxy) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    daemon.start()
    for i in range(5):
        (watch_dir / f"before-{i}").touch()
    wait_for(lambda: EventLog.objects.count() == 5, 20)
    assert proxy.accepted > 0


def _outage(daemon: DaemonProcess, watch_dir: Path, proxy: TcpProxy, files: int) -> set[str]:
    """Cut the database, create ``files`` files, check signals flowed and nothing was written."""
    proxy.down()
    names = {str(watch_dir / f"during-{i:03}") for i in range(files)}
    for name in names:
        Path(name).touch()
    wait_for(lambda: names <= set(daemon.record.paths("IN_CREATE")), 30)  # signals keep flowing
    wait_for(lambda: "event log: database unavailable" in daemon.stderr_text(), 30)
    wait_for(lambda: proxy.refused > 0, 30)
    assert EventLog.objects.count() == 5  # the rows wait in the daemon
    return names


@pytest.mark.daemon
@pytest.mark.postgres_only
@needs_postgres
def test_database_outage_delays_rows_but_loses_none(
    daemon: DaemonProcess, watch_dir: Path, proxy: TcpProxy
) -> None:
    _start_logging_daemon(daemon, watch_dir, proxy)
    names = _outage(daemon, watch_dir, proxy, 200)
    refused = proxy.refused
    wait_for(lambda: proxy.refused >= refused + 3, 30)  # the daemon keeps retrying
    assert EventLog.objects.count() == 5
    proxy.up()
    wait_for(lambda: EventLog.objects.count() == 205, 60)
    assert names <= logged_paths()
    wait_for(lambda: "event log: database back after" in daemon.stderr_text(), 10)
    wait_for(lambda: DaemonStatus.objects.filter(running=True).exists(), 60)
    assert DaemonStatus.objects.get().log_dropped == 0
    assert daemon.stop().returncode == 0
    assert EventLog.objects.count() == 205


@pytest.mark.daemon
@pytest.mark.postgres_only
@needs_postgres
def test_database_outage_over_the_bound_drops_and_counts(
    daemon: DaemonProcess, watch_dir: Path, proxy: TcpProxy
) -> None:
    daemon.env_extra["INOTIFIER_EVENT_LOG_BUFFER"] = "20"
    _start_logging_daemon(daemon, watch_dir, proxy)
    _outage(daemon, watch_dir, proxy, 100)
    wait_for(lambda: "rows dropped" in daemon.stderr_text(), 30)
    proxy.up()
    wait_for(lambda: EventLog.objects.count() == 25, 60)  # the 20 the buffer held
    wait_for(lambda: DaemonStatus.objects.filter(log_dropped=80).exists(), 60)
    status = daemon.manage("inotifier_status")
    assert "80 log rows dropped" in status.stdout, status
    wait_for(lambda: "80 in total" in daemon.stderr_text(), 30)
    assert daemon.stop().returncode == 0
    assert EventLog.objects.count() == 25


@pytest.mark.daemon
@pytest.mark.postgres_only
@needs_postgres
def test_a_connection_dropped_while_idle_is_replaced_at_once(
    daemon: DaemonProcess, watch_dir: Path, proxy: TcpProxy
) -> None:
    _start_logging_daemon(daemon, watch_dir, proxy)
    proxy.cut()  # as a server's idle_session_timeout would
    (watch_dir / "after-cut").touch()
    wait_for(lambda: EventLog.objects.filter(pathname=str(watch_dir / "after-cut")).exists(), 20)
    assert "event log: database unavailable" not in daemon.stderr_text()
