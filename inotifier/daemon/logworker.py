"""The event-log writer process: the daemon's rows in, database writes out, off the daemon's GIL.

``WorkerLink`` is the daemon's end (used by ``EventLogWriter``); ``main`` runs
in the child, started as ``python -c ... inotifier.daemon.logworker``. They
talk over two pipes in frames: a one-byte kind and a 4-byte length, then the
payload.

daemon -> writer:
    ``C`` configuration (pickle, first frame), ``R`` rows (``eventlog.pack_rows``:
    new watch tails and a flat row list), ``S`` stop (write what is left, exit).
writer -> daemon:
    ``A`` what was done so far (marshal: written, rejected, lost, pruned,
    cumulative), ``L`` a log record (pickle of a dict), ``D`` done (clean exit).

The writer ignores SIGINT, SIGTERM, SIGHUP and SIGUSR1/2: a Ctrl-C or a
service manager signalling the whole group must not lose its rows; it ends
when the daemon says stop or when its stdin closes (the daemon died), after
writing what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .eventlog import EventLogWriter

from ..escaping import get_logger
from .eventlog import FRAME_ROWS, ROW_ITEMS, pack_rows

logger = get_logger("inotifier.daemon.eventlog")

HEADER = struct.Struct("<cI")
#: Pipe capacity asked for (the kernel may give less): room for several frames.
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
PR_SET_NAME = 15
PROCESS_NAME = b"inotifier-log"
#: Module constants of ``eventlog`` handed to the writer process (tests change some).
TUNABLES = (
    "BATCH_SIZE",
    "PRUNE_BATCH",
    "PRUNE_INTERVAL",
    "FIRST_PRUNE_DELAY",
    "PRUNE_BUDGET",
    "TRIM_SLACK",
    "TRIM_BACKLOG",
    "RECOUNT_INTERVAL",
    "DRAIN_SLICE",
    "FINAL_FLUSH_SECONDS",
    "IDLE_CLOSE_SECONDS",
)
#: Started with ``-c`` so the command works whether or not ``inotifier`` is on the
#: interpreter's default path; its directory is passed as the first argument.
BOOTSTRAP = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from inotifier.daemon.logworker import main; main()"
)


class ProtocolError(Exception):
    """The other end sent something that is not a frame."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int) -> bytes:
    """Read ``n`` bytes; b"" at a clean end of file, ProtocolError in mid-frame."""
    parts: list[bytes] = []
    while n:
        part = os.read(fd, n)
        if not part:
            if parts:
                raise ProtocolError("end of file in the middle of a frame")
            return b""
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def read_frame(fd: int) -> tuple[bytes, bytes] | None:
    """Return (kind, payload), or None at end of file."""
    header = _read_exact(fd, HEADER.size)
    if not header:
        return None
    kind, length = HEADER.unpack(header)
    payload = _read_exact(fd, length) if length else b""
    if length and not payload:
        raise ProtocolError("end of file in the middle of a frame")
    return kind, payload


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def _grow_pipe(fd: int) -> None:
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


# -- the daemon's end ------------------------------------------------------------------


