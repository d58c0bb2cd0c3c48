"""systemd and logrotate: sd_notify on a fake NOTIFY_SOCKET, the unit file, SIGUSR1, progress."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inotifier.daemon.process import SdNotifier

from .conftest import ROOT, DaemonProcess, wait_for

pytestmark = pytest.mark.daemon

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
PRINTER = "inotifier.event_processors.AllEventsPrinter"
UNIT_FILE = ROOT / "docs" / "inotifier.service"
LOGROTATE_FILE = ROOT / "docs" / "inotifier.logrotate"


class NotifySocket:
    """A fake systemd: an AF_UNIX datagram socket that collects sd_notify messages."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[str] = []

    def receive(self, timeout: float = 15.0) -> str:
        """Return the next message; fail the test when none comes within ``timeout`` s."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"no sd_notify message within {timeout} s (got so far: {self.messages})"
            ) from None
        message = data.decode()
        self.messages.append(message)
        return message

    def until(self, first_line: str, timeout: float = 15.0) -> list[str]:
        """Return the messages received up to and including one whose first line is given."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            message = self.receive(max(0.01, deadline - time.monotonic()))
            got.append(message)
            if message.splitlines()[0] == first_line:
                return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    folder = tempfile.mkdtemp(prefix="inotifier-sd-")
    sock = NotifySocket(os.path.join(folder, "notify"))
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def unit_file() -> dict[str, dict[str, list[str]]]:
    """Return docs/inotifier.service as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _sep, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def manage_args(exec_line: str) -> list[str]:
    """Return the arguments after ``manage.py`` in a unit file's Exec line."""
    argv = shlex.split(exec_line)
    for index, arg in enumerate(argv):
        if arg.endswith("manage.py"):
            return argv[index + 1 :]
    raise AssertionError(f"no manage.py in {exec_line!r}")


def test_unit_file_is_type_notify_with_sighup_reload() -> None:
    unit = unit_file()
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert manage_args(service["ExecStart"][0]) == ["inotifier_start", "--foreground"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # Stopped with SIGTERM (systemd's default), which the daemon handles cleanly.
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]
    assert "multi-user.target" in unit["Install"]["WantedBy"][0]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    import grp
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    text = UNIT_FILE.read_text()
    text = text.replace("/srv/mysite/venv/bin/python", sys.executable)
    text = text.replace("/srv/mysite", str(tmp_path))
    text = re.sub(r"^User=.*$", f"User={user}", text, flags=re.M)
    text = re.sub(r"^Group=.*$", f"Group={group}", text, flags=re.M)
    copy = tmp_path / "inotifier.service"
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert str(copy) not in output, output  # no warning about a line of the unit


