"""Every ``INOTIFIER_*`` setting with its default, read lazily from Django settings."""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

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
    # Seconds an exclusive watch's lease lasts without a renewal: how long a lost holder
    # (kill -9, a host gone) keeps others from taking over. Renewed every third of it.
    "INOTIFIER_LEASE_TIMEOUT": 30.0,
    # The DATABASES alias LISTENed on for instant reloads (PostgreSQL; None: the one the
    # watches are read from; False: none, the poll alone). Never through a pooler in
    # transaction mode: it drops LISTEN.
    "INOTIFIER_LISTEN_DATABASE": None,
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
    # Paths one settled watch may hold (about 410 bytes each): beyond it the paths that changed
    # least recently are delivered early, before they are quiet (a WARNING says so), never dropped.
    "INOTIFIER_SETTLE_MAX_PATHS": 1_000_000,
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
    # TCP port the daemon serves Prometheus metrics on (None: not served; 0: any free port, logged).
    "INOTIFIER_METRICS_PORT": None,
    # Address that port is bound to: loopback unless the scraper runs elsewhere.
    "INOTIFIER_METRICS_ADDRESS": "127.0.0.1",
    # File the daemon writes its metrics to for node_exporter's textfile collector (None: none).
    "INOTIFIER_METRICS_TEXTFILE": None,
    # Let anyone read the health view (it then shows no pid, counter or message; never paths).
    "INOTIFIER_HEALTH_PUBLIC": False,
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


@dataclass(frozen=True)
class MetricsConfig:
    """Where the daemon publishes its metrics: an HTTP port, a textfile, both or neither."""

    port: int | None = None
    address: str = "127.0.0.1"
    textfile: str | None = None

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.textfile is not None

    @classmethod
    def from_settings(cls) -> MetricsConfig:
        """Return the metrics settings; raise ImproperlyConfigured naming the culprit."""
        problems = metrics_problems()
        if problems:
            raise ImproperlyConfigured(problems[0])
        return cls(
            app_settings.INOTIFIER_METRICS_PORT,
            app_settings.INOTIFIER_METRICS_ADDRESS,
            app_settings.INOTIFIER_METRICS_TEXTFILE,
        )


def metrics_problems() -> list[str]:
    """Return what is wrong with the INOTIFIER_METRICS_* settings, one sentence each."""
    port = app_settings.INOTIFIER_METRICS_PORT
    address = app_settings.INOTIFIER_METRICS_ADDRESS
    textfile = app_settings.INOTIFIER_METRICS_TEXTFILE
    problems = []
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        problems.append(f"INOTIFIER_METRICS_PORT must be a port number (0-65535) or None, not {port!r}")
    if not isinstance(address, str) or not address:
        problems.append(f"INOTIFIER_METRICS_ADDRESS must be a host name or IP address, not {address!r}")
    if textfile is not None and (
        not isinstance(textfile, str) or not os.path.isabs(textfile) or not textfile.endswith(".prom")
    ):
        problems.append(
            "INOTIFIER_METRICS_TEXTFILE must be an absolute path ending in .prom (the only files "
            f"node_exporter's textfile collector reads), not {textfile!r}"
        )
    if (port is not None or textfile is not None) and importlib.util.find_spec("prometheus_client") is None:
        problems.append(
            "the INOTIFIER_METRICS_* settings need prometheus_client, which is not installed: "
            "pip install 'django-inotifier[metrics]'"
        )
    return problems
