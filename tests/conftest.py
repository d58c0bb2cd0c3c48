"""Fixtures: temporary watched folders, the real daemon as a subprocess, and event records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Return the first truthy value of ``predicate()``; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Return True while ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][0] != "Z"


@pytest.fixture
def watch_dir() -> Iterator[Path]:
    """A fresh directory to watch (on tmpfs when there is one, it is faster)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="inotifier-test-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Record:
    """The events a daemon's test receivers appended to a file: (signal, pathname, maskname).

    Each line also carries the wall-clock time the receiver ran (``timed()``).
    """

    def __init__(self, path: Path):
        self.path = path
        path.touch()

    def _lines(self) -> list[list[str]]:
        text = self.path.read_text()
        # The daemon may be writing the last line right now: only whole lines count.
        return [line.split("\t") for line in text[: text.rfind("\n") + 1].splitlines()]

    def events(self) -> list[tuple[str, str, str]]:
        return [
            (name, os.fsdecode(bytes.fromhex(hexpath)), mask) for name, hexpath, mask, *_t in self._lines()
        ]

    def timed(self) -> list[tuple[float, str]]:
        """Return (time.time() when received, pathname) of every event."""
        return [(float(t), os.fsdecode(bytes.fromhex(hexpath))) for _n, hexpath, _m, t in self._lines()]

    def paths(self, signal_name: str | None = None) -> list[str]:
        return [p for n, p, _m in self.events() if signal_name is None or n == signal_name]

    def wait_path(self, path: str | Path, signal_name: str | None = None, timeout: float = 10.0) -> None:
        wait_for(lambda: str(path) in self.paths(signal_name), timeout)

    def clear(self) -> None:
        self.path.write_text("")


def database_url() -> str:
    """Return a DATABASE_URL for the test database (for daemons in other processes)."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{s['NAME']}"


class DaemonProcess:
    """Run ``manage.py inotifier_*`` commands against the test settings, as real processes."""

    def __init__(self, tmp: Path, record: Record, db_url: str | None):
        self.tmp = tmp
        self.record = record
        self.pid_file = tmp / "inotifier.pid"
        self.stdout_file = tmp / "daemon.out"
        self.stderr_file = tmp / "daemon.err"
        self.watch_paths: list[Any] = []
        self.env_extra: dict[str, str] = {}
        self.db_url = db_url
        self.foreground: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INOTIFIER_", "PYTEST_", "NOTIFY_SOCKET"))
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "PYTHONPATH": str(ROOT),
                "INOTIFIER_PID_FILE": str(self.pid_file),
                "INOTIFIER_DAEMON_STDOUT": str(self.stdout_file),
                "INOTIFIER_DAEMON_STDERR": str(self.stderr_file),
                "INOTIFIER_TEST_RECORD": str(self.record.path),
                "INOTIFIER_WATCH_PATHS": json.dumps(self.watch_paths),
                "INOTIFIER_POLL_INTERVAL": "0.5",
            }
        )
        if self.db_url:
            env["DATABASE_URL"] = self.db_url
        env.update(self.env_extra)
        return env

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=self.env(),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> int:
        result = self.manage("inotifier_start")
        assert result.returncode == 0, (result.stdout, result.stderr, self.stderr_text())
        assert "File monitoring started (pid" in result.stdout
        return self.pid()

    def start_foreground(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "inotifier_start", "--foreground"],
            env=self.env(),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.foreground = proc
        # Ready once it has recorded itself as running: that is written after the
        # first reconcile, when every watch is in place.
        from inotifier.models import DaemonStatus

        wait_for(
            lambda: (
                proc.poll() is not None or DaemonStatus.objects.filter(pid=proc.pid, running=True).exists()
            ),
            30,
        )
        assert proc.poll() is None, proc.communicate()
        return proc

    def pid(self) -> int | None:
        from inotifier.daemon.pidfile import running_pid

        return running_pid(str(self.pid_file))

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.manage("inotifier_stop")

    def signal(self, signum: int) -> None:
        pid = self.pid()
        assert pid, "no daemon runs"
        os.kill(pid, signum)

    def stderr_text(self) -> str:
        try:
            return self.stderr_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.foreground is not None and self.foreground.poll() is None:
            self.foreground.kill()
            self.foreground.communicate()


class PyinotifyRun:
    """pyinotify's own WatchManager + Notifier on a path: the reference the daemon is compared with."""

    def __init__(self, path: Path, mask: int, processor: Any, rec: bool = False) -> None:
        import pyinotify

        self.wm = pyinotify.WatchManager()
        self.notifier = pyinotify.Notifier(self.wm, processor, timeout=50)
        self.wm.add_watch(str(path), mask, rec=rec, auto_add=rec)

    def pump(self, until: Callable[[], Any], timeout: float = 5) -> None:
        """Read and process events until ``until()`` is truthy."""

        def step() -> Any:
            if self.notifier.check_events(timeout=20):
                self.notifier.read_events()
                self.notifier.process_events()
            return until()

        wait_for(step, timeout, interval=0)

    def close(self) -> None:
        self.notifier.stop()


