"""Every ``INOTIFIER_*`` setting with its default, read lazily from Django settings."""

from __future__ import annotations

import socket
from typing import Any

from django.conf import settings as django_settings

#: Every setting the app reads, with its default. The docs' settings reference
#: (docs/settings.md) lists the same names; a test keeps the two in step.
DEFAULTS: dict[str, Any] = {
    # Iterable of (path, mask, "dotted.path.Processor") tuples.
    "INOTIFIER_WATCH_PATHS": (),
    # Files the daemon's stdout / stderr are appended to (None: /dev/null).
    "INOTIFIER_DAEMON_STDOUT": None,
    "INOTIFIER_DAEMON_STDERR": None,
    # Pid file; None means PROJECT_PATH/inotifier.pid, else /tmp/inotifier.pid.
    "INOTIFIER_PID_FILE": None,
    # Name this daemon answers to for WatchPath.host (None: socket.gethostname()).
    "INOTIFIER_HOSTNAME": None,
    # Seconds between two polls of the config version counter.
    "INOTIFIER_POLL_INTERVAL": 2.0,
    # Seconds between two forced full resyncs (safety net for raw SQL changes).
    "INOTIFIER_RESYNC_INTERVAL": 300.0,
    # Allowlist of processors an admin may pick (None: built-ins + settings ones).
    "INOTIFIER_PROCESSORS": None,
    # Directories watches from the admin must live under (None: anywhere).
    "INOTIFIER_ALLOWED_ROOTS": None,
    # Suffix of the temporary name used by CreateViaChunksSignaler.
    "INOTIFIER_CHUNK_SUFFIX": ".part",
    # Seconds after which a half-done chunked upload is forgotten.
    "INOTIFIER_CHUNK_TIMEOUT": 3600.0,
    # Events held in the daemon's own memory between the kernel and the processors.
    "INOTIFIER_QUEUE_SIZE": 2_000_000,
    # Record events in the EventLog model.
    "INOTIFIER_EVENT_LOG": False,
    # Memory (bytes, estimated) that rows waiting to be written to EventLog may take
    # before new ones are dropped (counted): about 280 000 rows of 60-character paths.
    "INOTIFIER_EVENT_LOG_BUFFER_BYTES": 64 * 1024 * 1024,
    # Optional cap on those rows in number (None: the memory bound only).
    "INOTIFIER_EVENT_LOG_BUFFER": None,
    # Seconds between two event log flushes while events flow.
    "INOTIFIER_EVENT_LOG_FLUSH_INTERVAL": 0.25,
    # Niceness added to the event log's writer process (0: the daemon's priority).
    "INOTIFIER_EVENT_LOG_NICE": 10,
    # Retention of EventLog rows: age in seconds and row count.
    "INOTIFIER_EVENT_LOG_MAX_AGE": 7 * 24 * 3600,
    "INOTIFIER_EVENT_LOG_MAX_ROWS": 100_000,
    # Outbox rows (TaskDispatcher events) the daemon holds in memory while the database
    # does not take them; beyond it the processor waits (delivery pauses), nothing is dropped.
    "INOTIFIER_OUTBOX_BUFFER": 100_000,
    # Seconds between two batch writes of the outbox while events flow.
    "INOTIFIER_OUTBOX_FLUSH_INTERVAL": 0.1,
    # Whether this daemon hands outbox rows to the task engines: None (it does when one of
    # its watches uses a TaskDispatcher), True (always: a host that only dispatches), False.
    "INOTIFIER_OUTBOX_DISPATCH": None,
    # Seconds between two looks at the outbox for rows due (others' rows, retries).
    "INOTIFIER_OUTBOX_POLL_INTERVAL": 1.0,
    # Seconds one publish (connect, send, broker confirm) may take before it counts as failed.
    "INOTIFIER_OUTBOX_PUBLISH_TIMEOUT": 10.0,
    # Attempts after which a row failing for a reason retrying cannot fix becomes a dead letter.
    "INOTIFIER_OUTBOX_MAX_ATTEMPTS": 5,
    # Longest wait (seconds) between two tries while a broker or backend is down.
    "INOTIFIER_OUTBOX_RETRY_CAP": 60.0,
    # Retention of handed-off (done) outbox rows: age in seconds and row count.
    "INOTIFIER_OUTBOX_MAX_AGE": 7 * 24 * 3600,
    "INOTIFIER_OUTBOX_MAX_ROWS": 100_000,
    # Seconds the start command waits for the daemon to report it is watching.
    "INOTIFIER_START_TIMEOUT": 120.0,
    # Seconds each query of the admin's event list may run before it is stopped (None or 0: no limit).
    "INOTIFIER_ADMIN_QUERY_TIMEOUT": 5.0,
}


class InotifierSettings:
    """Give attribute access to the ``INOTIFIER_*`` settings, read at each access.

    Reading on access (not at import) keeps ``override_settings`` working in tests.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown inotifier setting: {name}")
        return getattr(django_settings, name, DEFAULTS[name])

    @property
    def hostname(self) -> str:
        """Return the host name WatchPath.host is compared with."""
        return getattr(django_settings, "INOTIFIER_HOSTNAME", None) or socket.gethostname()

    @property
    def pid_file(self) -> str:
        """Return the pid file path: INOTIFIER_PID_FILE, PROJECT_PATH/inotifier.pid or /tmp."""
        explicit = getattr(django_settings, "INOTIFIER_PID_FILE", None)
        if explicit:
            return str(explicit)
        project_path = getattr(django_settings, "PROJECT_PATH", None)
        if project_path:
            return f"{str(project_path).rstrip('/')}/inotifier.pid"
        return "/tmp/inotifier.pid"


app_settings = InotifierSettings()