class WorkerLink:
    """One writer process, seen from the daemon: rows go out, confirmations come back.

    ``send_rows`` is called by the writer thread of ``EventLogWriter``; a
    reader thread takes the replies, adds the confirmations to the writer's
    counters and logs the process's records as if they were the daemon's own.
    """

    def __init__(self, writer: EventLogWriter, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.writer = writer
        self.proc = proc
        self.pid = proc.pid
        # File objects, closed through them only: a descriptor number closed twice
        # could by then belong to another file (the inotify descriptor...).
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self.sent = 0  # rows sent to this process
        self.tails_sent = 0  # entries of the writer's ``tails`` this process knows
        self.finished = 0  # rows it confirmed (written, rejected or lost)
        self.alive = True
        self.clean_exit = False
        self._confirmed = (0, 0, 0, 0)
        self._replies = threading.Thread(
            target=self._read_replies, name="inotifier-eventlog-replies", daemon=True
        )

    @classmethod
    def start(cls, writer: EventLogWriter) -> WorkerLink:
        from django.conf import settings
        from django.db import connections

        import inotifier

        from ..conf import app_settings
        from . import eventlog

        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(inotifier.__file__)))
        config = {
            "sys_path": list(sys.path),
            "using": writer.using,
            "database": dict(connections[writer.using].settings_dict),
            "settings": {
                "USE_TZ": settings.USE_TZ,
                "TIME_ZONE": settings.TIME_ZONE,
                "INOTIFIER_EVENT_LOG_MAX_AGE": app_settings.INOTIFIER_EVENT_LOG_MAX_AGE,
                "INOTIFIER_EVENT_LOG_MAX_ROWS": app_settings.INOTIFIER_EVENT_LOG_MAX_ROWS,
            },
            "host": writer.host,
            "interval": writer.interval,
            "prune": writer.prune,
            "tunables": {name: getattr(eventlog, name) for name in TUNABLES},
            "log_level": logging.getLogger("inotifier").getEffectiveLevel(),
            "nice": int(app_settings.INOTIFIER_EVENT_LOG_NICE or 0),
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP, package_parent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            bufsize=0,
        )
        link = cls(writer, proc)
        _grow_pipe(link._stdin.fileno())
        link._replies.start()
        try:
            link._send(b"C", pickle.dumps(config))
        except OSError:
            link.alive = False
        return link

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        _write_all(self._stdin.fileno(), frame(kind, payload))  # ValueError once closed

    def send_rows(self) -> None:
        """Send every waiting row, FRAME_ROWS per frame; on a broken pipe the rest go back."""
        writer = self.writer
        tails = writer.tails
        while self.alive:
            known = len(tails)  # taken after: every row taken names a tail below this
            flat = writer.take(FRAME_ROWS)
            if not flat:
                return
            try:
                self._send(b"R", pack_rows(flat, tails[self.tails_sent : known]))
            except (OSError, ValueError):
                writer.put_back(flat)  # for the next process
                self.alive = False
                return
            self.tails_sent = known
            self.sent += len(flat) // ROW_ITEMS

    def _read_replies(self) -> None:
        writer = self.writer
        fd = self._stdout.fileno()  # closed only after this thread has ended
        try:
            while True:
                item = read_frame(fd)
                if item is None:
                    break
                kind, payload = item
                if kind == b"A":
                    now = marshal.loads(payload)
                    written, rejected, lost, pruned = (
                        a - b for a, b in zip(now, self._confirmed, strict=True)
                    )
                    self._confirmed = now
                    self.finished += written + rejected + lost
                    writer.count_confirmed(written, rejected, lost, pruned)
                elif kind == b"L":
                    self._log(pickle.loads(payload))
                elif kind == b"D":
                    self.clean_exit = True
        except Exception as exc:
            logger.error("event log: unreadable reply from the writer process (pid %d): %r", self.pid, exc)
        finally:
            self.alive = False
            writer._wake.set()

    def _log(self, data: dict[str, Any]) -> None:
        target = logging.getLogger(data["name"])
        if target.isEnabledFor(data["levelno"]):
            record = logging.makeLogRecord(
                {
                    **data,
                    "args": None,
                    "process": self.pid,
                    "processName": PROCESS_NAME.decode(),
                }
            )
            target.handle(record)

    def finish(self, timeout: float) -> None:
        """Ask the process to write what it holds and exit; wait up to ``timeout`` seconds."""
        with contextlib.suppress(OSError, ValueError):
            if self.alive:
                self._send(b"S")
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
        code = self.proc.returncode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


# -- the writer process ----------------------------------------------------------------------


