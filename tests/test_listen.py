"""The LISTEN part: its connection built from the Django settings, notifications coalesced, poolers noticed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from inotifier import signals
from inotifier.daemon.listen import connection_params, listen_alias, params_from_settings
from inotifier.daemon.runner import Daemon
from inotifier.masks import BITS
from inotifier.models import WatchPath

from .conftest import database_url, pump, wait_for
from .pgproxy import NotificationDroppingProxy

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
LIST = "tests.testapp.receivers.ListProcessor"
IN_CREATE = BITS["IN_CREATE"]

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN is PostgreSQL's; run with DATABASE_URL=postgres://..."
)


def test_the_connection_comes_from_the_django_settings_of_the_alias() -> None:
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "site",
        "USER": "web",
        "PASSWORD": "s3cret",
        "HOST": "db.example",
        "PORT": 6543,
        "OPTIONS": {"sslmode": "verify-full", "isolation_level": 1, "keepalives_idle": 60},
    }
    params = params_from_settings(entry, "inotifier-listen files-1")
    assert params is not None
    assert {k: params[k] for k in ("dbname", "user", "password", "host", "port", "sslmode")} == {
        "dbname": "site",
        "user": "web",
        "password": "s3cret",
        "host": "db.example",
        "port": "6543",
        "sslmode": "verify-full",
    }
    assert "isolation_level" not in params  # Django's, not libpq's
    assert params["keepalives_idle"] == 60  # the site's choice wins over ours
    assert params["application_name"] == "inotifier-listen files-1"


def test_the_listen_database_setting(settings: Any) -> None:
    assert listen_alias(None, "default") == "default"
    assert listen_alias(False, "default") is None
    with pytest.raises(ImproperlyConfigured, match="INOTIFIER_LISTEN_DATABASE must be an alias of DATABASES"):
        listen_alias("nowhere", "default")


def test_sqlite_has_no_listener(transactional_db: Any) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("the SQLite side of the story")
    assert connection_params("default", "x") is None
    with override_settings(INOTIFIER_WATCH_PATHS=[]):
        daemon = Daemon(install_signal_handlers=False, hostname="files-1").start()
    try:
        assert daemon.desired.listener is None  # the poll alone
    finally:
        daemon.close()


@needs_postgres
def test_notifications_that_arrive_together_make_one_reconcile(
    transactional_db: Any, settings: Any, watch_dir: Path
) -> None:
    import psycopg

    settings.INOTIFIER_WATCH_PATHS = []
    settings.INOTIFIER_PROCESSORS = [LIST]
    settings.INOTIFIER_POLL_INTERVAL = 60.0
    reconciles: list[dict[str, int]] = []

    def count(sender: Any, changes: dict[str, int], **kwargs: Any) -> None:
        reconciles.append(changes)

    signals.reconciled.connect(count)
    daemon = Daemon(install_signal_handlers=False, hostname="files-1").start()
    try:
        listener = daemon.desired.listener
        assert listener is not None
        pump(daemon, lambda: listener.delivered)  # its test NOTIFY came back: LISTEN works here
        reconciles.clear()
        # A row committed (autocommit): live at the next tick, not at the 60 s poll.
        WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST)
        pump(daemon, lambda: reconciles, timeout=10)
        assert reconciles == [{"added": 1, "removed": 0, "updated": 0, "unchanged": 0}]
        # Five notifications in one transaction arrive together: one reconcile.
        reconciles.clear()
        with psycopg.connect(database_url()) as other:
            for i in range(5):
                other.execute("SELECT pg_notify('inotifier_config', %s)", [str(1000 + i)])
        pump(daemon, lambda: reconciles, timeout=10)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            daemon.tick(timeout=0.05)
        assert len(reconciles) == 1
    finally:
        signals.reconciled.disconnect(count)
        daemon.close()


@needs_postgres
def test_a_pooler_that_drops_notifications_is_named_and_the_poll_goes_on(fleet: Any, watch_dir: Path) -> None:
    settings = connection.settings_dict
    proxy = NotificationDroppingProxy(
        (settings.get("HOST") or "127.0.0.1", int(settings.get("PORT") or 5432))
    )
    try:
        d = fleet("files-1", INOTIFIER_POLL_INTERVAL="1")
        d.db_url = proxy.url_for(database_url()) + "?sslmode=disable"
        d.start()
        wait_for(lambda: "drops LISTEN" in d.stderr_text(), 20)
        assert "INOTIFIER_LISTEN_DATABASE" in d.stderr_text()
        WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)

        def seen() -> bool:
            (watch_dir / f"p{time.monotonic_ns()}").touch()
            return bool(d.record.paths())

        wait_for(seen, 15, interval=0.1)  # at the poll
    finally:
        proxy.close()