def pump(daemon: Any, until: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Tick an in-process daemon until ``until()`` is truthy; return that value."""

    def step() -> Any:
        daemon.tick(timeout=0.02)
        return until()

    return wait_for(step, timeout, interval=0)


@pytest.fixture
def table() -> Iterator[Any]:
    """A kernel table on an inotify instance of its own, closed at the end (no daemon around it)."""
    from inotifier.daemon.kernel import Inotify
    from inotifier.daemon.table import WatchTable

    inotify = Inotify()
    yield WatchTable(inotify)
    inotify.close()


@pytest.fixture
def in_process(db: Any) -> Iterator[Callable[..., Any]]:
    """Start daemons in this process on real inotify, driven by ``tick()``; closed at the end.

    ``in_process(entries, use_database=False, hostname="testhost", **settings)``
    starts one with ``INOTIFIER_WATCH_PATHS = entries`` (and any other setting
    given) in force while it starts; for settings that must hold for the whole
    test, use pytest-django's ``settings`` fixture instead.
    """
    from django.test import override_settings

    from inotifier.daemon.runner import Daemon as InProcessDaemon

    started: list[InProcessDaemon] = []

    def start(
        entries: Any = (), *, use_database: bool = False, hostname: str = "testhost", **settings: Any
    ) -> InProcessDaemon:
        overrides = {"INOTIFIER_WATCH_PATHS": list(entries), **settings}
        with override_settings(**overrides):
            daemon = InProcessDaemon(
                install_signal_handlers=False, hostname=hostname, use_database=use_database
            )
            started.append(daemon)
            return daemon.start()

    yield start
    for daemon in started:
        daemon.close()


@pytest.fixture
def record(tmp_path: Path) -> Record:
    return Record(tmp_path / "record.tsv")


@pytest.fixture
def daemon(transactional_db: Any, tmp_path: Path, record: Record) -> Iterator[DaemonProcess]:
    """A daemon runner that shares the test database (rows are committed, so it sees them)."""
    d = DaemonProcess(tmp_path, record, database_url())
    yield d
    d.cleanup()
    # Shown by pytest only when the test failed: the daemon's own account.
    print("---- daemon stderr ----")
    print(d.stderr_text())


@pytest.fixture
def fleet(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Make daemons of several hosts sharing the test database: ``fleet("files-1", VAR=value)``.

    Each has its own ``INOTIFIER_HOSTNAME``, pid file, output files and record
    of events (``daemon.record``); every one is killed at the end.
    """
    made: list[DaemonProcess] = []

    def make(host: str, **env: str) -> DaemonProcess:
        home = tmp_path / host
        home.mkdir()
        d = DaemonProcess(home, Record(home / "record.tsv"), database_url())
        d.env_extra.update({"INOTIFIER_HOSTNAME": host, **env})
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()
    for d in made:
        print(f"---- daemon stderr of {d.env_extra['INOTIFIER_HOSTNAME']} ----")
        print(d.stderr_text())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs the real daemon as a process (``make test-fast`` leaves them out)."""
    for item in items:
        if {"daemon", "fleet"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.daemon)
