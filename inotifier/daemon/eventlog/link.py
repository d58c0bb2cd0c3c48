"""The daemon's end of one writer process: rows go out, confirmations and log records come back."""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import pickle
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import inotifier

from ...escaping import get_logger
from . import protocol
from .buffer import RowBuffer
from .config import StoreConfig
from .rows import ROW_ITEMS, pack_rows

logger = get_logger("inotifier.daemon.eventlog")

PROCESS_NAME = "inotifier-log"
#: Started with ``-c`` so the command works whether or not ``inotifier`` is on the
#: interpreter's default path; its directory is passed as the first argument.
BOOTSTRAP = (
    "import sys; sys.path.append(sys.argv[1]); from inotifier.daemon.eventlog.worker import main; main()"
)


class WorkerLink:
    """One writer process, seen from the daemon.

    ``send_rows`` is called by the feeder thread; a reply thread reads what the
    process confirms (added to the buffer's tally) and its log records, which
    are logged here as if they were the daemon's own. ``on_end`` is called
    (from the reply thread) once the process is gone.
    """

    def __init__(self, buffer: RowBuffer, proc: subprocess.Popen[bytes], on_end: Callable[[], None]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.buffer = buffer
        self.proc = proc
        self.pid = proc.pid
        # File objects, closed through them only: a descriptor number closed twice
        # could by then belong to another file (the inotify descriptor...).
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self.sent = 0  # rows sent to this process
        self.tails_sent = 0  # entries of the buffer's ``tails`` this process knows
        self.finished = 0  # rows it confirmed (written, rejected or lost)
        self.alive = True
        self.clean_exit = False
        self._confirmed = (0, 0, 0, 0)
        self._on_end = on_end
        self._replies = threading.Thread(
            target=self._read_replies, name="inotifier-eventlog-replies", daemon=True
        )

    @classmethod
    def start(cls, config: StoreConfig, buffer: RowBuffer, on_end: Callable[[], None]) -> WorkerLink:
        """Start a writer process and send it ``config``; raise OSError when it cannot be started."""
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(inotifier.__file__)))
        proc = subprocess.Popen(
            [config.executable, "-c", BOOTSTRAP, package_parent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            bufsize=0,
        )
        link = cls(buffer, proc, on_end)
        protocol.grow_pipe(link._stdin.fileno())
        link._replies.start()
        try:
            link._send(protocol.CONFIG, pickle.dumps(config))
        except OSError:
            link.alive = False
        return link

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        protocol.write_all(self._stdin.fileno(), protocol.frame(kind, payload))  # ValueError once closed

    def send_rows(self, frame_rows: int) -> None:
        """Send every waiting row, ``frame_rows`` per frame; on a broken pipe the rest go back."""
        buffer = self.buffer
        tails = buffer.tails
        while self.alive:
            known = len(tails)  # taken after: every row taken names a tail below this
            flat = buffer.take(frame_rows)
            if not flat:
                return
            try:
                self._send(protocol.ROWS, pack_rows(flat, tails[self.tails_sent : known]))
            except (OSError, ValueError):
                buffer.put_back(flat)  # for the next process
                self.alive = False
                return
            self.tails_sent = known
            self.sent += len(flat) // ROW_ITEMS

    def _read_replies(self) -> None:
        tally = self.buffer.tally
        fd = self._stdout.fileno()  # closed only after this thread has ended
        try:
            while True:
                item = protocol.read_frame(fd)
                if item is None:
                    break
                kind, payload = item
                if kind == protocol.DONE_SO_FAR:
                    now = marshal.loads(payload)
                    written, rejected, lost, pruned = (
                        a - b for a, b in zip(now, self._confirmed, strict=True)
                    )
                    self._confirmed = now
                    self.finished += written + rejected + lost
                    tally.add(written, rejected, lost, pruned)
                elif kind == protocol.LOG:
                    self._log(pickle.loads(payload))
                elif kind == protocol.DONE:
                    self.clean_exit = True
        except Exception as exc:
            logger.error("event log: unreadable reply from the writer process (pid %d): %r", self.pid, exc)
        finally:
            self.alive = False
            self._on_end()

    def _log(self, data: dict[str, Any]) -> None:
        target = logging.getLogger(data["name"])
        if target.isEnabledFor(data["levelno"]):
            record = logging.makeLogRecord(
                {**data, "args": None, "process": self.pid, "processName": PROCESS_NAME}
            )
            target.handle(record)

    def finish(self, timeout: float) -> None:
        """Ask the process to write what it holds and exit; wait up to ``timeout`` seconds."""
        with contextlib.suppress(OSError, ValueError):
            if self.alive:
                self._send(protocol.STOP)
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.error(
                "event log: the writer process (pid %d) did not finish within %.0f s; killing it",
                self.pid,
                timeout,
            )
            self.proc.kill()
            self.proc.wait()
        self._replies.join(5.0)

    def close(self) -> None:
        """Reap the process (it has ended or is ending) and close the pipes."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._replies.join(5.0)
        if not self._replies.is_alive():
            with contextlib.suppress(OSError):
                self._stdout.close()

    def exit_description(self) -> str:
        """Return how the process ended ("exit status 3", "killed by SIGKILL")."""
        code = self.proc.returncode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"
