"""The database policy of the daemon (``daemon.dbguard``): back off during an outage, say it once, keep connections.

An outage is a real one: a SQLite database whose directory is taken away, so
connecting to it fails with Django's own ``OperationalError`` ("unable to
open database file"); putting the directory back ends the outage. The guard
only sees the exception its unit of work raises, as it does in the daemon.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import InterfaceError, connection, connections
from django.db.backends.sqlite3.base import DatabaseWrapper

from inotifier.daemon.dbguard import (
    DAEMON_CONN_MAX_AGE,
    RETRY_CAP,
    RETRY_FIRST,
    Backoff,
    DatabaseGuard,
    keep_connections,
    refresh_connection,
)

UNAVAILABLE = "database unavailable"
BACK = "database back after"


class Disk:
    """A real SQLite database whose directory can be taken away: queries then fail as in an outage."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "disk"
        self.dir.mkdir()
        self.settings = {
            **connection.settings_dict,
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(self.dir / "db.sqlite3"),
            "OPTIONS": {},
        }
        self.tries = 0

    def down(self) -> None:
        shutil.rmtree(self.dir)

    def up(self) -> None:
        self.dir.mkdir()

    def query(self) -> int:
        """One unit of work: connect, ``SELECT 1``, close; count the tries."""
        self.tries += 1
        wrapper = DatabaseWrapper(self.settings, alias="disk")
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
                return int(cursor.fetchone()[0])
        finally:
            wrapper.close()


@pytest.fixture
def disk(transactional_db: Any, tmp_path: Path) -> Disk:
    return Disk(tmp_path)


