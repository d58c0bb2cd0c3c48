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

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import SetupContext, SetupResult, Skip, StreamContext, TaskContext
from bench.contenders import setup, stream, task

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "inotifier_bench_stream"
SIGNALER = "inotifier.event_processors.AllEventsSignaler"


def _configure(watch_paths: list[Any], database_url: str | None, **extra: Any) -> None:
    """Configure Django in this (contender) process with the inotifier app."""
    import django
    import environ
    from django.conf import settings

    databases = {}
    if database_url:
        databases = {"default": environ.Env.db_url_config(database_url)}
        if databases["default"]["ENGINE"].endswith("sqlite3"):
            databases["default"].setdefault("OPTIONS", {})["timeout"] = 30
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "inotifier"],
        DATABASES=databases,
        LOGGING_CONFIG=None,
        INOTIFIER_WATCH_PATHS=watch_paths,
        **extra,
    )
    django.setup()
    if database_url and databases["default"]["ENGINE"].endswith("sqlite3"):
        from django.db.backends.signals import connection_created

        def wal(sender: Any, connection: Any, **kwargs: Any) -> None:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")

        connection_created.connect(wal, weak=False)
    if database_url:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def _fresh_postgres(dsn: str, name: str) -> str:
    """(Re)create database ``name`` on the server of ``dsn``; return its URL."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover
        raise Skip("psycopg is not installed") from exc
    base, _sep, _db = dsn.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        raise Skip(f"PostgreSQL not reachable at {base}: {exc}") from exc
    return f"{base}/{name}"


def _run_stream(ctx: StreamContext, database_url: str | None, event_log: bool) -> None:
    """Run the daemon's loop in this process with one receiver on every signal."""
    _configure(
        [(ctx.path, ctx.mask, SIGNALER, {"event_log": event_log})],
        database_url,
        INOTIFIER_EVENT_LOG=event_log,
        INOTIFIER_EVENT_LOG_BUFFER=1_000_000,
    )
    from inotifier import signals
    from inotifier.daemon.runner import Daemon

    rec = ctx.rec
    hit = rec.hit
    first: list[int] = []

    def receiver(sender: Any, event: Any, **kwargs: Any) -> None:
        mask = event.mask
        if mask & 0x4000:  # IN_Q_OVERFLOW
            rec.overflow()
        elif mask & 0x40000000:  # IN_ISDIR: the harness's end sentinel
            rec.sentinel()
        else:
            if not first:
                first.append(time.monotonic_ns())
            hit(event.name)

    for sig in signals.SIGNALS.values():
        sig.connect(receiver, weak=False)
    # The loop the daemon runs (inotifier_start --foreground) minus the pid file;
    # use_database only when the event log needs it.
    daemon = Daemon(install_signal_handlers=False, use_database=False).start()

    if event_log:
        writer = daemon.event_log
        assert writer is not None

        def rows_done() -> None:
            # Every row accepted is in the table: the writer counts what it committed.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not writer.buffer.pending and writer.buffer.tally.written >= rec.report()["received"]:
                    break
                time.sleep(0.002)
            done = time.monotonic_ns()
            rec.extras["rows_written"] = float(writer.buffer.tally.written)
            rec.extras["rows_dropped"] = float(writer.buffer.dropped)
            rec.extras["rows_complete_at_ns"] = float(done)
            if first:
                rec.extras["rows_per_s"] = writer.buffer.tally.written / max((done - first[0]) / 1e9, 1e-9)

        ctx.at_finish(rows_done)
    ctx.ready()
    while not rec.finished:
        daemon.tick(timeout=0.1)
    while True:  # keep the writer thread going until the harness ends the process
        daemon.tick(timeout=0.1)


@stream("project", "django-inotifier daemon, one signal receiver", project=True)
def project_signals(ctx: StreamContext) -> None:
    """Targets 1, 2, 7: the daemon sending one signal per event, log off."""
    _run_stream(ctx, None, event_log=False)


