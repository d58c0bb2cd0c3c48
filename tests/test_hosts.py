"""Several hosts, one PostgreSQL: NOTIFY on commit, LISTEN in every daemon, leases of exclusive watches.

Every daemon here is a real process (``manage.py inotifier_start``) with its
own INOTIFIER_HOSTNAME, pid file and record of events, against the one test
database. The poll interval is 60 s: a change seen within seconds can only
have come through NOTIFY.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from inotifier.masks import BITS
from inotifier.models import ConfigVersion, DaemonStatus, WatchLease, WatchPath

from .conftest import DaemonProcess, database_url, wait_for
from .pgproxy import TcpProxy

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="NOTIFY / LISTEN are PostgreSQL's; run with DATABASE_URL=postgres://...",
    ),
]

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
IN_CREATE = BITS["IN_CREATE"]
#: Only a notification can make a change live within seconds.
SLOW_POLL = {"INOTIFIER_POLL_INTERVAL": "60"}
LEASE = 4.0


def seen_under(d: DaemonProcess, directory: Path) -> list[str]:
    return [p for p in d.record.paths() if p.startswith(f"{directory}/")]


def probe(daemons: list[DaemonProcess], directory: Path, timeout: float = 10.0) -> float:
    """Create files in ``directory`` until every daemon has reported one; return the seconds it took."""
    started = time.monotonic()
    count = iter(range(1_000_000))

    def all_seen() -> bool:
        (directory / f"probe-{next(count)}").touch()
        return all(seen_under(d, directory) for d in daemons)

    wait_for(all_seen, timeout, interval=0.05)
    return time.monotonic() - started


def listener_pid(host: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [f"inotifier-listen {host}"],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


class Writer:
    """Create a file in a directory every ``every`` seconds from a thread, until stopped."""

    def __init__(self, directory: Path, every: float = 0.05) -> None:
        self.directory = directory
        self.every = every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stopped.wait(self.every):
            (self.directory / f"f{i:06}").touch()
            i += 1

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


@pytest.fixture
def writer() -> Iterator[list[Writer]]:
    made: list[Writer] = []
    yield made
    for w in made:
        w.stop()


def assert_one_holder_at_a_time(first: DaemonProcess, second: DaemonProcess, directory: Path) -> float:
    """Every file is processed by one daemon, and all of ``first``'s before any of ``second``'s.

    Return the time (``time.time()``) of ``second``'s first event.
    """
    a = [(t, p) for t, p in first.record.timed() if p.startswith(f"{directory}/")]
    b = [(t, p) for t, p in second.record.timed() if p.startswith(f"{directory}/")]
    assert a and b
    assert {p for _t, p in a} & {p for _t, p in b} == set(), "a file was processed by both daemons"
    assert max(t for t, _p in a) < min(t for t, _p in b), "both daemons held the watch at once"
    return min(t for t, _p in b)


# -- 1. instant reload on every host ------------------------------------------------------


def test_a_row_for_one_host_reaches_only_it_and_a_shared_change_reaches_all(
    fleet: Any, watch_dir: Path
) -> None:
    hosts = [fleet(name, **SLOW_POLL) for name in ("files-1", "files-2", "files-3")]
    for d in hosts:
        d.start()
    only_2 = watch_dir / "only-2"
    only_2.mkdir()
    WatchPath.objects.create(path=str(only_2), mask=IN_CREATE, processor=SIGNALER, host="files-2")
    assert probe([hosts[1]], only_2) < 10  # far sooner than the 60 s poll
    (only_2 / "last").touch()
    hosts[1].record.wait_path(only_2 / "last")
    time.sleep(0.5)  # the others had every chance to (wrongly) see it
    assert seen_under(hosts[0], only_2) == [] and seen_under(hosts[2], only_2) == []

    shared = watch_dir / "shared"
    shared.mkdir()
    WatchPath.objects.create(path=str(shared), mask=IN_CREATE, processor=SIGNALER)
    assert probe(hosts, shared) < 10

    # inotifier_reload on one host: every daemon reconciles at once, and says so in its status.
    result = hosts[0].manage("inotifier_reload")
    assert result.returncode == 0, result.stderr
    version = ConfigVersion.current()
    names = ["files-1", "files-2", "files-3"]
    wait_for(lambda: DaemonStatus.objects.filter(host__in=names, version_applied=version).count() == 3, 10)


def test_a_killed_listen_connection_is_replaced_and_the_daemon_catches_up(
    fleet: Any, watch_dir: Path
) -> None:
    d = fleet("files-1", **SLOW_POLL)
    d.start()
    before = wait_for(lambda: listener_pid("files-1"), 10)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [before])
    # Announced while the listener may be away: lost by design, caught up by the full reconcile.
    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)
    assert probe([d], watch_dir) < 10
    after = wait_for(lambda: (pid := listener_pid("files-1")) not in (None, before) and pid, 10)
    assert after != before
    wait_for(lambda: "was lost" in d.stderr_text() and "again after" in d.stderr_text(), 10)
    # And it listens again: the next change is live at once too.
    other = watch_dir / "next"
    other.mkdir()
    WatchPath.objects.create(path=str(other), mask=IN_CREATE, processor=SIGNALER)
    assert probe([d], other) < 10


def test_a_daemon_keeps_its_database_connection_between_polls(fleet: Any, watch_dir: Path) -> None:
    # The test settings leave CONN_MAX_AGE at Django's default, 0: a daemon that honoured it
    # literally would start a new backend at every poll (here ten a second), most of what a
    # change takes to go live on a busy host (bench/hosts.py: p95 121 ms -> 49 ms, 5 daemons).
    d = fleet("files-1", INOTIFIER_POLL_INTERVAL="0.1")
    d.start()
    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)
    assert probe([d], watch_dir) < 10
    seen: set[tuple[int, object]] = set()
    deadline = time.monotonic() + 3.0  # about 30 polls
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND application_name NOT LIKE 'inotifier-listen%%'"
            )
            seen.update(cursor.fetchall())
        time.sleep(0.05)
    assert 1 <= len(seen) <= 3, f"{len(seen)} backends for about 30 polls"


# -- 2. one holder for a shared watch -----------------------------------------------------


def _exclusive_pair(
    fleet: Any, watch_dir: Path, first_env: dict[str, str], lease: float = LEASE
) -> tuple[DaemonProcess, DaemonProcess, Path]:
    shared = watch_dir / "shared"
    shared.mkdir()
    WatchPath.objects.create(path=str(shared), mask=IN_CREATE, processor=SIGNALER, exclusive=True)
    env = {**SLOW_POLL, "INOTIFIER_LEASE_TIMEOUT": str(lease)}
    first = fleet("files-1", **env, **first_env)
    second = fleet("files-2", **env)
    first.start()
    probe([first], shared)  # the first one started holds it
    second.start()
    return first, second, shared


def test_an_exclusive_watch_fails_over_after_kill_9_within_the_lease(
    fleet: Any, watch_dir: Path, writer: list[Writer]
) -> None:
    holder, other, shared = _exclusive_pair(fleet, watch_dir, {})
    writer.append(Writer(shared))
    time.sleep(1.5)
    assert seen_under(other, shared) == []  # one holder
    assert WatchLease.objects.get().holder == "files-1"
    pid = holder.pid()
    assert pid
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: seen_under(other, shared), LEASE + 10)
    first = assert_one_holder_at_a_time(holder, other, shared)
    # Within the lease (plus the time to set the watch up on a busy machine).
    assert first - killed < LEASE + 3, first - killed
    assert WatchLease.objects.get().holder == "files-2"


def test_a_holder_cut_off_from_the_database_stops_before_another_takes_over(
    fleet: Any, watch_dir: Path, writer: list[Writer]
) -> None:
    settings = connection.settings_dict
    proxy = TcpProxy((settings.get("HOST") or "127.0.0.1", int(settings.get("PORT") or 5432)))
    try:
        holder, other, shared = _exclusive_pair(
            fleet, watch_dir, {"DATABASE_URL": proxy.url_for(database_url())}
        )
        writer.append(Writer(shared))
        time.sleep(1.0)
        proxy.down()
        wait_for(lambda: seen_under(other, shared), LEASE + 10)
        time.sleep(0.5)  # both would be processing files now, if both held it
        taken = assert_one_holder_at_a_time(holder, other, shared)
        assert "could not be renewed" in holder.stderr_text()
        # Back on the database, the old holder finds the lease taken and stays out.
        proxy.up()
        wait_for(lambda: "database back after" in holder.stderr_text(), 20)
        time.sleep(LEASE)
        assert max(t for t, p in holder.record.timed() if p.startswith(f"{shared}/")) < taken
        assert WatchLease.objects.get().holder == "files-2"
    finally:
        proxy.close()


def test_a_clean_stop_hands_the_watch_over_at_once(fleet: Any, watch_dir: Path, writer: list[Writer]) -> None:
    holder, other, shared = _exclusive_pair(fleet, watch_dir, {}, lease=60)
    writer.append(Writer(shared))
    time.sleep(1.0)
    stopped = time.time()
    assert holder.stop().returncode == 0
    wait_for(lambda: seen_under(other, shared), 10)
    first = assert_one_holder_at_a_time(holder, other, shared)
    assert first - stopped < 10  # not the 60 s of the lease: released and announced


# -- on commit, never holding a lock ------------------------------------------------------


def test_an_open_transaction_that_saved_a_watch_does_not_block_another(transactional_db: Any) -> None:
    before = ConfigVersion.current()
    saved = threading.Event()
    finish = threading.Event()
    failures: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                WatchPath.objects.create(path="/srv/first", mask=IN_CREATE, processor=SIGNALER)
                saved.set()
                finish.wait(30)
        except BaseException as exc:  # shown by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert saved.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Waiting on the other transaction's lock fails the test instead of hanging it.
                cursor.execute("SET LOCAL lock_timeout = '3s'")
            WatchPath.objects.create(path="/srv/second", mask=IN_CREATE, processor=SIGNALER)
    finally:
        finish.set()
        thread.join(30)
    assert not failures
    assert ConfigVersion.current() == before + 2


def test_notify_is_sent_once_per_transaction_and_only_on_commit(transactional_db: Any) -> None:
    import psycopg

    with psycopg.connect(database_url(), autocommit=True) as listener:
        listener.execute("LISTEN inotifier_config")
        with transaction.atomic():
            for i in range(3):
                WatchPath.objects.create(path=f"/srv/{i}", mask=IN_CREATE, processor=SIGNALER)
            assert list(listener.notifies(timeout=0.3)) == []  # nothing before the commit
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        notes += [n.payload for n in listener.notifies(timeout=0.5)]
        assert notes == [str(ConfigVersion.current())]  # one change announced, with its version

        version = ConfigVersion.current()
        with pytest.raises(RuntimeError), transaction.atomic():
            WatchPath.objects.create(path="/srv/rolled-back", mask=IN_CREATE, processor=SIGNALER)
            raise RuntimeError("rolled back")
        assert list(listener.notifies(timeout=0.5)) == []
        assert ConfigVersion.current() == version
