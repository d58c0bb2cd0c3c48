"""The desired state: which watches this host should hold, and the processors they run."""

from __future__ import annotations

import math
from typing import Any

from django.db import connections, router

from ..announce import CONFIG_CHANNEL, notify
from ..conf import app_settings
from ..escaping import get_logger
from ..specs import ROW_FIELDS, RowSpecs, SpecError, WatchSpec, load_processor
from .dbguard import DatabaseGuard
from .events import Processor
from .exclusive import LeaseKeeper, lease_timeout
from .listen import ConfigListener, FdRegistry, connection_params, listen_alias

logger = get_logger("inotifier.daemon")

#: Index of ``exclusive`` and of the pk in a row read with ``ROW_FIELDS``.
EXCLUSIVE = ROW_FIELDS.index("exclusive")
PK = ROW_FIELDS.index("pk")


class DesiredState:
    """Settings entries plus the enabled WatchPath rows for this host, and the version counter.

    Without a database (``guard`` None) only the settings count. During an
    outage the rows last read are kept, so the active watches stay as they are.
    Of the exclusive rows, only those whose lease this daemon holds are kept
    (``leases``). ``start()`` LISTENs for changes (PostgreSQL); ``wakeup()``
    says when a notification, the listener coming back, or a lease taken or
    lost asks for a reconcile.
    """

    def __init__(self, hostname: str, guard: DatabaseGuard | None) -> None:
        self.hostname = hostname
        self.guard = guard
        self.row_specs = RowSpecs()
        self._rows: list[tuple[Any, ...]] = []  # last rows read; kept through an outage
        #: The version counter read just before the rows by the last ``specs()`` (None: not read).
        self.version_read: int | None = None
        self.seen: int | None = None  # the counter as last read (metrics: the version to apply)
        self.leases: LeaseKeeper | None = None
        self.listener: ConfigListener | None = None
        if guard is not None:
            timeout = lease_timeout(app_settings.INOTIFIER_LEASE_TIMEOUT)
            self.leases = LeaseKeeper(hostname, guard, timeout)

    # -- what asks for a reconcile ----------------------------------------------------------

    def start(self, fds: FdRegistry) -> None:
        """LISTEN for configuration changes when the database is PostgreSQL (the poll goes on anyway)."""
        from ..models import WatchPath

        if self.guard is None:
            return
        alias = listen_alias(app_settings.INOTIFIER_LISTEN_DATABASE, router.db_for_read(WatchPath))
        if alias is None:
            logger.info("INOTIFIER_LISTEN_DATABASE is off: changes reach this daemon at its poll")
            return
        params = connection_params(alias, f"inotifier-listen {self.hostname}")
        if params is None:
            return  # SQLite, MySQL: the poll alone
        try:
            import psycopg  # noqa: F401
        except ImportError:
            logger.warning(
                "LISTEN needs psycopg 3 (pip install 'django-inotifier[postgres]'); changes reach this "
                "daemon at its poll (INOTIFIER_POLL_INTERVAL)"
            )
            return
        self.listener = ConfigListener(
            params, fds, lambda payload: self._probe(alias, payload), CONFIG_CHANNEL
        )
        self.listener.start()

    def wakeup(self, ready: frozenset[int], now: float) -> bool:
        """Return True when a reconcile is due now: a change announced, LISTEN back, a lease taken or lost."""
        due = False
        if self.listener is not None:
            due = self.listener.ready(ready)
            if now >= self.listener.next_check():
                due = self.listener.check(now) or due
        if self.leases is not None and now >= self.leases.next_check():
            due = self.leases.check(now) or due
        return due

    def next_wakeup(self) -> float:
        """Return when ``wakeup()`` has work even with no notification (``time.monotonic()``)."""
        listener = self.listener.next_check() if self.listener is not None else math.inf
        return min(listener, self.leases.next_check()) if self.leases is not None else listener

    def applied(self) -> None:
        """The reconcile applied the last specs: free the leases no longer wanted."""
        if self.leases is not None:
            self.leases.applied()

    def close(self) -> None:
        """Stop listening and free every lease (the watches are stopped)."""
        if self.listener is not None:
            self.listener.close()
        if self.leases is not None:
            self.leases.release_all()

    def _probe(self, alias: str, payload: str) -> bool:
        """Send the listener's test NOTIFY from the daemon's own connection; False when not sent."""
        if self.guard is None or connections[alias].in_atomic_block:
            return False  # a test's transaction: it would be delivered at a commit that never comes
        done, _ = self.guard.call(lambda: notify(alias, payload, CONFIG_CHANNEL), force=True)
        return done

    # -- what is desired ----------------------------------------------------------------------

    def version(self) -> int | None:
        """Return the ConfigVersion counter, or None when it cannot be read now."""
        if self.guard is None:
            return None
        from ..models import ConfigVersion

        _done, version = self.guard.call(ConfigVersion.current)
        if version is not None:
            self.seen = version
        return version

    def specs(self, force: bool = False) -> dict[str, WatchSpec]:
        """Return the desired watches by key; ``force`` re-validates every row (a full resync)."""
        if force:
            self.row_specs.clear()
        self.version_read = None
        if self.guard is not None:
            # One unit of work (one connection) for both (see dbguard.keep_connections).
            done, read = self.guard.call(self._read_version_and_rows, force=True)
            if done and read is not None:
                self.version_read, self._rows = read
                self.seen = self.version_read
        rows = self._rows
        if self.leases is not None:
            held = self.leases.sync(row[PK] for row in rows if row[EXCLUSIVE])
            rows = [row for row in rows if not row[EXCLUSIVE] or row[PK] in held]
        return self.row_specs.build(rows)

    def _read_version_and_rows(self) -> tuple[int, list[tuple[Any, ...]]]:
        from ..models import ConfigVersion

        version = ConfigVersion.current()  # first: a change between the two reads is seen next time
        return version, self._read_rows()

    def _read_rows(self) -> list[tuple[Any, ...]]:
        from ..models import WatchPath

        # Plain tuples straight from the cursor: with thousands of rows, model
        # instances (or even values_list's converters) dominate the reconcile (bench 5).
        query = WatchPath.objects.enabled_for_host(self.hostname).values_list(*ROW_FIELDS)
        sql, params = query.query.sql_with_params()
        with connections[query.db].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def processor(self, spec: WatchSpec) -> tuple[Processor | None, str]:
        """Import and instantiate the processor of ``spec``; (None, why) when it cannot be used.

        Rows only reach this with a processor from the allowlist (checked when
        their spec was built): nothing else is ever imported for a row. A
        processor with ``inotifier_bind`` (TaskDispatcher) is told its watch.
        """
        try:
            cls = load_processor(spec.processor)
            processor = cls()
            bind = getattr(processor, "inotifier_bind", None)
            if callable(bind):
                bind(spec.key, spec.label, spec.watch_id, self.hostname)
            return processor, ""
        except SpecError as exc:
            return None, str(exc)
        except Exception as exc:
            logger.exception("processor %s failed to start", spec.processor)
            return None, f"processor {spec.processor!r} failed to start: {type(exc).__name__}: {exc}"
