"""The event log's configuration: one frozen object built from the settings, pickled whole to the writer."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections

from ...conf import app_settings


def positive_setting(name: str, value: Any) -> int:
    """Return ``value`` as an int; ImproperlyConfigured naming setting ``name`` unless it is >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        raise ImproperlyConfigured(f"{name} must be a positive whole number, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class StoreConfig:
    """Everything the writer of the event log needs, in the daemon or in its own process.

    Built once by ``from_settings`` and sent whole (pickled) to the writer
    process, which sets Django up from ``database`` and ``django_settings``:
    nothing is read from module globals there. The tuning fields have the
    defaults the daemon runs with; tests and tools pass others.
    """

    host: str
    using: str = DEFAULT_DB_ALIAS
    #: Seconds between two writes while rows flow (INOTIFIER_EVENT_LOG_FLUSH_INTERVAL).
    interval: float = 0.25
    #: Whether this writer keeps the retention (INOTIFIER_EVENT_LOG_MAX_AGE / _MAX_ROWS).
    prune: bool = True
    max_age: float = 7 * 24 * 3600.0
    max_rows: int = 100_000

    #: Rows per transaction (split into statements as the backend's parameter limit needs).
    batch_size: int = 2000
    #: Rows deleted per DELETE when pruning: no statement holds locks for long.
    prune_batch: int = 1000
    #: Seconds between two retention passes; the first one soon after start.
    prune_interval: float = 60.0
    first_prune_delay: float = 1.0
    #: Longest stretch of pruning per cycle; an unfinished pass goes on at the next one.
    prune_budget: float = 0.25
    #: The row limit is kept by each write: one that takes the table beyond it by more than
    #: this fraction of it deletes the oldest rows beyond it, in the same transaction.
    trim_slack: float = 0.02
    #: Most rows one write deletes beyond the rows it inserts (the budgeted pass takes more).
    trim_backlog: int = 10_000
    #: Seconds between two exact counts of the table (all hosts' rows) while rows are written.
    recount_interval: float = 10.0
    #: Longest stretch of writing per cycle before drops are reported and pruning considered.
    drain_slice: float = 1.0
    #: Seconds the writer keeps trying to write what it holds when the daemon stops
    #: (below the 10 s after which ``inotifier_stop`` sends SIGKILL).
    final_flush_seconds: float = 8.0
    #: Seconds without rows after which the writer closes its database connection.
    idle_close_seconds: float = 10.0
    #: Longest wait between two tries while the database is down (``dbguard.Backoff``).
    retry_cap: float = 5.0

    #: The writer process: how it is run and what it needs to set Django up.
    process: bool = True
    executable: str = sys.executable
    nice: int = 10
    log_level: int = logging.INFO
    database: dict[str, Any] = field(default_factory=dict)
    django_settings: dict[str, Any] = field(default_factory=dict)
    sys_path: tuple[str, ...] = ()
    #: Rows per frame sent to the writer process.
    frame_rows: int = 4000
    #: The process is replaced this long after it ended (doubled while it keeps failing).
    restart_delay: float = 1.0
    max_restart_delay: float = 60.0
    #: Processes in a row that end without confirming a row, after which the daemon
    #: writes from its own thread instead.
    fallback_after: int = 3
    #: Seconds between two warnings about dropped rows while rows keep being dropped.
    drop_report_interval: float = 5.0

    @classmethod
    def from_settings(cls, host: str, using: str = DEFAULT_DB_ALIAS, **overrides: Any) -> StoreConfig:
        """Return the configuration the settings give (``overrides`` win); ImproperlyConfigured if bad."""
        connection = connections[using]
        # No other process can open an in-memory SQLite database.
        in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()  # type: ignore[attr-defined]
        interval = float(app_settings.INOTIFIER_EVENT_LOG_FLUSH_INTERVAL or 0.25)
        limit = app_settings.INOTIFIER_EVENT_LOG_MAX_ROWS
        values: dict[str, Any] = {
            "host": host[:255],
            "using": using,
            # A floor, so a zero or negative setting cannot make the writer spin.
            "interval": max(0.01, interval),
            "max_age": float(app_settings.INOTIFIER_EVENT_LOG_MAX_AGE or 0),
            "max_rows": positive_setting("INOTIFIER_EVENT_LOG_MAX_ROWS", limit) if limit else 0,
            "process": not in_memory,
            "nice": int(app_settings.INOTIFIER_EVENT_LOG_NICE or 0),
            "log_level": logging.getLogger("inotifier").getEffectiveLevel(),
            "database": dict(connection.settings_dict),
            "django_settings": {"USE_TZ": settings.USE_TZ, "TIME_ZONE": settings.TIME_ZONE},
            "sys_path": tuple(sys.path),
        }
        values.update(overrides)
        if not values.get("prune", True):
            values["max_rows"] = 0
        return cls(**values)

    def replace(self, **changes: Any) -> StoreConfig:
        """Return a copy with ``changes``."""
        return dataclasses.replace(self, **changes)
