"""Starting the daemon detached or in the foreground, and stopping it by its pid file."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TextIO

from django.db import connections
from django.utils.translation import gettext as _

from ..conf import app_settings
from ..escaping import get_logger
from .dbguard import keep_connections
from .pidfile import AlreadyRunning, PidFile, PidFileError, running_pid
from .runner import Daemon

logger = get_logger("inotifier.daemon.process")


class StartError(Exception):
    """The daemon could not start; the message is the daemon's own error."""


class StopError(Exception):
    """The daemon could not be stopped; the message says why."""


def open_output(path: str | None) -> int:
    """Open a daemon output file for appending, never through a symlink, not world-writable."""
    if not path:
        return os.open(os.devnull, os.O_WRONLY)
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            message = _("refusing output file %(path)s: it is a symbolic link") % {"path": path}
            raise StartError(message) from None
        raise StartError(
            _("cannot open output file %(path)s: %(error)s") % {"path": path, "error": exc.strerror}
        ) from None


class SdNotifier:
    """Speak the sd_notify protocol to systemd when NOTIFY_SOCKET is set (no dependency)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        self.sock: socket.socket | None = None
        if address:
            if address.startswith("@"):
                address = "\0" + address[1:]
            self.address = address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def __call__(self, message: str) -> None:
        if self.sock is None or self.address is None:
            return
        try:
            if message.startswith("RELOADING=1"):
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                message = f"{message}\nMONOTONIC_USEC={usec}"
            self.sock.sendto(message.encode(), self.address)
        except OSError as exc:
            logger.warning("sd_notify %r failed: %s", message, exc)


def watchdog_interval() -> float | None:
    """Return the seconds between two WATCHDOG=1 (half of WatchdogSec=), or None when not watched.

    systemd sets WATCHDOG_USEC (and WATCHDOG_PID) for the process it watches:
    another process (a wrapper's child) is not watched. Both are removed from
    the environment, so processes the daemon starts do not take them as theirs.
    """
    usec = os.environ.pop("WATCHDOG_USEC", "")
    pid = os.environ.pop("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None


def run_foreground(verbosity: int = 1, ready: Callable[[Daemon], None] | None = None) -> int:
    """Run the daemon attached to the terminal, holding the pid file; return the exit code."""
    configure_logging(verbosity)
    pidfile = PidFile(app_settings.pid_file)
    pidfile.acquire()
    keep_connections()
    try:
        daemon = Daemon(
            on_ready=ready, notify=SdNotifier(), on_reopen=_reopener(None, None), watchdog=watchdog_interval()
        )
        logger.info("inotifier daemon started in the foreground (pid %s)", os.getpid())
        return daemon.run()
    finally:
        pidfile.release()


def _reopener(stdout_path: str | None, stderr_path: str | None) -> Callable[[], None]:
    """Return what the daemon's loop runs after SIGUSR1: reopen the output files (logrotate).

    The handler only sets a flag (``Daemon._on_usr1``); the files are reopened
    by the loop, outside the handler. Until the daemon installs its handlers,
    SIGUSR1 is ignored (its default action would kill the process).
    """
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    def reopen() -> None:
        for path, fd in ((stdout_path, 1), (stderr_path, 2)):
            if path:
                try:
                    new = open_output(path)
                except StartError as exc:
                    logger.warning("%s", exc)
                    continue
                os.dup2(new, fd)
                os.close(new)
        logger.info("output files reopened")

    return reopen


def start_daemon(verbosity: int = 1, timeout: float | None = None) -> int:
    """Start the daemon detached; return its pid once it watches. Raise StartError otherwise.

    Double fork: the grandchild is re-parented to init, has no controlling
    terminal, appends its output to the configured files, takes the pid file
    itself and says "READY" through a pipe once the first reconcile is done.
    """
    pid_path = app_settings.pid_file
    existing = running_pid(pid_path)
    if existing is not None:
        raise AlreadyRunning(pid_path, existing)
    stdout_path = app_settings.INOTIFIER_DAEMON_STDOUT
    stderr_path = app_settings.INOTIFIER_DAEMON_STDERR
    # Fail here, with a clear message, rather than in a detached child.
    os.close(open_output(stdout_path))
    os.close(open_output(stderr_path))
    timeout = float(timeout or app_settings.INOTIFIER_START_TIMEOUT)
    # No database connection may cross a fork.
    connections.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # first child
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _daemon_main(write_fd, stdout_path, stderr_path, verbosity)
        except BaseException:
            try:
                os.write(write_fd, ("ERROR " + traceback.format_exc()).encode())
            except OSError:
                pass
            os._exit(1)
        os._exit(0)
    os.close(write_fd)
    os.waitpid(child, 0)
    return _wait_ready(read_fd, timeout, stderr_path)


def _wait_ready(read_fd: int, timeout: float, stderr_path: str | None) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    exited = False
    try:
        while time.monotonic() < deadline:
            import select

            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                exited = True
                break
            data += chunk
            if data.startswith(b"READY ") and data.endswith(b"\n"):
                return int(data.split()[1])
    finally:
        os.close(read_fd)
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("ERROR "):
        raise StartError(text[6:])
    if exited:
        if stderr_path:
            raise StartError(_("the daemon exited during start-up (see %(path)s)") % {"path": stderr_path})
        raise StartError(_("the daemon exited during start-up"))
    raise StartError(
        _(
            "the daemon did not report it is watching within %(timeout).0f s; it goes on "
            "starting in the background (see inotifier_status%(also)s)"
        )
        % {"timeout": timeout, "also": f" and {stderr_path}" if stderr_path else ""}
    )


def _daemon_main(write_fd: int, stdout_path: str | None, stderr_path: str | None, verbosity: int) -> None:
    """Body of the detached grandchild: never returns normally (os._exit)."""
    os.chdir("/")
    os.umask(0o022)
    out = open_output(stdout_path)
    err = open_output(stderr_path)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (null, out, err):
        os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    configure_logging(verbosity, sys.stderr)
    reopen = _reopener(stdout_path, stderr_path)
    pidfile = PidFile(app_settings.pid_file)
    try:
        pidfile.acquire()
    except PidFileError as exc:
        os.write(write_fd, f"ERROR {exc}".encode())
        os._exit(1)

    pipe = [write_fd]  # emptied once closed: the number may be reused by another file

    def ready(daemon: Daemon) -> None:
        logger.info("inotifier daemon started (pid %s)", os.getpid())
        fd = pipe.pop()
        try:
            os.write(fd, f"READY {os.getpid()}\n".encode())
        except BrokenPipeError:
            logger.warning("inotifier_start stopped waiting before the daemon was ready; it runs on")
        finally:
            os.close(fd)

    code = 1
    keep_connections()
    try:
        notify = SdNotifier()
        code = Daemon(on_ready=ready, notify=notify, on_reopen=reopen, watchdog=watchdog_interval()).run()
    except BaseException as exc:
        logger.exception("the daemon failed")
        if pipe:
            try:
                os.write(pipe[0], f"ERROR {type(exc).__name__}: {exc}".encode())
            except OSError:
                pass
    finally:
        pidfile.release()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def stop_daemon(timeout: float = 10.0) -> tuple[int, bool]:
    """Stop the daemon of this host; return (pid, killed). Raise StopError when none runs.

    The pid is signalled only when it holds the lock on the pid file: a pid
    file left by a killed daemon, whose number now belongs to another process,
    is never acted upon.
    """
    path = app_settings.pid_file
    if os.path.islink(path):
        raise StopError(_("refusing pid file %(path)s: it is a symbolic link") % {"path": path})
    pid = running_pid(path)
    if pid is None:
        from .pidfile import read_pid

        written = read_pid(path)
        if written is not None:
            _remove_stale(path)
            raise StopError(
                _(
                    "inotifier is not running: stale pid file %(path)s (pid %(pid)s is not an "
                    "inotifier daemon) removed; no process was signalled"
                )
                % {"path": path, "pid": written}
            )
        raise StopError(_("inotifier is not running (no pid file at %(path)s)") % {"path": path})
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) or running_pid(path) != pid:
            _wait_gone(pid, 2.0)
            return pid, False
        time.sleep(0.02)
    logger.warning("daemon %s did not stop within %.0f s; sending SIGKILL", pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _wait_gone(pid, 5.0)
    _remove_stale(path)
    return pid, True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.01)


def _remove_stale(path: str) -> None:
    if running_pid(path) is None:
        try:
            os.unlink(path)
        except OSError:
            pass


def configure_logging(verbosity: int = 1, stream: TextIO | None = None) -> None:
    """Send the ``inotifier`` loggers to stderr when the project configured no handler."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root_logger = logging.getLogger("inotifier")
    root_logger.setLevel(level)
    if not root_logger.handlers and not logging.getLogger().handlers:
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        )
        root_logger.addHandler(handler)
    # pyinotify attaches a stderr handler of its own and propagates: one line, not two.
    pyinotify_logger = logging.getLogger("pyinotify")
    for handler in list(pyinotify_logger.handlers):
        pyinotify_logger.removeHandler(handler)
