"""The listener: a PostgreSQL connection of its own LISTENing for changes, its socket in the selector."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from ..escaping import get_logger
from .dbguard import Backoff

if TYPE_CHECKING:
    import psycopg

logger = get_logger("inotifier.daemon.listen")

#: Keys Django keeps in ``DATABASES[...]["OPTIONS"]`` that are no libpq connection parameters.
DJANGO_ONLY_OPTIONS = frozenset(
    {"isolation_level", "assume_role", "pool", "server_side_binding", "prepare_threshold", "cursor_factory"}
)
#: Seconds within which the listener's own test NOTIFY must come back; else LISTEN is not delivered.
PROBE_SECONDS = 5.0
#: Seconds of silence after which the connection is checked with ``SELECT 1``.
CHECK_SECONDS = 30.0
#: Prefix of the test notifications: every listener ignores them.
PROBE_PREFIX = "probe:"


class FdRegistry(Protocol):
    """What the listener asks of the loop's selector (``wakeup.Waker``)."""

    def watch(self, fd: int) -> None: ...

    def unwatch(self, fd: int) -> None: ...


def listen_alias(setting: object, default: str) -> str | None:
    """Return the DATABASES alias to LISTEN on (``INOTIFIER_LISTEN_DATABASE``), None for none."""
    if setting is False or setting == "":
        return None
    alias = default if setting is None else setting
    if not isinstance(alias, str) or alias not in connections.databases:
        raise ImproperlyConfigured(
            f"INOTIFIER_LISTEN_DATABASE must be an alias of DATABASES, None or False, not {setting!r}"
        )
    return alias