@pytest.fixture
def conn_settings() -> Iterator[dict[str, Any]]:
    """The default alias's settings with Django's default CONN_MAX_AGE (0); restored afterwards."""
    entry = connections.settings["default"]
    saved = {key: entry[key] for key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    entry.update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
    yield entry
    entry.update(saved)
    connection.close()  # a connection opened during the test keeps the max age it was opened with


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# -- Backoff -----------------------------------------------------------------------------------


def test_without_an_outage_the_wait_is_the_first_one() -> None:
    assert Backoff().delay() == RETRY_FIRST == 1.0
    assert Backoff(first=0.25, cap=5.0).delay() == 0.25


def test_the_wait_is_a_quarter_of_the_outage_so_far_never_below_first_nor_above_cap() -> None:
    backoff = Backoff(first=1.0, cap=30.0)

    assert backoff.failed() == 1.0  # the first failure: retried soon
    since = backoff.since
    assert since is not None
    waits = [backoff.delay(since + elapsed) for elapsed in (0.0, 2.0, 4.0, 8.0, 100.0, 120.0, 3600.0)]
    assert waits == pytest.approx([1.0, 1.0, 1.0, 2.0, 25.0, 30.0, 30.0])
    assert RETRY_CAP == 30.0


def test_a_further_failure_does_not_restart_the_outage() -> None:
    backoff = Backoff(first=1.0, cap=30.0)
    backoff.failed()
    backoff.since = time.monotonic() - 40.0  # the outage began 40 s ago

    wait = backoff.failed()

    assert 10.0 <= wait < 11.0


def test_recovered_ends_the_outage_and_says_how_long_it_lasted() -> None:
    backoff = Backoff(first=1.0, cap=30.0)
    assert backoff.recovered() is None  # there was none
    backoff.failed()
    backoff.since = time.monotonic() - 12.0

    lasted = backoff.recovered()

    assert lasted is not None and 12.0 <= lasted < 14.0
    assert backoff.recovered() is None
    assert backoff.failed() == 1.0  # a new outage starts from the first wait


# -- DatabaseGuard -------------------------------------------------------------------------------


def test_work_that_succeeds_is_done_and_its_result_returned(transactional_db: Any) -> None:
    Group.objects.create(name="g")
    guard = DatabaseGuard()

    assert guard.call(lambda: Group.objects.count()) == (True, 1)
    assert not guard.down and not guard.came_back


def test_an_outage_is_warned_about_once_however_many_tries_fail(
    disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    guard = DatabaseGuard()
    disk.down()

    results = [guard.call(disk.query, force=True) for _ in range(4)]

    assert results == [(False, None)] * 4
    assert disk.tries == 4 and guard.down
    [warning] = messages(caplog, UNAVAILABLE)
    assert warning.levelno == logging.WARNING
    assert "unable to open database file" in warning.getMessage()


def test_during_an_outage_work_waits_for_its_retry_unless_forced(disk: Disk) -> None:
    guard = DatabaseGuard()
    disk.down()
    guard.call(disk.query)

    assert not guard.due()  # the first retry is a second away
    assert guard.call(disk.query) == (False, None)
    assert disk.tries == 1  # skipped, not tried
    guard.call(disk.query, force=True)
    assert disk.tries == 2


def test_work_is_tried_again_once_its_retry_is_due(disk: Disk) -> None:
    guard = DatabaseGuard()
    guard.backoff = Backoff(first=0.05, cap=0.05)
    disk.down()
    guard.call(disk.query)

    time.sleep(0.06)

    assert guard.due()
    guard.call(disk.query)
    assert disk.tries == 2


def test_the_wait_between_tries_grows_with_the_outage(disk: Disk) -> None:
    guard = DatabaseGuard()
    disk.down()
    guard.call(disk.query)
    assert guard.retry_at - time.monotonic() <= RETRY_FIRST
    guard.backoff.since = time.monotonic() - 40.0  # the outage began 40 s ago

    guard.call(disk.query, force=True)

    assert 9.0 < guard.retry_at - time.monotonic() <= 10.5  # a quarter of it


def test_when_the_database_is_back_it_is_said_once_and_a_resync_is_asked(
    disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    guard = DatabaseGuard()
    disk.down()
    guard.call(disk.query)
    disk.up()

    assert guard.call(disk.query, force=True) == (True, 1)
    assert guard.came_back and not guard.down
    assert guard.due()

    guard.came_back = False  # what the loop does when it resyncs
    assert guard.call(disk.query) == (True, 1)
    assert not guard.came_back
    [back] = messages(caplog, BACK)
    assert back.levelno == logging.WARNING


def test_each_outage_is_warned_about_once(disk: Disk, caplog: pytest.LogCaptureFixture) -> None:
    guard = DatabaseGuard()
    for _ in range(2):
        disk.down()
        guard.call(disk.query, force=True)
        guard.call(disk.query, force=True)
        disk.up()
        guard.call(disk.query, force=True)

    assert len(messages(caplog, UNAVAILABLE)) == 2
    assert len(messages(caplog, BACK)) == 2


def test_an_error_that_is_not_the_databases_is_raised_not_taken_for_an_outage(
    transactional_db: Any,
) -> None:
    guard = DatabaseGuard()

    with pytest.raises(ZeroDivisionError):
        guard.call(lambda: 1 / 0)

    assert not guard.down


def test_a_connection_closed_under_the_daemon_is_an_outage_too(transactional_db: Any) -> None:
    """Django's InterfaceError (psycopg's "connection already closed") is no DatabaseError."""

    def closed() -> None:
        raise InterfaceError("connection already closed")

    guard = DatabaseGuard()
    assert guard.call(closed) == (False, None)
    assert guard.down


def test_the_guard_drops_an_obsolete_connection_before_each_unit_of_work(
    transactional_db: Any, conn_settings: dict[str, Any]
) -> None:
    connection.close()
    connection.ensure_connection()  # opened with CONN_MAX_AGE = 0: obsolete at the next unit of work
    before = connection.connection

    def work() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return connection.connection

    done, used = DatabaseGuard().call(work)

    assert done and used is not None and used is not before


# -- keeping connections --------------------------------------------------------------------------


def test_keep_connections_keeps_what_the_project_would_close_after_each_request(
    transactional_db: Any, conn_settings: dict[str, Any]
) -> None:
    assert keep_connections() == ["default"]

    assert conn_settings["CONN_MAX_AGE"] == DAEMON_CONN_MAX_AGE == 60.0
    assert conn_settings["CONN_HEALTH_CHECKS"] is True
    connection.close()
    connection.ensure_connection()
    before = connection.connection
    refresh_connection()
    assert connection.connection is before  # reused by the next unit of work


def test_without_keep_connections_a_refresh_drops_the_connection(
    transactional_db: Any, conn_settings: dict[str, Any]
) -> None:
    connection.close()
    connection.ensure_connection()

    refresh_connection()

    assert connection.connection is None


@pytest.mark.parametrize("chosen", [None, 300])
def test_keep_connections_leaves_a_max_age_the_project_chose(
    conn_settings: dict[str, Any], chosen: int | None
) -> None:
    conn_settings["CONN_MAX_AGE"] = chosen

    assert keep_connections() == []

    assert conn_settings["CONN_MAX_AGE"] == chosen
    assert conn_settings["CONN_HEALTH_CHECKS"] is False


def test_a_refresh_inside_an_atomic_block_leaves_its_transaction_alone(db: Any) -> None:
    Group.objects.create(name="kept")
    before = connection.connection

    refresh_connection()

    assert connection.connection is before
    assert not connection.needs_rollback
    assert Group.objects.filter(name="kept").exists()


def test_after_a_failure_the_connections_are_closed_so_the_retry_starts_afresh(
    disk: Disk, conn_settings: dict[str, Any]
) -> None:
    conn_settings["CONN_MAX_AGE"] = None  # a project that keeps its connections forever
    connection.close()
    connection.ensure_connection()
    before = connection.connection
    guard = DatabaseGuard()
    assert guard.call(lambda: connection.connection) == (True, before)  # kept across units of work
    disk.down()

    guard.call(disk.query)

    assert connection.connection is None