@stream("project-log-sqlite", "django-inotifier, event log on (SQLite WAL)", cost="db", project=True)
def project_log_sqlite(ctx: StreamContext) -> None:
    """Target 3: as ``project`` with the event log on SQLite (WAL).

    Put ``rows_per_s`` and ``rows_complete_at_ns`` (when the last row of the
    burst was visible in the table) in ``ctx.rec.extras``."""
    path = os.path.join(ctx.workdir, f"project-{os.getpid()}.sqlite3")
    _run_stream(ctx, f"sqlite:///{path}", event_log=True)


@stream("project-log-postgres", "django-inotifier, event log on (PostgreSQL)", cost="db", project=True)
def project_log_postgres(ctx: StreamContext) -> None:
    """Target 3: as ``project-log-sqlite`` on PostgreSQL (DSN from
    ``ctx.options``, e.g. ``--opt pg_dsn=...``)."""
    dsn = ctx.options.get("pg_dsn", PG_SERVER)
    url = _fresh_postgres(dsn, f"{PG_BENCH_DB}_{os.getpid()}")
    _run_stream(ctx, url, event_log=True)


@setup("project", "django-inotifier recursive WatchPath", project=True)
def project_setup(ctx: SetupContext) -> SetupResult:
    """Target 6: recursive setup of ``ctx.root``."""
    _configure([(ctx.root, ctx.mask, SIGNALER, {"recursive": True, "auto_add": True})], None)
    from inotifier.daemon.runner import Daemon

    ctx.begin()
    daemon = Daemon(install_signal_handlers=False, use_database=False).start()
    return SetupResult(keep=daemon)


# -- tasks with the real daemon process ------------------------------------------------

_RECEIVER_APP = """
import os, time
from django.apps import AppConfig

class BenchReceiverConfig(AppConfig):
    name = "bench_receiver"

    def ready(self):
        from inotifier import signals
        out = open(os.environ["BENCH_RECORD"], "a", buffering=1)

        def receiver(sender, event, **kwargs):
            out.write(f"{time.monotonic_ns()} {event.pathname}\\n")

        signals.in_create.connect(receiver, weak=False)
"""

_SETTINGS = """
import environ
env = environ.Env()
SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "inotifier",
                  "bench_receiver.apps.BenchReceiverConfig"]
DATABASES = {"default": env.db("DATABASE_URL")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {"timeout": 30}
INOTIFIER_PID_FILE = env("INOTIFIER_PID_FILE")
INOTIFIER_POLL_INTERVAL = env.float("INOTIFIER_POLL_INTERVAL")
INOTIFIER_DAEMON_STDERR = env("INOTIFIER_DAEMON_STDERR")
LOGGING_CONFIG = None
"""


class _RealDaemon:
    """The daemon as users run it (``manage.py inotifier_start``) against a scratch project."""

    def __init__(self, ctx: TaskContext, poll_interval: float) -> None:
        self.dir = tempfile.mkdtemp(prefix="inotifier-bench-project-", dir=ctx.workdir)
        os.makedirs(os.path.join(self.dir, "bench_receiver"))
        with open(os.path.join(self.dir, "bench_receiver", "__init__.py"), "w"):
            pass
        with open(os.path.join(self.dir, "bench_receiver", "apps.py"), "w") as fh:
            fh.write(_RECEIVER_APP.replace("\\\\n", "\\n"))
        with open(os.path.join(self.dir, "bench_project_settings.py"), "w") as fh:
            fh.write(_SETTINGS)
        self.record = os.path.join(ctx.shm, f"record-{os.getpid()}.txt")
        open(self.record, "w").close()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([self.dir, REPO]),
            "DJANGO_SETTINGS_MODULE": "bench_project_settings",
            "DATABASE_URL": f"sqlite:///{os.path.join(self.dir, 'db.sqlite3')}",
            "INOTIFIER_PID_FILE": os.path.join(self.dir, "inotifier.pid"),
            "INOTIFIER_POLL_INTERVAL": str(poll_interval),
            "INOTIFIER_DAEMON_STDERR": os.path.join(self.dir, "daemon.err"),
            "BENCH_RECORD": self.record,
        }
        self.manage("migrate", "-v0")
        os.environ.update({k: v for k, v in self.env.items() if k != "PYTHONPATH"})
        sys.path[:0] = [self.dir, REPO]
        import django

        django.setup()

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args}: {result.stderr[-2000:]}")
        return result

    def pid(self) -> int:
        with open(self.env["INOTIFIER_PID_FILE"]) as fh:
            return int(fh.read())

    def delivered(self, directory: str) -> int | None:
        """Return the monotonic ns of the first event recorded under ``directory``."""
        with open(self.record) as fh:
            for line in fh:
                stamp, _sp, path = line.rstrip("\n").partition(" ")
                if path.startswith(directory + "/"):
                    return int(stamp)
        return None

    def probe(self, directory: str, started_ns: int, timeout: float = 10.0) -> float:
        """Create files in ``directory`` every 0.5 ms until one is delivered; return ms."""
        i = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            open(os.path.join(directory, f"p{i}"), "w").close()
            i += 1
            seen = self.delivered(directory)
            if seen is not None:
                return max(0.0, (seen - started_ns) / 1e6)
            time.sleep(0.0005)
        raise RuntimeError(f"no event from {directory} within {timeout} s")