def connection_params(alias: str, label: str) -> dict[str, Any] | None:
    """Return ``psycopg.connect()`` keywords for ``DATABASES[alias]``; None when it is not PostgreSQL."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return None
    return params_from_settings(connection.settings_dict, label)


def params_from_settings(settings: dict[str, Any], label: str) -> dict[str, Any]:
    """Return ``psycopg.connect()`` keywords for one ``DATABASES`` entry (PostgreSQL)."""
    params = {k: v for k, v in (settings.get("OPTIONS") or {}).items() if k not in DJANGO_ONLY_OPTIONS}
    for key, name in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password")):
        if settings.get(key):
            params[name] = settings[key]
    for key, name in (("HOST", "host"), ("PORT", "port")):
        if settings.get(key):
            params[name] = str(settings[key])
    params.setdefault("application_name", label[:63])
    params.setdefault("connect_timeout", 5)
    # A peer gone without a word (a host or a network lost) turns the idle socket
    # readable with an error within about 25 s, with no query sent.
    for name, value in (("keepalives", 1), ("keepalives_idle", 10), ("keepalives_interval", 5)):
        params.setdefault(name, value)
    params.setdefault("keepalives_count", 3)
    return params


class ConfigListener:
    """LISTEN on a channel over its own autocommit connection, whose socket wakes the loop.

    ``ready(fds)`` drains what arrived and says whether a change was announced
    (notifications that came together count once). A lost connection (server
    restart, ``pg_terminate_backend``, network) is noticed when its socket
    turns readable with an error, or by a ``SELECT 1`` after ``CHECK_SECONDS``
    of silence; ``check()`` replaces it with backoff and then asks for a full
    reconcile: what was announced meanwhile is lost by design. After each
    LISTEN a test NOTIFY is sent through ``probe`` (another connection): if it
    does not come back, a pooler in transaction mode is dropping LISTEN, and
    a WARNING says so; the poll goes on either way.
    """

    def __init__(
        self,
        params: dict[str, Any],
        fds: FdRegistry,
        probe: Callable[[str], bool],
        channel: str,
    ) -> None:
        self.params = params
        self.fds = fds
        self.probe = probe
        self.channel = channel
        self.conn: psycopg.Connection[Any] | None = None
        self.fd: int | None = None
        self.backoff = Backoff()
        self.retry_at = 0.0
        self.quiet_since = 0.0  # time.monotonic() of the last sign of life
        self.token = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        self.probe_deadline: float | None = None
        self.delivered = False  # a test NOTIFY came back on this connection

    @property
    def where(self) -> str:
        params = self.params
        return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"

    def start(self) -> None:
        """Connect and LISTEN (on failure, retried by ``check()``)."""
        self._connect()

    def next_check(self) -> float:
        """Return when ``check()`` has something to do (``time.monotonic()``)."""
        if self.conn is None:
            return self.retry_at
        due = self.quiet_since + CHECK_SECONDS
        return min(due, self.probe_deadline) if self.probe_deadline is not None else due

    def ready(self, fds: frozenset[int]) -> bool:
        """Drain the notifications if the socket is among ``fds``; return True when a change was announced."""
        if self.fd is None or self.fd not in fds:
            return False
        return self._drain()

    def check(self, now: float) -> bool:
        """Reconnect when due, check a quiet connection, judge the test NOTIFY; True: reconcile in full."""
        if self.conn is None:
            return now >= self.retry_at and self._connect()
        if self.probe_deadline is not None and now >= self.probe_deadline:
            self.probe_deadline = None
            logger.warning(
                "LISTEN on %s got no notification back within %.0f s: a connection pooler in transaction "
                "mode (PgBouncer pool_mode = transaction) drops LISTEN. Point INOTIFIER_LISTEN_DATABASE at a "
                "DATABASES entry that reaches PostgreSQL directly; until then changes reach this daemon at "
                "its poll (INOTIFIER_POLL_INTERVAL)",
                self.where,
                PROBE_SECONDS,
            )
        if now - self.quiet_since < CHECK_SECONDS:
            return False
        try:
            self.conn.execute("SELECT 1")
        except Exception as exc:
            self._lost(exc)
            return False
        # Notifications that came with the answer wait in psycopg, not in the socket.
        return self._drain()

    def close(self) -> None:
        """Close the connection (the daemon stops)."""
        if self.fd is not None:
            self.fds.unwatch(self.fd)
            self.fd = None
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    # -- inside -------------------------------------------------------------------------

    def _connect(self) -> bool:
        import psycopg
        from psycopg import sql

        try:
            conn = psycopg.connect(autocommit=True, **self.params)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except Exception as exc:
            if self.backoff.since is None:
                logger.warning(
                    "cannot LISTEN on %s (%s); changes reach this daemon at its poll until it can, retrying",
                    self.where,
                    exc,
                )
            self.retry_at = time.monotonic() + self.backoff.failed()
            return False
        self.conn = conn
        self.fd = conn.fileno()
        self.fds.watch(self.fd)
        self.quiet_since = time.monotonic()
        lasted = self.backoff.recovered()
        if lasted is None:
            logger.info("listening for configuration changes on %s", self.where)
        else:
            logger.warning(
                "LISTEN on %s again after %.1f s; reconciling in full (what was announced meanwhile is "
                "not replayed)",
                self.where,
                lasted,
            )
        if self.probe(self.token):
            self.probe_deadline = self.quiet_since + PROBE_SECONDS
        return lasted is not None

    def _drain(self) -> bool:
        assert self.conn is not None
        try:
            payloads = [n.payload for n in self.conn.notifies(timeout=0.0)]
        except Exception as exc:
            self._lost(exc)
            return False
        self.quiet_since = time.monotonic()
        changed = False
        for payload in payloads:
            if payload == self.token:
                self.probe_deadline = None
                self.delivered = True
            elif not payload.startswith(PROBE_PREFIX):  # another daemon's test is no change
                changed = True
        return changed

    def _lost(self, exc: BaseException) -> None:
        logger.warning("the LISTEN connection to %s was lost (%s); reconnecting", self.where, exc)
        self.close()
        self.backoff.failed()  # the outage starts now: "again after N s" measures it
        self.retry_at = time.monotonic()  # a first try at once (a killed backend, a restart)
