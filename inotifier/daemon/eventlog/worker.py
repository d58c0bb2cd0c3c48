"""The writer process (``inotifier-log``): rows from the daemon in, database writes out, off its GIL.

Started by ``link.WorkerLink`` as ``python -c ... main()``. It ignores SIGINT,
SIGTERM, SIGHUP and SIGUSR1/2: a Ctrl-C or a service manager signalling the
whole group must not lose its rows. It ends when the daemon says stop or when
its stdin closes (the daemon died), after writing what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import pickle
import signal
import sys
import threading

from . import protocol

PR_SET_NAME = 15
PROCESS_NAME = b"inotifier-log"
LOGGER = "inotifier.daemon.eventlog"


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
                protocol.write_all(self.fd, protocol.frame(kind, payload))
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
            self.replies.send(protocol.LOG, pickle.dumps(data))
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
    protocol.grow_pipe(0)
    code = 0
    try:
        _serve(replies)
    except Exception:
        code = 1
        # Straight to the daemon, once: logging may not be set up yet.
        record = logging.getLogger(LOGGER).makeRecord(
            LOGGER, logging.ERROR, __file__, 0, "event log: the writer process failed", (), sys.exc_info()
        )
        _ToDaemon(replies).emit(record)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(replies: _Replies) -> None:
    first = protocol.read_frame(0)
    if first is None:
        return  # the daemon went away before saying anything
    kind, payload = first
    if kind != protocol.CONFIG:
        raise protocol.ProtocolError(f"expected a configuration frame, got {kind!r}")
    config = pickle.loads(payload)  # a StoreConfig: the one object the daemon built from its settings
    sys.path[:] = list(config.sys_path)
    if config.nice > 0:
        with contextlib.suppress(OSError):
            os.nice(config.nice)

    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": config.database, config.using: config.database},
        INSTALLED_APPS=["inotifier"],
        LOGGING_CONFIG=None,
        **config.django_settings,
    )
    django.setup()
    logging.getLogger().handlers[:] = [_ToDaemon(replies)]
    logging.getLogger("inotifier").setLevel(config.log_level)

    from .rows import Tail, unpack_rows
    from .store import EventLogStore

    store = EventLogStore(config)
    wake = threading.Event()
    stop = threading.Event()
    rows = store.rows
    tails: list[Tail] = []

    def receive() -> None:
        try:
            while True:
                item = protocol.read_frame(0)
                if item is None or item[0] == protocol.STOP:
                    break
                if item[0] == protocol.ROWS:
                    rows.extend(unpack_rows(item[1], tails))
                    wake.set()
        except Exception:
            logging.getLogger(LOGGER).exception(
                "event log: unreadable frame from the daemon; writing what was received and stopping"
            )
        finally:
            stop.set()
            wake.set()

    receiver = threading.Thread(target=receive, name="inotifier-log-receive", daemon=True)
    receiver.start()
    tally = store.tally
    confirmed: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]

    def confirm() -> None:
        now = (tally.written, tally.rejected, tally.lost, tally.pruned)
        if now != confirmed[0]:
            replies.send(protocol.DONE_SO_FAR, marshal.dumps(now))
            confirmed[0] = now

    store.loop(wake, stop, confirm)
    # The receiver has ended (stop is set only there): nothing more can arrive.
    receiver.join(5.0)
    confirm()
    replies.send(protocol.DONE)
