"""The management commands as real subprocesses: start, stop, reload, status."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, DaemonProcess, alive, wait_for

pytestmark = pytest.mark.daemon

SIGNALER = "inotifier.event_processors.AllEventsSignaler"


def test_start_signals_and_stop(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE|IN_CLOSE_WRITE", SIGNALER]]
    pid = daemon.start()
    assert alive(pid)
    assert daemon.pid_file.read_text().strip() == str(pid)
    # Detached: a session of its own (no controlling terminal), not the command's.
    assert os.getsid(pid) != os.getsid(0)
    assert os.getsid(pid) != pid  # double fork: not a session leader, cannot regain a tty
    (watch_dir / "hello.txt").write_text("hi")
    daemon.record.wait_path(watch_dir / "hello.txt", "IN_CLOSE_WRITE")
    names = [(n, m) for n, p, m in daemon.record.events() if p == str(watch_dir / "hello.txt")]
    assert names == [("IN_CREATE", "IN_CREATE"), ("IN_CLOSE_WRITE", "IN_CLOSE_WRITE")]
    result = daemon.stop()
    assert result.returncode == 0, result.stderr
    assert f"File monitoring stopped (pid {pid})" in result.stdout
    wait_for(lambda: not alive(pid), 5)
    assert not daemon.pid_file.exists()


def test_output_is_appended_not_truncated(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.stderr_file.write_text("line from before\n")
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", "inotifier.event_processors.AllEventsPrinter"]]
    daemon.start()
    (watch_dir / "printed").touch()
    wait_for(lambda: "printed" in daemon.stdout_file.read_text(), 10)
    daemon.stop()
    text = daemon.stderr_file.read_text()
    assert text.startswith("line from before\n")
    assert "inotifier daemon started" in text
    assert f"IN_CREATE {str(watch_dir / 'printed')!r}" in daemon.stdout_file.read_text()


def test_double_start_is_refused(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    result = daemon.manage("inotifier_start")
    assert result.returncode != 0
    assert f"already running (pid {pid})" in result.stderr
    assert daemon.pid() == pid


def test_stale_pid_file_after_kill_9(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5)
    assert daemon.pid_file.exists()  # left behind
    new_pid = daemon.start()
    assert new_pid != pid
    assert daemon.pid_file.read_text().strip() == str(new_pid)
    (watch_dir / "after").touch()
    daemon.record.wait_path(watch_dir / "after", "IN_CREATE")


def test_stop_with_nothing_running(daemon: DaemonProcess) -> None:
    result = daemon.stop()
    assert result.returncode == 1
    assert "not running" in result.stderr
    assert "Traceback" not in result.stderr


def test_stop_refuses_to_signal_a_stranger(daemon: DaemonProcess) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        daemon.pid_file.write_text(f"{stranger.pid}\n")
        result = daemon.stop()
        assert result.returncode == 1
        assert "no process was signalled" in result.stderr
        time.sleep(0.2)
        assert stranger.poll() is None  # still alive
    finally:
        stranger.kill()
        stranger.wait()


def test_foreground_runs_attached_and_stops_on_sigterm(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    proc = daemon.start_foreground()
    assert daemon.pid() == proc.pid
    (watch_dir / "fg").touch()
    daemon.record.wait_path(watch_dir / "fg", "IN_CREATE")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "inotifier daemon stopped" in err  # logs on stderr
    assert not daemon.pid_file.exists()


def test_sigint_stops_foreground_cleanly(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    proc = daemon.start_foreground()
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert time.monotonic() - started < 2  # woken at once, not at the next poll


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            ["relative/path", "IN_CREATE", SIGNALER],
            "INOTIFIER_WATCH_PATHS[0]: path 'relative/path' is not absolute",
        ),
        (["/tmp", "IN_NOPE", SIGNALER], "INOTIFIER_WATCH_PATHS[0]: unknown event name 'IN_NOPE'"),
        (
            ["/tmp", "IN_CREATE"],
            "INOTIFIER_WATCH_PATHS[0] has 2 items; expected a (path, mask, processor) 3-tuple",
        ),
        (
            ["/tmp", "IN_CREATE", "no.such.module.Processor"],
            "INOTIFIER_WATCH_PATHS[0]: processor 'no.such.module.Processor' cannot be imported",
        ),
        (
            ["/tmp", "IN_CREATE", "tests.testapp.receivers.NotAProcessor"],
            "is not a pyinotify.ProcessEvent subclass",
        ),
    ],
)
def test_start_refuses_malformed_settings(daemon: DaemonProcess, entry: list[str], message: str) -> None:
    daemon.watch_paths = [entry]
    result = daemon.manage("inotifier_start")
    assert result.returncode == 1
    assert "CommandError" in result.stderr or "Invalid inotifier configuration" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert daemon.pid() is None


def test_missing_path_is_a_warning_and_the_rest_is_watched(daemon: DaemonProcess, watch_dir: Path) -> None:
    missing = watch_dir / "not-yet"
    daemon.watch_paths = [[str(missing), "IN_CREATE", SIGNALER], [str(watch_dir), "IN_CREATE", SIGNALER]]
    result = daemon.manage("inotifier_start")
    assert result.returncode == 0, result.stderr
    assert "does not exist (yet)" in result.stderr
    (watch_dir / "seen").touch()
    daemon.record.wait_path(watch_dir / "seen", "IN_CREATE")
    missing.mkdir()  # appears later: watched within the poll interval
    time.sleep(1.2)
    (missing / "inside").touch()
    daemon.record.wait_path(missing / "inside", "IN_CREATE")


def test_start_reports_the_daemons_own_error(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.pid_file.parent.mkdir(exist_ok=True)
    bad_dir = watch_dir / "no-such-dir"
    daemon.pid_file = bad_dir / "inotifier.pid"
    result = daemon.manage("inotifier_start")
    assert result.returncode == 1
    assert "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_raising_receiver_does_not_stop_the_daemon(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_TEST_RAISE"] = "1"
    pid = daemon.start()
    (watch_dir / "boom1").touch()
    (watch_dir / "fine").touch()
    daemon.record.wait_path(watch_dir / "fine", "IN_CREATE")
    wait_for(lambda: "receiver exploded on" in daemon.stderr_text(), 5)
    assert "Traceback" in daemon.stderr_text()
    assert alive(pid)


def test_sighup_reconciles_without_restarting(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reconcile requested" in daemon.stderr_text(), 5)
    assert daemon.pid() == pid
    (watch_dir / "after-hup").touch()
    daemon.record.wait_path(watch_dir / "after-hup", "IN_CREATE")


def test_pid_file_symlink_is_refused(daemon: DaemonProcess, watch_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    daemon.pid_file.symlink_to(target)
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    result = daemon.manage("inotifier_start")
    assert result.returncode == 1
    assert "symbolic link" in result.stderr
    assert target.read_text() == "keep me"


def test_two_simultaneous_starts_make_one_daemon(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    cmd = [sys.executable, "-m", "django", "inotifier_start"]
    procs = [
        subprocess.Popen(
            cmd, env=daemon.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 1], results
    pid = daemon.pid()
    assert pid is not None
    daemons = [p for p in os.listdir("/proc") if p.isdigit() and _is_test_daemon(int(p), daemon)]
    assert daemons == [str(pid)]


def _is_test_daemon(pid: int, daemon: DaemonProcess) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read()
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(") ", 1)[1][0] == "Z":
                return False
    except OSError:
        return False
    return f"INOTIFIER_PID_FILE={daemon.pid_file}".encode() in env


def test_status_exit_codes(daemon: DaemonProcess, watch_dir: Path) -> None:
    result = daemon.manage("inotifier_status")
    assert result.returncode == 3
    assert "not running" in result.stdout
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    result = daemon.manage("inotifier_status")
    assert result.returncode == 0, result.stderr
    assert f"pid {pid}" in result.stdout
    assert str(watch_dir) in result.stdout
    assert "ACTIVE" in result.stdout


def test_settings_from_environment_json(daemon: DaemonProcess, watch_dir: Path) -> None:
    # tests/settings.py reads INOTIFIER_WATCH_PATHS through django-environ (env.json).
    daemon.watch_paths = [[str(watch_dir), 256, SIGNALER]]  # an int mask: IN_CREATE
    assert json.loads(daemon.env()["INOTIFIER_WATCH_PATHS"])[0][1] == 256
    daemon.start()
    (watch_dir / "int-mask").touch()
    daemon.record.wait_path(watch_dir / "int-mask", "IN_CREATE")


# -- issue 11: what inotifier_status shows ------------------------------------------------

#: A directory name that would forge a line and take over a terminal if printed raw:
#: a newline, an OSC title change, "clear screen", a right-to-left override.
HOSTILE = "evil\n[forged] line \x1b]0;pwned\x07\x1b[2J\u202eright-to-left"


def raw_controls(text: str) -> list[str]:
    """Return the characters of ``text`` that drive a terminal (its own line breaks excepted)."""
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029\u202e"
    ]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Return the watch table of ``inotifier_status`` as {path: the row's cells}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("STATE"))
    header = re.split(r" {2,}", lines[start])
    rows = {}
    for line in lines[start + 1 :]:
        cells = re.split(r" {2,}", line)
        rows[cells[header.index("PATH")]] = cells
    return rows


def test_status_escapes_control_characters_in_paths_hosts_and_messages(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    from inotifier.escaping import printable
    from inotifier.models import WatchPath

    evil = watch_dir / HOSTILE
    evil.mkdir()
    missing = watch_dir / "gone\n\x1b[31mred\x1b[0m"
    # Such paths are refused by the admin and the settings checks: rows written behind
    # their back (raw SQL, a script) still reach the daemon, which reports them in error,
    # naming them. The name must come out visible in the status, never raw.
    for path in (evil, missing):
        WatchPath.objects.create(path=str(path), mask=1 << 8, processor=SIGNALER)
    daemon.env_extra["INOTIFIER_HOSTNAME"] = "host\x1b[2J\n"
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    result = daemon.manage("inotifier_status")
    assert result.returncode == 0, result.stderr
    assert raw_controls(result.stdout) == []
    assert raw_controls(result.stderr) == []
    # Visible, one way only: the escaped name is there and its parts never start a line.
    assert printable(str(evil)) in result.stdout
    assert printable(str(missing)) in result.stdout
    assert "host\\x1b[2J\\x0a" in result.stdout
    assert f"(pid {pid})" in result.stdout
    assert not any(line.startswith("[forged]") for line in result.stdout.splitlines())
    rows = table_rows(result.stdout)
    assert rows[printable(str(evil))][0] == "ERROR"
    assert "contains a control or invisible character" in rows[printable(str(evil))][-1]
    assert rows[printable(str(missing))][0] == "ERROR"
    assert rows[printable(str(watch_dir))][0] == "ACTIVE"
    # --all-hosts goes through the same escaping.
    result = daemon.manage("inotifier_status", "--all-hosts")
    assert raw_controls(result.stdout) == [], result.stdout
    assert printable(str(evil)) in result.stdout


def test_start_and_stop_errors_show_control_characters_escaped(daemon: DaemonProcess, tmp_path: Path) -> None:
    hostile_dir = tmp_path / HOSTILE
    daemon.pid_file = hostile_dir / "inotifier.pid"  # its directory does not exist
    for command in ("inotifier_start", "inotifier_stop"):
        result = daemon.manage(command)
        assert result.returncode == 1, (command, result.stderr)
        assert raw_controls(result.stdout + result.stderr) == [], (command, result.stderr)
        assert "\\x1b]0;pwned\\x07" in result.stderr or "\\x1b]0;pwned\\x07" in result.stdout, command
        assert "Traceback" not in result.stderr
    daemon.pid_file = tmp_path / "inotifier.pid"
    daemon.stderr_file = hostile_dir / "daemon.err"
    result = daemon.manage("inotifier_start")
    assert result.returncode == 1
    assert "cannot open output file" in result.stderr
    assert raw_controls(result.stderr) == [], result.stderr


def test_status_after_stop_shows_no_active_watch(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.start()
    assert "ACTIVE" in daemon.manage("inotifier_status").stdout
    assert daemon.stop().returncode == 0
    result = daemon.manage("inotifier_status")
    assert result.returncode == 3
    assert "ACTIVE" not in result.stdout
    row = table_rows(result.stdout)[str(watch_dir)]
    assert row[0] == "UNKNOWN"
    assert "unknown (daemon not running)" in row[-1]
    assert "last reported active" in row[-1]
    daemon_line = next(line for line in result.stdout.splitlines() if line.startswith("host "))
    assert "stopped" in daemon_line
    result = daemon.manage("inotifier_status", "--all-hosts")
    assert "ACTIVE" not in result.stdout
    assert table_rows(result.stdout)[str(watch_dir)][0] == "UNKNOWN"


def test_status_after_kill_9_shows_no_active_watch(daemon: DaemonProcess, watch_dir: Path) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from inotifier.models import DaemonStatus, heartbeat_limit

    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    pid = daemon.start()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5)
    # Killed: it never recorded its stop; the pid file is stale and nobody locks it.
    assert DaemonStatus.objects.get(pid=pid).running
    result = daemon.manage("inotifier_status")
    assert result.returncode == 3
    assert "ACTIVE" not in result.stdout
    assert table_rows(result.stdout)[str(watch_dir)][0] == "UNKNOWN"
    # Seen from another host (no pid file to ask), only the heartbeat tells: age it.
    old = timezone.now() - timedelta(seconds=heartbeat_limit() + 5)
    DaemonStatus.objects.filter(pid=pid).update(heartbeat=old)
    daemon.env_extra["INOTIFIER_HOSTNAME"] = "another-host"
    result = daemon.manage("inotifier_status", "--all-hosts")
    assert "ACTIVE" not in result.stdout
    assert table_rows(result.stdout)[str(watch_dir)][0] == "UNKNOWN"
    daemon_line = next(line for line in result.stdout.splitlines() if line.startswith("host "))
    assert "no heartbeat for" in daemon_line


def test_status_shows_error_reasons_in_the_message_column(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir / "missing"), "IN_CREATE", SIGNALER]]
    daemon.start()
    result = daemon.manage("inotifier_status")
    row = table_rows(result.stdout)[str(watch_dir / "missing")]
    assert row[0] == "MISSING"
    assert "does not exist" in row[-1]
    daemon.stop()
    row = table_rows(daemon.manage("inotifier_status").stdout)[str(watch_dir / "missing")]
    assert row[0] == "UNKNOWN"
    assert "last reported missing" in row[-1]
    assert "does not exist" in row[-1]


# -- issue 11: output into a pipe whose reader has gone ------------------------------------


def test_status_piped_into_head_ends_quietly(daemon: DaemonProcess) -> None:
    from inotifier.models import WatchState
    from inotifier.states import State

    host = socket.gethostname()  # the daemon's env has no INOTIFIER_HOSTNAME
    WatchState.objects.bulk_create(
        WatchState(
            host=host,
            key=f"admin:{i}",
            source="admin",
            path=f"/srv/watched/{i:05d}",
            mask=256,
            processor=SIGNALER,
            state=State.ACTIVE,
            message="a reason long enough " * 3,
        )
        for i in range(2000)
    )
    status_file = daemon.tmp / "pipestatus"
    # A real shell pipeline: head reads one line and goes, the command is still writing
    # (far more than the pipe holds), so its next write gets EPIPE.
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'{sys.executable} -m django inotifier_status | head -1; echo "${{PIPESTATUS[0]}}" >{status_file}',
        ],
        env=daemon.env(),
        cwd=daemon.tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout == f"inotifier is not running on {host}.\n"
    assert result.stderr == ""
    # The exit status the command would have had: LSB 3, the daemon is not running.
    assert status_file.read_text().strip() == "3"


def run_into_a_closed_pipe(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout is a pipe nobody reads any more (``cmd | true``, deterministic)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=daemon.env(),
            cwd=daemon.tmp,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_every_command_ends_quietly_when_its_reader_has_gone(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_ALLOWED_ROOTS"] = str(watch_dir)  # no system check warning on stderr
    for args, code in [
        (("inotifier_status",), 3),
        (("inotifier_status", "--json"), 3),
        (("inotifier_start",), 0),
        (("inotifier_status",), 0),
        (("inotifier_status", "--all-hosts"), 0),
        (("inotifier_status", "--json", "--all-hosts"), 0),
        (("inotifier_reload",), 0),
        (("inotifier_prune_events",), 0),
        (("inotifier_stop",), 0),
    ]:
        result = run_into_a_closed_pipe(daemon, *args)
        assert (result.returncode, result.stderr) == (code, ""), args
    assert daemon.pid() is None  # start and stop did their work all the same


@pytest.mark.parametrize(
    "name",
    [
        "inotifier_start",
        "inotifier_stop",
        "inotifier_reload",
        "inotifier_status",
        "inotifier_prune_events",
        "inotifier_prune_outbox",
    ],
)
def test_every_command_has_a_help_page(name: str) -> None:
    from django.core.management import load_command_class

    command = load_command_class("inotifier", name)
    text = command.create_parser("manage.py", name).format_help()  # what --help prints
    assert text.startswith(f"usage: manage.py {name}")
    assert str(command.help).split()[0] in text
