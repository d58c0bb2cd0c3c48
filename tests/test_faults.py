"""Faults with the real daemon process: vanishing directories, overflow, limits, crashes, races."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inotifier.masks import BITS
from inotifier.models import DaemonStatus, WatchPath, WatchState

from .conftest import DaemonProcess, wait_for

pytestmark = pytest.mark.daemon

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
IN_CREATE = BITS["IN_CREATE"]


def keep_touching(daemon: DaemonProcess, directory: Path, prefix: str, timeout: float = 10) -> None:
    """Create files until the daemon reports one (the watch may not be back yet)."""
    i = 0

    def seen() -> bool:
        nonlocal i
        i += 1
        try:
            (directory / f"{prefix}{i}").touch()
        except FileNotFoundError:
            return False
        return any(p.startswith(str(directory / prefix)) for p in daemon.record.paths())

    wait_for(seen, timeout, interval=0.05)


def settings_state(key: str = "settings:0") -> WatchState | None:
    return WatchState.objects.filter(key=key).first()


def test_deleted_directory_goes_missing_and_comes_back(daemon: DaemonProcess, watch_dir: Path) -> None:
    target = watch_dir / "target"
    target.mkdir()
    other = watch_dir / "other"
    other.mkdir()
    daemon.watch_paths = [[str(target), "IN_CREATE", SIGNALER], [str(other), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    keep_touching(daemon, target, "before")
    shutil.rmtree(target)
    wait_for(lambda: (s := settings_state()) is not None and s.state == "missing", 5)
    assert "was deleted" in settings_state().message  # type: ignore[union-attr]
    keep_touching(daemon, other, "meanwhile")  # the other watch is unaffected
    target.mkdir()
    keep_touching(daemon, target, "after", timeout=5)  # within the 0.5 s poll interval
    wait_for(lambda: settings_state().state == "active", 5)  # type: ignore[union-attr]
    assert daemon.pid() == pid


def test_moved_away_and_replaced(daemon: DaemonProcess, watch_dir: Path) -> None:
    target = watch_dir / "spool"
    target.mkdir()
    daemon.watch_paths = [[str(target), "IN_CREATE", SIGNALER]]
    daemon.start()
    keep_touching(daemon, target, "one")
    moved = watch_dir / "spool.old"
    target.rename(moved)
    wait_for(lambda: (s := settings_state()) is not None and s.state == "missing", 5)
    assert "moved away" in settings_state().message  # type: ignore[union-attr]
    (moved / "in-old-place").touch()  # the old directory is no longer reported
    target.mkdir()  # another takes its name
    keep_touching(daemon, target, "two", timeout=5)
    assert str(moved / "in-old-place") not in daemon.record.paths()


def test_recursive_tree_growing_fast(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [
        [str(watch_dir), "IN_CREATE|IN_CLOSE_WRITE", SIGNALER, {"recursive": True, "auto_add": True}]
    ]
    daemon.start()
    expected = []
    for branch in range(20):
        deep = watch_dir / f"b{branch}" / "x" / "y" / "z"
        os.makedirs(deep)  # mkdir -p, files written straight away
        for level in (deep.parent.parent, deep.parent, deep):
            f = level / f"file{branch}"
            f.write_text("data")
            expected.append(str(f))
    wait_for(lambda: set(expected) <= set(daemon.record.paths("IN_CREATE")), 15)
    # Files written after the watch exists also get IN_CLOSE_WRITE.
    late = watch_dir / "b0" / "x" / "late"
    late.write_text("x")
    wait_for(lambda: str(late) in daemon.record.paths("IN_CLOSE_WRITE"), 5)


def test_queue_overflow_is_loud_counted_and_resynced(daemon: DaemonProcess, watch_dir: Path) -> None:
    max_queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER, {"recursive": True, "auto_add": True}]]
    pid = daemon.start()
    burst = watch_dir / "burst"
    burst.mkdir()
    keep_touching(daemon, burst, "ready")
    # Freeze the daemon (its reader cannot drain) and overflow the kernel queue.
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(max_queued + 2000):
            (burst / f"f{i}").touch()
        hidden = watch_dir / "made-during-overflow" / "deeper"
        hidden.mkdir(parents=True)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: "IN_Q_OVERFLOW" in [n for n, _p, _m in daemon.record.events()], 15)
    wait_for(lambda: "inotify queue overflow" in daemon.stderr_text(), 5)
    assert "WARNING" in daemon.stderr_text() or "overflow" in daemon.stderr_text()
    wait_for(lambda: DaemonStatus.objects.filter(overflows__gte=1).exists(), 10)
    # The resync watched the directory whose creation was lost in the overflow.
    keep_touching(daemon, hidden, "after-overflow", timeout=10)
    assert daemon.pid() == pid


def run_limited(daemon: DaemonProcess, limit: int, command: list[str]) -> subprocess.Popen[str]:
    """Run the daemon in a user namespace whose inotify watch limit is ``limit``."""
    script = f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$@"'
    return subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh", *command],
        env=daemon.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_out_of_kernel_watches(daemon: DaemonProcess, watch_dir: Path) -> None:
    big = watch_dir / "big"
    for i in range(10):
        (big / f"d{i}").mkdir(parents=True)
    small = watch_dir / "small"
    small.mkdir()
    daemon.watch_paths = [
        [str(small), "IN_CREATE", SIGNALER],
        [str(big), "IN_CREATE", SIGNALER, {"recursive": True}],
    ]
    proc = run_limited(daemon, 5, [sys.executable, "-m", "django", "inotifier_start", "--foreground"])
    try:
        wait_for(lambda: WatchState.objects.filter(key="settings:1").exists() or proc.poll() is not None, 30)
        assert proc.poll() is None
        big_state = WatchState.objects.get(key="settings:1")
        assert big_state.state == "error"
        assert "user.max_inotify_watches (5) is reached" in big_state.message
        assert "more needed" in big_state.message
        assert WatchState.objects.get(key="settings:0").state == "active"
        keep_touching(daemon, small, "still-works")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "out of inotify watches" in err


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_near_the_kernel_watch_limit_warns_once_per_crossing(
    daemon: DaemonProcess, watch_dir: Path, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    tree = watch_dir / "tree"
    for i in range(10):
        (tree / f"d{i}").mkdir(parents=True)
    prom = tmp_path / "inotifier.prom"
    daemon.env_extra["INOTIFIER_METRICS_TEXTFILE"] = str(prom)
    daemon.watch_paths = [[str(tree), "IN_CREATE", SIGNALER, {"recursive": True, "auto_add": True}]]
    # A limit of 20 kernel watches in a user namespace made for the test: 11 are used (55 %).
    proc = run_limited(daemon, 20, [sys.executable, "-m", "django", "inotifier_start", "--foreground"])

    def kernel_watches(n: int) -> bool:
        assert proc.poll() is None
        return DaemonStatus.objects.filter(kernel_watches=n).exists()

    try:
        wait_for(lambda: kernel_watches(11), 30)
        status = DaemonStatus.objects.get()
        assert (status.kernel_watch_limit, status.kernel_watch_limit_name) == (20, "user.max_inotify_watches")
        assert not status.near_watch_limit()
        for crossing in range(2):
            for i in range(8):  # 19 of 20: 95 %
                (tree / f"new{i}").mkdir()
            wait_for(lambda: kernel_watches(19), 15)
            assert DaemonStatus.objects.get().near_watch_limit()  # the admin's badge
            if crossing == 0:
                status_out = daemon.manage("inotifier_status").stdout
                assert (
                    "kernel watches: 19 of user.max_inotify_watches = 20 (95 %): near the limit" in status_out
                ), status_out
                families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
                limit = families["inotifier_kernel_watches_limit"].samples[0]
                assert (limit.labels["sysctl"], limit.value) == ("user.max_inotify_watches", 20)
            time.sleep(2.0)  # four polls at 95 %: one warning, not one per poll
            for i in range(8):
                (tree / f"new{i}").rmdir()
            wait_for(lambda: kernel_watches(11), 15)
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "kernel watches in use" in line]
    assert len(warnings) == 2, err  # once per crossing
    assert "19 kernel watches in use: 95 % of the limit user.max_inotify_watches = 20" in warnings[0]
    assert err.count("kernel watches back under 90 %") == 2


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_permission_denied(daemon: DaemonProcess, watch_dir: Path, tmp_path: Path) -> None:
    from django.db import connection

    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", ""],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        # e.g. pyenv's 3.12/3.13 load libpython from a 0700 directory under /root.
        pytest.skip(f"user nobody cannot run {sys.executable}: {probe.stderr.strip()[:200]}")
    locked = watch_dir / "locked"
    locked.mkdir(mode=0o700)
    tree = watch_dir / "tree"
    (tree / "private").mkdir(parents=True)
    (tree / "private").chmod(0o700)
    (tree / "public").mkdir()
    open_dir = watch_dir / "open"
    open_dir.mkdir()
    watch_dir.chmod(0o755)
    # The daemon runs as nobody: give it what it must write.
    shared = Path(os.environ.get("TMPDIR", "/dev/shm")) / f"inotifier-nobody-{os.getpid()}"
    shared.mkdir(mode=0o777, exist_ok=True)
    shared.chmod(0o777)
    daemon.pid_file = shared / "inotifier.pid"
    daemon.record.path = shared / "record.tsv"
    daemon.record.path.touch()
    daemon.record.path.chmod(0o666)
    if connection.vendor == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            db_file = Path(connection.settings_dict["NAME"] + suffix)
            if db_file.exists():
                db_file.chmod(0o666)
        Path(connection.settings_dict["NAME"]).parent.chmod(0o1777)
    daemon.watch_paths = [
        [str(locked), "IN_CREATE", SIGNALER],
        [str(tree), "IN_CREATE", SIGNALER, {"recursive": True}],
        [str(open_dir), "IN_CREATE", SIGNALER],
    ]
    env = daemon.env()
    env["INOTIFIER_DAEMON_STDERR"] = ""
    env["INOTIFIER_DAEMON_STDOUT"] = ""
    proc = subprocess.Popen(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "django",
            "inotifier_start",
            "--foreground",
        ],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: WatchState.objects.count() == 3 or proc.poll() is not None, 30)
        assert proc.poll() is None
        states = {s.key: s for s in WatchState.objects.all()}
        assert states["settings:0"].state == "error"
        assert states["settings:0"].message == (
            f"permission denied watching {str(locked)!r} (the daemon runs as uid 65534)"
        )
        assert states["settings:1"].state == "active"  # what it can read is watched
        assert "permission denied" in states["settings:1"].message
        assert states["settings:1"].kernel_watches == 2
        assert states["settings:2"].state == "active"
        keep_touching(daemon, open_dir, "works")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        shutil.rmtree(shared, ignore_errors=True)
    assert proc.returncode == 0, err


def test_raising_and_slow_processors_do_not_starve_others(daemon: DaemonProcess, watch_dir: Path) -> None:
    raising, slow, fast = watch_dir / "raising", watch_dir / "slow", watch_dir / "fast"
    for d in (raising, slow, fast):
        d.mkdir()
    daemon.watch_paths = [
        [str(raising), "IN_CREATE", "tests.testapp.receivers.RaisingProcessor"],
        [str(slow), "IN_CREATE", "tests.testapp.receivers.SlowProcessor"],
        [str(fast), "IN_CREATE", SIGNALER],
    ]
    pid = daemon.start()
    for i in range(50):
        (raising / f"r{i}").touch()
    for i in range(60):  # 60 x 50 ms = 3 s of work for the slow watch
        (slow / f"s{i}").touch()
    started = time.monotonic()
    (fast / "quick").touch()
    daemon.record.wait_path(fast / "quick", timeout=10)
    assert time.monotonic() - started < 1.5, "the fast watch waited behind the slow one"
    wait_for(lambda: (s := settings_state("settings:0")) is not None and s.errors == 50, 10)
    assert settings_state("settings:0").events == 50  # type: ignore[union-attr]
    assert "processor exploded on" in daemon.stderr_text()
    wait_for(lambda: len(daemon.record.paths("slow")) == 60, 15)
    assert daemon.pid() == pid


def test_kill_9_during_a_flood_then_start(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE|IN_CLOSE_WRITE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    pid = daemon.start()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os\nfor i in range(20000): open(os.path.join({str(watch_dir)!r}, f'f{{i}}'), 'w').close()",
        ]
    )
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    writer.wait(30)
    new_pid = daemon.start()
    assert new_pid != pid
    keep_touching(daemon, watch_dir, "after-restart")
    status = DaemonStatus.objects.get()
    assert status.pid == new_pid and status.running


def test_sigterm_during_a_flood_flushes_and_exits_0(daemon: DaemonProcess, watch_dir: Path) -> None:
    from inotifier.models import EventLog

    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    daemon.env_extra["INOTIFIER_EVENT_LOG_BUFFER"] = "100000"
    proc = daemon.start_foreground()
    for i in range(5000):
        (watch_dir / f"f{i}").touch()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    recorded = set(daemon.record.paths("IN_CREATE"))
    logged = set(EventLog.objects.values_list("pathname", flat=True))
    # Every event the daemon accepted (it reached a receiver) is in the table.
    assert recorded <= logged
    assert len(recorded) > 0


def test_output_files_are_not_followed_and_not_world_writable(
    daemon: DaemonProcess, watch_dir: Path, tmp_path: Path
) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    daemon.stderr_file.symlink_to(victim)
    result = daemon.manage("inotifier_start")
    assert result.returncode == 1
    assert "symbolic link" in result.stderr
    assert victim.read_text() == "precious\n"
    daemon.stderr_file.unlink()
    daemon.start()
    assert daemon.stderr_file.stat().st_mode & 0o002 == 0
    assert daemon.pid_file.stat().st_mode & 0o022 == 0


def test_a_disallowed_row_is_never_imported(daemon: DaemonProcess, watch_dir: Path) -> None:
    from django.db import connection

    marker = watch_dir / "imported"
    daemon.env_extra["INOTIFIER_TEST_EVIL_MARKER"] = str(marker)
    # Inserted behind the admin's back, with raw SQL.
    table = WatchPath._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (path, mask, processor, enabled, recursive, auto_add, exclude,"
            " host, event_log, description, created, updated) VALUES"
            " (%s, 256, 'tests.testapp.evil.Processor', %s, %s, %s, '', '', %s, '', %s, %s)",
            [str(watch_dir), True, False, False, True, "2026-01-01 00:00:00", "2026-01-01 00:00:00"],
        )
    daemon.start()
    wait_for(lambda: WatchState.objects.filter(state="error").exists(), 5)
    state = WatchState.objects.get()
    assert "not in INOTIFIER_PROCESSORS" in state.message
    (watch_dir / "x").touch()
    time.sleep(0.5)
    assert not marker.exists()


def test_hostile_file_names_are_delivered_logged_and_stored_safely(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    from inotifier.models import EventLog

    printed, signalled, failing = watch_dir / "printed", watch_dir / "signalled", watch_dir / "failing"
    for d in (printed, signalled, failing):
        d.mkdir()
    daemon.watch_paths = [
        [str(printed), "IN_CREATE", "inotifier.event_processors.AllEventsPrinter"],
        [str(signalled), "IN_CREATE", SIGNALER],
        [str(failing), "IN_CREATE", "tests.testapp.receivers.RaisingProcessor"],
    ]
    daemon.env_extra["INOTIFIER_EVENT_LOG"] = "1"
    daemon.start()
    names = [
        b"line\nbreak",
        b"<img src=x onerror=alert(1)>",
        b"x" * 255,
        b"bad-\xff\xfe-utf8",
        "caf\u00e9-\u2603".encode(),
    ]
    for directory in (printed, signalled, failing):
        for raw in names:
            with open(os.fsencode(str(directory)) + b"/" + raw, "wb"):
                pass
    expected = {os.fsdecode(os.fsencode(str(signalled)) + b"/" + raw) for raw in names}
    wait_for(lambda: expected <= set(daemon.record.paths("IN_CREATE")), 10)
    # Printed one per line: the newline inside a name cannot forge a line.
    wait_for(lambda: daemon.stdout_file.read_text(errors="replace").count("\n") >= len(names), 10)
    lines = daemon.stdout_file.read_text(errors="surrogateescape").splitlines()
    assert len(lines) == len(names)
    assert all(line.startswith("IN_CREATE '") or line.startswith('IN_CREATE "') for line in lines)
    # Logged (processor errors) with the name quoted, never a raw newline.
    wait_for(lambda: daemon.stderr_text().count("processor exploded on") >= len(names), 10)
    for line in daemon.stderr_text().splitlines():
        if "raised on IN_CREATE" in line:
            assert line.rstrip().endswith("the daemon goes on"), line

    # Stored: every name of the signalled folder, the non-UTF-8 one escaped losslessly.
    def stored() -> dict[bytes, EventLog]:
        rows = EventLog.objects.filter(pathname__startswith=str(signalled))
        return {row.raw_pathname(): row for row in rows}

    wanted = {os.fsencode(str(signalled)) + b"/" + raw for raw in names}
    wait_for(lambda: wanted <= set(stored()), 10)
    bad = stored()[os.fsencode(str(signalled)) + b"/bad-\xff\xfe-utf8"]
    assert bad.escaped and bad.pathname.endswith("bad-\\xff\\xfe-utf8")


def test_database_outage_keeps_watches_logs_once_and_catches_up(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    from django.db import connection

    from .pgproxy import TcpProxy

    if connection.vendor != "postgresql":
        pytest.skip("the outage is a PostgreSQL connection refused; run with DATABASE_URL=postgres://...")
    settings = connection.settings_dict
    proxy = TcpProxy((settings.get("HOST") or "127.0.0.1", int(settings.get("PORT") or 5432)))
    try:
        assert daemon.db_url
        daemon.db_url = proxy.url_for(daemon.db_url)
        daemon.env_extra["INOTIFIER_POLL_INTERVAL"] = "0.2"
        old = watch_dir / "old"
        new = watch_dir / "new"
        old.mkdir()
        new.mkdir()
        WatchPath.objects.create(path=str(old), mask=IN_CREATE, processor=SIGNALER)
        pid = daemon.start()
        keep_touching(daemon, old, "before")
        proxy.down()
        # Long enough for many poll ticks (0.2 s) and several retries.
        wait_for(lambda: "database unavailable" in daemon.stderr_text(), 10)
        keep_touching(daemon, old, "during")  # the watches it had keep working
        WatchPath.objects.create(path=str(new), mask=IN_CREATE, processor=SIGNALER)
        time.sleep(3)
        assert daemon.stderr_text().count("database unavailable") == 1  # once per outage
        proxy.up()
        wait_for(lambda: "database back after" in daemon.stderr_text(), 40)
        keep_touching(daemon, new, "after", timeout=10)  # caught up with the config
        assert daemon.pid() == pid
        wait_for(lambda: WatchState.objects.filter(path=str(new), state="active").exists(), 10)
    finally:
        daemon.cleanup()
        proxy.close()
