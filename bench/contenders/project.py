"""Slots for *this project* (django-inotifier) in the benchmark.

Fill in the functions below; everything else (subprocess, handshake, runs,
statistics, ratios against the baselines of the same run, target checks) is
done by the harness.  A function that raises ``NotImplementedError`` (or
``bench.common.Skip``) is listed as *skipped* with its message.

Stream contenders -- ``def f(ctx: StreamContext) -> None``
    Used by the drain, burst and latency scenarios.  Configure Django (e.g.
    ``bench.contenders.django_env.configure`` or your own
    ``settings.configure``), connect ONE receiver to the project's signal and
    start the daemon watching ``ctx.path`` (non-recursive) for ``ctx.mask``
    (IN_CREATE|IN_OPEN|IN_MODIFY|IN_CLOSE_WRITE).  Then:

    * call ``ctx.ready(pid)`` once the kernel watch exists (``pid``: the
      process that reads the inotify fd, default this one);
    * in the receiver, per file event: ``ctx.rec.hit(name)`` (``name``: the
      base name; needed in latency mode), or ``ctx.rec.hit_many(n)`` for a
      batch outside latency mode;
    * a directory event (IN_ISDIR) is the harness's end sentinel:
      ``ctx.rec.sentinel()``; an IN_Q_OVERFLOW: ``ctx.rec.overflow()``;
    * block (run the daemon loop); the process is ended for you once
      ``ctx.rec.finished`` is true, or return when it is.
    * Figures of your own go to ``ctx.rec.extras`` (``{str: float}``), e.g.
      from a callback registered with ``ctx.at_finish(cb)``, which runs just
      before the report.  Keys ending in ``_at_ns`` are absolute
      ``time.monotonic_ns()`` instants; in the burst scenario the harness
      shows them as seconds after the writer's end (``..._after_end_s``).
      Target 3 reads ``rows_per_s`` and ``rows_complete_at_ns``.
    * ``ctx.workdir`` is a scratch directory on disk (SQLite file);
      ``ctx.options`` holds ``--opt KEY=VALUE`` pairs (e.g. a PostgreSQL DSN).

Setup contender -- ``def f(ctx: SetupContext) -> SetupResult``
    Watch every directory under ``ctx.root`` recursively.  Call
    ``ctx.begin()`` just before the timed part and return
    ``SetupResult(keep=<object keeping the watches alive>)``.  The harness
    takes time and VmRSS around it and counts the kernel watches of the
    process in /proc/<pid>/fdinfo.

Tasks -- ``def f(ctx: TaskContext) -> dict[str, float]``
    One measurement run of a project-only scenario; return the metrics named
    in the docstring (the target checks read them).  ``ctx.workdir`` is on
    disk, ``ctx.shm`` on tmpfs, ``ctx.quick`` asks for a small version.
"""

from __future__ import annotations

from bench.common import SetupContext, SetupResult, StreamContext, TaskContext
from bench.contenders import setup, stream, task

_TODO = "not implemented yet: fill in bench/contenders/project.py"


@stream("project", "django-inotifier daemon, one signal receiver", project=True)
def project_signals(ctx: StreamContext) -> None:
    """Targets 1, 2, 7: the daemon sending one signal per event, log off."""
    raise NotImplementedError(_TODO)


@stream(
    "project-log-sqlite", "django-inotifier, event log on (SQLite WAL)", cost="db", project=True
)
def project_log_sqlite(ctx: StreamContext) -> None:
    """Target 3: as ``project`` with the event log on SQLite (WAL).

    Put ``rows_per_s`` and ``rows_complete_at_ns`` (when the last row of the
    burst was visible in the table) in ``ctx.rec.extras``."""
    raise NotImplementedError(_TODO)


@stream(
    "project-log-postgres", "django-inotifier, event log on (PostgreSQL)", cost="db", project=True
)
def project_log_postgres(ctx: StreamContext) -> None:
    """Target 3: as ``project-log-sqlite`` on PostgreSQL (DSN from
    ``ctx.options``, e.g. ``--opt pg_dsn=...``)."""
    raise NotImplementedError(_TODO)


@setup("project", "django-inotifier recursive WatchPath", project=True)
def project_setup(ctx: SetupContext) -> SetupResult:
    """Target 6: recursive setup of ``ctx.root``."""
    raise NotImplementedError(_TODO)


@task("reload", "project", "django-inotifier reload")
def project_reload(ctx: TaskContext) -> dict[str, float]:
    """Target 4.  Return ``sighup_p95_ms`` and ``command_p95_ms`` (SIGHUP /
    ``inotifier_reload`` until the new watch delivers events), and
    ``row_change_ms`` with ``poll_interval_ms`` (a WatchPath row changed
    with no command)."""
    raise NotImplementedError(_TODO)


@task("reconcile", "project", "django-inotifier reconcile, 10 000 WatchPath rows")
def project_reconcile(ctx: TaskContext) -> dict[str, float]:
    """Target 5.  Return ``reconcile_ms`` and ``watches_touched`` for one
    changed row out of 10 000."""
    raise NotImplementedError(_TODO)


@task("admin", "project", "admin event-log changelist, 1 000 000 rows")
def project_admin(ctx: TaskContext) -> dict[str, float]:
    """Target 8.  Return ``sqlite_ms`` and ``postgres_ms``: median server
    time of the changelist over 1 000 000 rows."""
    raise NotImplementedError(_TODO)
