"""Minimal Django configuration for the Django-based baseline contenders.

Called inside a contender's own process (``settings.configure``), never in
the harness.  The SQLite database lives in the run's scratch directory on
disk (``StreamContext.workdir``) with Django's default SQLite settings, as a
naive deployment would have it.
"""

from __future__ import annotations

import os


def configure(workdir: str, *, database: bool) -> None:
    """Configure and set up Django; with ``database``, create the
    ``BenchEvent`` table in a fresh SQLite file under ``workdir``."""
    import django
    from django.conf import settings

    databases = {}
    if database:
        path = os.path.join(workdir, f"bench-{os.getpid()}.sqlite3")
        databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": path}}
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["bench.djapp"] if database else [],
        DATABASES=databases,
        LOGGING_CONFIG=None,
    )
    django.setup()
    if database:
        from django.db import connection

        from bench.djapp.models import BenchEvent

        with connection.schema_editor() as editor:
            editor.create_model(BenchEvent)