class _Replies:
    """The writer process's end of the reply pipe (frames written under a lock)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            if self.fd < 0:
                return
            try:
                _write_all(self.fd, frame(kind, payload))
            except OSError:
                # The daemon is gone: nobody to tell, but the rows received
                # are still written (the daemon's stdin closing ends the loop).
                os.close(self.fd)
                self.fd = -1


class _ToDaemon(logging.Handler):
    """Send log records to the daemon, which logs them with its own handlers."""

    def __init__(self, replies: _Replies) -> None:
        super().__init__()
        self.replies = replies

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = record.exc_text
            if record.exc_info and not exc_text:
                exc_text = logging.Formatter().formatException(record.exc_info)
            data = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": record.getMessage(),
                "exc_text": exc_text,
                "created": record.created,
                "threadName": record.threadName,
            }
            self.replies.send(b"L", pickle.dumps(data))
        except Exception:
            self.handleError(record)


def _name_process() -> None:
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, PROCESS_NAME, 0, 0, 0)


def main() -> None:
    """Run the writer process (stdin: frames from the daemon; replies on the original stdout)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    _name_process()
    # Replies get a private descriptor; fd 1 becomes stderr, so a stray print
    # from a library cannot corrupt the frames.
    replies = _Replies(os.dup(1))
    os.dup2(2, 1)
    _grow_pipe(0)
    code = 0
    try:
        _serve(replies)
    except Exception:
        code = 1
        # Straight to the daemon, once: logging may not be set up yet.
        record = logging.getLogger("inotifier.daemon.eventlog").makeRecord(
            "inotifier.daemon.eventlog",
            logging.ERROR,
            __file__,
            0,
            "event log: the writer process failed",
            (),
            sys.exc_info(),
        )
        _ToDaemon(replies).emit(record)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(replies: _Replies) -> None:
    first = read_frame(0)
    if first is None:
        return  # the daemon went away before saying anything
    kind, payload = first
    if kind != b"C":
        raise ProtocolError(f"expected a configuration frame, got {kind!r}")
    config = pickle.loads(payload)
    sys.path[:] = config["sys_path"]
    if config["nice"] > 0:
        with contextlib.suppress(OSError):
            os.nice(config["nice"])

    import django
    from django.conf import settings

    database = config["database"]
    settings.configure(
        DATABASES={"default": database, config["using"]: database},
        INSTALLED_APPS=["inotifier"],
        LOGGING_CONFIG=None,
        **config["settings"],
    )
    django.setup()
    root = logging.getLogger()
    root.handlers[:] = [_ToDaemon(replies)]
    logging.getLogger("inotifier").setLevel(config["log_level"])

    from . import eventlog

    for name, value in config["tunables"].items():
        setattr(eventlog, name, value)
    store = eventlog.EventLogStore(
        config["host"], config["interval"], prune=config["prune"], using=config["using"]
    )
    wake = threading.Event()
    stop = threading.Event()
    rows = store.rows
    tails: list[tuple[int | None, str]] = []

    def receive() -> None:
        try:
            while True:
                item = read_frame(0)
                if item is None or item[0] == b"S":
                    break
                if item[0] == b"R":
                    rows.extend(eventlog.unpack_rows(item[1], tails))
                    wake.set()
        except Exception:
            logging.getLogger("inotifier.daemon.eventlog").exception(
                "event log: unreadable frame from the daemon; writing what was received and stopping"
            )
        finally:
            stop.set()
            wake.set()

    receiver = threading.Thread(target=receive, name="inotifier-log-receive", daemon=True)
    receiver.start()
    confirmed: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]

    def confirm() -> None:
        now = (store.written, store.rejected, store.lost, store.pruned)
        if now != confirmed[0]:
            replies.send(b"A", marshal.dumps(now))
            confirmed[0] = now

    store.loop(wake, stop, confirm)
    # The receiver has ended (stop is set only there): nothing more can arrive.
    receiver.join(5.0)
    confirm()
    replies.send(b"D")
