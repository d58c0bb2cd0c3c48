"""A test app whose receivers record events to a file named by the environment."""

from __future__ import annotations

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "inotifier_testapp"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from . import receivers

        receivers.connect()
        connection_created.connect(receivers.sqlite_wal)