@task("reload", "project", "django-inotifier reload")
def project_reload(ctx: TaskContext) -> dict[str, float]:
    """Target 4.  Return ``sighup_p95_ms`` and ``command_p95_ms`` (SIGHUP /
    ``inotifier_reload`` until the new watch delivers events), and
    ``row_change_ms`` with ``poll_interval_ms`` (a WatchPath row changed
    with no command)."""
    rounds = 5 if ctx.quick else 20
    # A long poll interval first, so only the SIGHUP / the command can be what reconciles.
    real = _RealDaemon(ctx, poll_interval=3600)
    from inotifier.models import WatchPath

    real.manage("inotifier_start")
    try:
        sighup, command, command_total = [], [], []
        for i in range(rounds):
            for kind, out in (("sighup", sighup), ("command", command)):
                d = os.path.join(ctx.shm, f"{kind}{i}")
                os.mkdir(d)
                WatchPath.objects.create(path=d, mask=0x100, processor=SIGNALER)
                if kind == "sighup":
                    t0 = time.monotonic_ns()
                    os.kill(real.pid(), signal.SIGHUP)
                    out.append(real.probe(d, t0))
                else:
                    t0 = time.monotonic_ns()
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "django", "inotifier_reload"],
                        env=real.env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    proc.wait(60)
                    t_exit = time.monotonic_ns()
                    seen = real.probe(d, t0)
                    command_total.append(seen)
                    out.append(max(0.0, seen - (t_exit - t0) / 1e6))
    finally:
        real.manage("inotifier_stop")
    # Then the default poll interval and no command at all.
    poll = 2.0
    real2_env = dict(real.env, INOTIFIER_POLL_INTERVAL=str(poll))
    real.env = real2_env
    real.manage("inotifier_start")
    try:
        row_change = []
        for i in range(3 if ctx.quick else 5):
            d = os.path.join(ctx.shm, f"row{i}")
            os.mkdir(d)
            t0 = time.monotonic_ns()
            WatchPath.objects.create(path=d, mask=0x100, processor=SIGNALER)
            row_change.append(real.probe(d, t0, timeout=poll * 3))
    finally:
        real.manage("inotifier_stop")

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]

    return {
        "sighup_p95_ms": p95(sighup),
        "sighup_p50_ms": statistics.median(sighup),
        # From the command's exit (it has sent SIGHUP by then) to the first event.
        "command_p95_ms": p95(command),
        # Including the command's own Python + Django start-up.
        "command_total_p95_ms": p95(command_total),
        "row_change_ms": max(row_change),
        "poll_interval_ms": poll * 1000,
    }


