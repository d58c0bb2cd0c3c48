"""`make demo`'s script as a real process: the port check, the server check, the receiver, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT, wait_for

pytestmark = pytest.mark.daemon

DEMO = ROOT / "scripts" / "demo"


def session_processes(sid: int) -> list[int]:
    """Return the live processes of session ``sid`` (everything the script started)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


class Demo:
    """The demo script with everything it writes in a temporary directory."""

    def __init__(self, tmp: Path, port: int, timeout: float = 30):
        self.tmp = tmp
        self.port = port
        self.watched = tmp / "watched"
        self.out = tmp / "demo.out"
        self.err = tmp / "demo.err"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INOTIFIER_", "DJANGO_", "DEMO_", "PYTEST_")) and k != "DATABASE_URL"
        }
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": f"sqlite:///{tmp / 'demo.sqlite3'}",
                "INOTIFIER_PID_FILE": str(tmp / "inotifier.pid"),
                "DEMO_WATCHED_DIR": str(self.watched),
                "DEMO_SERVER_LOG": str(tmp / "runserver.log"),
                "DEMO_PORT": str(port),
                "DEMO_START_TIMEOUT": str(timeout),
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        # A session of its own, as a terminal's job: Ctrl-C is SIGINT to the whole group.
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [str(DEMO), sys.executable],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self.proc

    def run(self, timeout: float = 60) -> int:
        proc = self.start()
        return proc.wait(timeout)

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None:
            for pid in session_processes(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_port_stops_the_demo_before_anything_with_a_way_out(tmp_path: Path, taken_port: int) -> None:
    demo = Demo(tmp_path, taken_port, timeout=3)
    try:
        code = demo.run(timeout=60)
    finally:
        demo.kill()
    text = demo.output()
    assert code == 1, text
    assert f"cannot serve the admin on 127.0.0.1:{taken_port}: Address already in use" in text
    assert f"DEMO_PORT={taken_port + 1} make demo" in text
    assert "password" not in text.lower()
    assert "http://" not in text
    assert not demo.watched.exists()  # nothing done, so nothing to undo
    assert not (tmp_path / "demo.sqlite3").exists()


def test_a_server_that_does_not_answer_in_time_is_stopped(tmp_path: Path, free_port: int) -> None:
    demo = Demo(tmp_path, free_port, timeout=0)
    try:
        code = demo.run(timeout=60)
        assert demo.proc is not None
        assert session_processes(demo.proc.pid) == []  # the server it started is gone
    finally:
        demo.kill()
    text = demo.output()
    assert code == 1, text
    assert f"did not answer on http://127.0.0.1:{free_port}/ within 0 s" in text
    assert "password" not in text.lower()


def test_a_second_demo_stops_before_printing_a_login(tmp_path: Path, free_port: int) -> None:
    from inotifier.daemon.pidfile import PidFile

    # The first demo's daemon: what matters is that a live process holds the pid file's lock.
    first = PidFile(str(tmp_path / "inotifier.pid"))
    first.acquire()
    demo = Demo(tmp_path, free_port)
    try:
        code = demo.run(timeout=60)
    finally:
        first.release()
        demo.kill()
    text = demo.output()
    assert code == 1, text
    assert (
        f"Another demo runs already (inotifier is running on {socket.gethostname()} (pid {os.getpid()}))."
        in text
    )
    assert "Stop it first" in text
    assert "password" not in text.lower()
    assert not demo.watched.exists()


@pytest.mark.parametrize("value", ["80a", "0", "70000", "-1"])
def test_a_port_that_is_not_a_port_is_refused(tmp_path: Path, value: str) -> None:
    demo = Demo(tmp_path, 0)
    demo.env["DEMO_PORT"] = value
    assert demo.run(timeout=30) == 2
    assert f"DEMO_PORT must be a port number (1-65535), not '{value}'." in demo.output()
    assert "Traceback" not in demo.output()


def test_the_demo_serves_watches_says_what_arrived_and_stops_on_ctrl_c(
    tmp_path: Path, free_port: int
) -> None:
    demo = Demo(tmp_path, free_port)
    proc = demo.start()
    try:
        banner = wait_for(lambda: re.search(r"password: (\S+)", demo.output()) or proc.poll() is not None, 90)
        assert proc.poll() is None, demo.output()
        assert f"http://127.0.0.1:{free_port}/admin/" in demo.output()
        # The URL it printed answers: the admin's login page.
        with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/admin/login/", timeout=10) as page:
            assert page.status == 200
            assert b"csrfmiddlewaretoken" in page.read()
        assert banner.group(1)
        wait_for(lambda: (tmp_path / "inotifier.pid").exists(), 30)
        time.sleep(1)  # the foreground daemon's first reconcile
        uploads, more = demo.watched / "uploads", demo.watched / "more"
        (uploads / "a.txt.part").write_text("hi")
        (uploads / "a.txt.part").rename(uploads / "a.txt")
        (uploads / "by-hand.txt").write_text("no chunks")  # a create, but not an upload
        (more / "note.txt").write_text("a plain file")
        (more / "sub").mkdir()
        wait_for(lambda: "directory created:" in demo.output(), 20)
        wait_for(lambda: "upload complete:" in demo.output(), 20)
        text = demo.output()
        assert f"upload complete: {uploads / 'a.txt'} (written as {uploads / 'a.txt.part'})" in text
        assert f"file created: {more / 'note.txt'} (from AllEventsSignaler)" in text
        assert f"directory created: {more / 'sub'} (from AllEventsSignaler)" in text
        assert text.count("upload complete:") == 1
        assert "by-hand.txt" not in text
        # Ctrl-C: the terminal sends SIGINT to the whole job.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        wait_for(lambda: session_processes(proc.pid) == [], 15)
        assert not (tmp_path / "inotifier.pid").exists()
        assert "Traceback" not in demo.output()
    finally:
        demo.kill()