def test_sd_notify_ready_reloading_stopping(
    daemon: DaemonProcess, watch_dir: Path, notify_socket: NotifySocket
) -> None:
    """Run the unit file's ExecStart and ExecReload against a fake systemd."""
    service = unit_file()["Service"]
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    env = daemon.env()
    env["NOTIFY_SOCKET"] = notify_socket.path
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", *manage_args(service["ExecStart"][0])],
        env=env,
        cwd=daemon.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon.foreground = proc  # killed by the fixture if the test fails

    # READY=1 is sent once the watches are in place: a file created right after is seen.
    started = notify_socket.until("READY=1", timeout=30)
    assert not any(m.startswith("STOPPING=1") for m in started), started
    (watch_dir / "right-after-ready").touch()
    daemon.record.wait_path(watch_dir / "right-after-ready", "IN_CREATE")
    assert daemon.pid() == proc.pid

    # A routine reconcile (a row seen at a poll) is applied but not announced to systemd.
    from inotifier.models import WatchPath

    from .conftest import wait_for

    row_dir = watch_dir / "row"
    row_dir.mkdir()
    WatchPath.objects.create(path=str(row_dir), mask=256, processor=SIGNALER)
    counter = iter(range(1_000_000))

    def row_live() -> bool:
        (row_dir / f"probe{next(counter)}").touch()
        return any(p.startswith(str(row_dir)) for p in daemon.record.paths())

    wait_for(row_live, 10, interval=0.05)

    # ExecReload: RELOADING=1 (with the CLOCK_MONOTONIC time systemd asks for), then READY=1.
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reload_cmd = shlex.split(service["ExecReload"][0].replace("$MAINPID", str(proc.pid)))
    subprocess.run(reload_cmd, check=True)
    *earlier, reloading = notify_socket.until("RELOADING=1")
    assert earlier == [], earlier  # READY=1 once at start; routine reconciles are silent
    fields = dict(line.split("=", 1) for line in reloading.splitlines())
    assert set(fields) == {"RELOADING", "MONOTONIC_USEC"}, reloading
    usec = int(fields["MONOTONIC_USEC"])
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify_socket.receive() == "READY=1"
    assert proc.poll() is None  # a reload, not a restart
    (watch_dir / "after-reload").touch()
    daemon.record.wait_path(watch_dir / "after-reload", "IN_CREATE")

    # systemd stops a service with SIGTERM: STOPPING=1, then a clean exit.
    proc.send_signal(signal.SIGTERM)
    assert notify_socket.until("STOPPING=1")[-1] == "STOPPING=1"
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "inotifier daemon stopped" in err
    assert not daemon.pid_file.exists()


def test_foreground_survives_sigusr1(
    daemon: DaemonProcess, watch_dir: Path, notify_socket: NotifySocket
) -> None:
    # A logrotate postrotate that sends SIGUSR1 must never kill a foreground daemon
    # (SIGUSR1's default action is to terminate).
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["NOTIFY_SOCKET"] = notify_socket.path
    proc = daemon.start_foreground()
    notify_socket.until("READY=1", timeout=30)
    proc.send_signal(signal.SIGUSR1)
    (watch_dir / "after-usr1").touch()
    daemon.record.wait_path(watch_dir / "after-usr1", "IN_CREATE")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "output files reopened" in err


def test_sd_notifier_without_socket_is_silent() -> None:
    notifier = SdNotifier("")
    assert notifier.sock is None
    notifier("READY=1")  # nothing to send to, nothing raised


def test_sd_notifier_abstract_socket_and_unreachable_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"inotifier-test-{os.getpid()}-{time.monotonic_ns()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    try:
        SdNotifier("@" + name)("STOPPING=1")
        receiver.settimeout(5)
        assert receiver.recv(1024) == b"STOPPING=1"
    finally:
        receiver.close()
    # systemd gone: a warning, never an exception in the daemon's loop.
    SdNotifier("@" + name)("READY=1")
    assert "sd_notify 'READY=1' failed" in caplog.text