@task("reconcile", "project", "django-inotifier reconcile, 10 000 WatchPath rows")
def project_reconcile(ctx: TaskContext) -> dict[str, float]:
    """Target 5.  Return ``reconcile_ms`` and ``watches_touched`` for one
    changed row out of 10 000."""
    rows = 2000 if ctx.quick else 10_000
    db = os.path.join(ctx.workdir, f"reconcile-{os.getpid()}.sqlite3")
    _configure([], f"sqlite:///{db}")
    from inotifier.daemon.runner import Daemon
    from inotifier.models import WatchPath

    base = os.path.join(ctx.shm, "reconcile")
    for i in range(rows):
        os.makedirs(os.path.join(base, f"d{i}"), exist_ok=True)
    WatchPath.objects.bulk_create(
        [WatchPath(path=os.path.join(base, f"d{i}"), mask=0x100, processor=SIGNALER) for i in range(rows)],
        batch_size=1000,
    )
    daemon = Daemon(install_signal_handlers=False, hostname="bench").start()
    times, touched = [], []
    for i in range(5):
        row = WatchPath.objects.get(path=os.path.join(base, f"d{i * 7}"))
        row.mask = 0x100 | 0x200 if row.mask == 0x100 else 0x100
        row.save()
        started = time.perf_counter()
        plan = daemon.reconcile()
        times.append((time.perf_counter() - started) * 1000)
        touched.append(plan.touched)
    daemon.close()
    return {
        "reconcile_ms": statistics.median(times),
        "reconcile_max_ms": max(times),
        "watches_touched": float(max(touched)),
        "rows": float(rows),
    }


@task("sustained", "project", "django-inotifier loop, event log on vs off, 100 000 events per cycle")
def project_sustained(ctx: TaskContext) -> dict[str, float]:
    """Target 3a, sustained (see ``bench/sustained.py``): ``sqlite_ratio`` and
    ``postgres_ratio``, the loop's rate with the event log on over its rate
    with it off, both in the same process, the writer busy meanwhile."""
    files, cycles = (5000, 6) if ctx.quick else (25_000, 12)
    out: dict[str, float] = {}
    pg = ctx.options.get("pg_dsn", PG_SERVER)
    for label in ("sqlite", "postgres"):
        code = (
            "import json, os; from bench import sustained as s; "
            f"r = s.run({label!r}, files={files}, cycles={cycles}, pg_url={pg!r}); "
            "print('RESULT ' + json.dumps(r), flush=True); os._exit(0)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=REPO
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        if result.returncode != 0 or not lines:
            if label == "postgres" and "not reachable" in result.stderr:
                raise Skip(f"PostgreSQL not reachable at {pg}")
            raise RuntimeError(f"sustained benchmark on {label} failed: {result.stderr[-1500:]}")
        figures = json.loads(lines[-1][7:])
        out[f"{label}_ratio"] = figures["ratio"]
        out[f"{label}_on_rate"] = figures["on_rate"]
        out[f"{label}_off_rate"] = figures["off_rate"]
    return out


@task("admin", "project", "admin event-log changelist, 1 000 000 rows")
def project_admin(ctx: TaskContext) -> dict[str, float]:
    """Target 8.  Return ``sqlite_ms`` and ``postgres_ms``: median server
    time of the changelist over 1 000 000 rows."""
    from bench import admin_eventlog

    rows = 100_000 if ctx.quick else 1_000_000
    out: dict[str, float] = {}
    pg = ctx.options.get("pg_dsn", PG_SERVER)
    for label in ("sqlite", "postgres"):
        if label == "sqlite":
            url = f"sqlite:///{os.path.join(ctx.workdir, f'admin-{os.getpid()}.sqlite3')}"
        else:
            try:
                url = admin_eventlog.prepare_postgres(pg)
            except Exception as exc:  # no server: report the SQLite figure alone
                raise Skip(f"PostgreSQL not reachable at {pg}: {exc}") from exc
        code = (
            "import json, sys; from bench import admin_eventlog as a; "
            f"r = a.run({url!r}, rows={rows}, runs=5); print('RESULT ' + json.dumps(r))"
        )
        try:
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, cwd=REPO
            )
        finally:
            if label == "postgres":
                admin_eventlog.drop_postgres(pg)
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"admin benchmark on {label} failed: {result.stderr[-1500:]}")
        out[f"{label}_ms"] = float(json.loads(lines[-1][7:])["median_ms"])
    return out