def rotate(daemon: DaemonProcess) -> None:
    """Rotate the daemon's output files as docs/inotifier.logrotate says (logrotate if here)."""
    config = LOGROTATE_FILE.read_text()
    config = config.replace("/var/log/inotifier/*.log", f"{daemon.tmp}/*.log")
    config = config.replace("/srv/mysite/inotifier.pid", str(daemon.pid_file))
    logrotate = shutil.which("logrotate") or (
        "/usr/sbin/logrotate" if os.path.exists("/usr/sbin/logrotate") else None
    )
    if logrotate and os.getuid() == 0:
        conf = daemon.tmp / "logrotate.conf"
        conf.write_text(config)
        conf.chmod(0o644)
        result = subprocess.run(
            [logrotate, "-f", "-s", str(daemon.tmp / "logrotate.state"), str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return
    # Without logrotate: what it does, by hand (rename, then the postrotate script).
    for path in (daemon.stdout_file, daemon.stderr_file):
        path.rename(path.with_name(path.name + ".1"))
    script = config.split("postrotate", 1)[1].split("endscript", 1)[0]
    subprocess.run(["sh", "-c", script], check=True, timeout=30)


def test_sigusr1_reopens_output_files_for_logrotate(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.stdout_file = daemon.tmp / "stdout.log"
    daemon.stderr_file = daemon.tmp / "stderr.log"
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", PRINTER]]
    daemon.start()
    (watch_dir / "before").touch()
    wait_for(lambda: "before" in daemon.stdout_file.read_text(), 10)

    rotate(daemon)
    rotated_out = daemon.tmp / "stdout.log.1"
    rotated_err = daemon.tmp / "stderr.log.1"
    assert rotated_out.exists() and rotated_err.exists()
    wait_for(lambda: daemon.stderr_file.exists() and "output files reopened" in daemon.stderr_text())
    assert daemon.stdout_file.exists()
    assert daemon.stderr_file.stat().st_mode & 0o777 == 0o640

    (watch_dir / "after").touch()
    wait_for(lambda: "after" in daemon.stdout_file.read_text(), 10)
    daemon.signal(signal.SIGHUP)  # something that logs
    wait_for(lambda: "reconcile requested" in daemon.stderr_text(), 10)
    assert daemon.stop().returncode == 0
    assert "inotifier daemon stopped" in daemon.stderr_text()

    old_out, old_err = rotated_out.read_text(), rotated_err.read_text()
    assert "before" in old_out and "after" not in old_out
    assert "inotifier daemon started" in old_err
    assert "reconcile requested" not in old_err
    assert "inotifier daemon stopped" not in old_err
    assert "before" not in daemon.stdout_file.read_text()


def make_tree(top: Path, dirs: int, per_dir: int = 500) -> None:
    for i in range(0, dirs, per_dir):
        parent = top / f"d{i // per_dir:03d}"
        parent.mkdir()
        for j in range(min(per_dir, dirs - i) - 1):
            (parent / f"s{j:03d}").mkdir()


def test_progress_of_a_large_tree_in_log_and_status(daemon: DaemonProcess, watch_dir: Path) -> None:
    # 25 000 directories under the watched one: progress is reported at 10 000 and 20 000.
    started = time.monotonic()
    make_tree(watch_dir, 25_000)
    made = time.monotonic() - started
    gate = daemon.tmp / "go-on"
    daemon.env_extra["INOTIFIER_TEST_PROGRESS_GATE"] = str(gate)
    daemon.watch_paths = [
        [str(watch_dir), "IN_CREATE", "tests.progress_gate.GatedSignaler", {"recursive": True}]
    ]
    launched = time.monotonic()
    start = subprocess.Popen(
        [sys.executable, "-m", "django", "inotifier_start"],
        env=daemon.env(),
        cwd=daemon.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The daemon pauses after its first progress report: the status shows it.
        wait_for(lambda: "10000 directories watched" in daemon.stderr_text(), 60)
        status = daemon.manage("inotifier_status")
        assert status.returncode == 0, status.stderr
        match = re.search(
            rf"in progress: {re.escape(str(watch_dir))}: 10000 directories watched \((\d+)/s\)",
            status.stdout,
        )
        assert match, status.stdout
        # The rate is of the whole set-up so far: 10 000 directories took at least the
        # time before the report, and no machine watches millions a second.
        rate = int(match.group(1))
        assert 10_000 / (time.monotonic() - launched) <= rate <= 2_000_000, rate
        gate.touch()
        out, err = start.communicate(timeout=120)
    finally:
        gate.touch()
        if start.poll() is None:
            start.kill()
            start.communicate()
    assert start.returncode == 0, (out, err, daemon.stderr_text())
    log = daemon.stderr_text()
    assert re.search(r": 10000 directories watched \(\d+/s\)", log), log
    assert re.search(r": 20000 directories watched \(\d+/s\)", log), log
    assert f"watched 25000 directories under {watch_dir}" in log
    # Once done the status no longer says "in progress" and counts every kernel watch.
    status = daemon.manage("inotifier_status")
    assert "in progress" not in status.stdout, status.stdout
    assert "25001 kernel watches" in status.stdout, status.stdout  # the root and 25 000
    assert made < 30, f"making the tree took {made:.1f} s"


def watched_daemon(
    daemon: DaemonProcess, notify_socket: NotifySocket, watchdog_pid: str = "$$"
) -> subprocess.Popen[str]:
    """Start the daemon in the foreground as systemd would with WatchdogSec=0.4s.

    ``WATCHDOG_PID=$$`` is the shell's pid, which ``exec`` hands to the daemon:
    systemd names the main process the same way.
    """
    env = daemon.env()
    env.update(NOTIFY_SOCKET=notify_socket.path, WATCHDOG_USEC="400000")
    script = f'WATCHDOG_PID={watchdog_pid} exec "$@"'
    proc = subprocess.Popen(
        ["sh", "-c", script, "sh", sys.executable, "-m", "django", "inotifier_start", "--foreground"],
        env=env,
        cwd=daemon.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon.foreground = proc
    return proc


def pings(notify_socket: NotifySocket, seconds: float) -> list[float]:
    """Return when (time.monotonic()) each WATCHDOG=1 came during ``seconds``."""
    times = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = notify_socket.receive(left)
        except AssertionError:
            break
        if message == "WATCHDOG=1":
            times.append(time.monotonic())
    return times


def test_the_loop_pings_the_watchdog_and_stops_when_it_is_stuck(
    daemon: DaemonProcess, watch_dir: Path, notify_socket: NotifySocket
) -> None:
    stuck = watch_dir / "stuck"
    stuck.mkdir()
    daemon.watch_paths = [
        [str(watch_dir), "IN_CREATE", SIGNALER],
        [str(stuck), "IN_CREATE", "tests.testapp.receivers.StuckProcessor"],
    ]
    proc = watched_daemon(daemon, notify_socket)
    notify_socket.until("READY=1", timeout=30)
    # Every 0.2 s: half of WatchdogSec=, as systemd advises.
    healthy = pings(notify_socket, 2.0)
    assert len(healthy) >= 5, healthy
    # A processor that blocks the loop for 2 s: the pings stop (systemd would restart the
    # daemon after 0.4 s), though every other thread of the process runs on.
    (stuck / "block").touch()
    during = pings(notify_socket, 4.0)
    gaps = [b - a for a, b in itertools.pairwise([healthy[-1], *during])]
    assert max(gaps) > 1.5, gaps
    daemon.record.wait_path(stuck / "block", "stuck")
    # Once the processor returns, the loop pings again.
    assert len(pings(notify_socket, 1.0)) >= 2
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_no_watchdog_ping_when_systemd_watches_another_process(
    daemon: DaemonProcess, watch_dir: Path, notify_socket: NotifySocket
) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    proc = watched_daemon(daemon, notify_socket, watchdog_pid="1")
    notify_socket.until("READY=1", timeout=30)
    assert pings(notify_socket, 1.5) == []
    (watch_dir / "works").touch()
    daemon.record.wait_path(watch_dir / "works", "IN_CREATE")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("400000", "self", 0.2),
        ("30000000", None, 15.0),  # WATCHDOG_PID unset: this process
        ("400000", "1", None),  # another process is the one watched
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    from inotifier.daemon.process import watchdog_interval

    for name, value in (
        ("WATCHDOG_USEC", usec),
        ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected
    # Read once: the processes the daemon starts do not inherit them.
    assert "WATCHDOG_USEC" not in os.environ and "WATCHDOG_PID" not in os.environ


def test_unit_file_sets_a_watchdog() -> None:
    service = unit_file()["Service"]
    assert service["WatchdogSec"] == ["60s"]
    assert service["Restart"] == ["on-failure"]  # a watchdog timeout counts as a failure
