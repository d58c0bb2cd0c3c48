"""Shared pieces of the benchmark: constants, the line protocol, the contexts.

Every contender runs in its own subprocess (``python -m bench.consumer``).
It talks to the harness with lines on a private copy of stdout:

``READY <pid>``
    The watch is in place; ``pid`` is the process that reads the inotify fd
    (the harness SIGSTOPs/SIGCONTs it in the drain scenario and counts its
    kernel watches in /proc/<pid>/fdinfo).
``CYCLE <k> <t_ns>``
    Drain scenario: all events of fill cycle ``k`` were handled at ``t_ns``.
``RESULT <json>``
    Final report; the process exits right after.

All timestamps are ``time.monotonic_ns()``, i.e. the system-wide
CLOCK_MONOTONIC, so they compare across processes.

The writer creates files (open, write, close: ``EVENTS_PER_FILE`` events each)
and the harness ends a stream by creating a *directory* named
``SENTINEL_PREFIX...`` in the watched directory: any event with ``IN_ISDIR``
is the end sentinel (the writer never creates directories).
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# inotify(7) constants (the same on every Linux architecture).
IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_OPEN = 0x00000020
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_ISDIR = 0x40000000

#: Events watched by every stream contender: what open+write+close raises.
FILE_MASK = IN_CREATE | IN_OPEN | IN_MODIFY | IN_CLOSE_WRITE
#: inotifywait spelling of ``FILE_MASK``.
INOTIFYWAIT_EVENTS = ("create", "open", "modify", "close_write")
EVENTS_PER_FILE = 4
SENTINEL_PREFIX = "stop-"

STREAM_MODES = ("drain", "burst", "latency")


class Channel:
    """Thread-safe writer of protocol lines on a file descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    @property
    def fd(self) -> int:
        return self._fd

    def send(self, line: str) -> None:
        data = (line + "\n").encode()
        with self._lock:
            while data:
                data = data[os.write(self._fd, data) :]


class Recorder:
    """Counts what a stream contender handled; cheap enough for the hot path.

    Contenders call, per kernel event they handled:

    * ``hit(name)`` for a file event (``name``: the file's base name; it is
      used only in latency mode, where it holds the writer's timestamp);
    * ``hit_many(n)`` for ``n`` file events at once (not in latency mode);
    * ``sentinel()`` for any directory event (the harness's end marker);
    * ``overflow()`` for an ``IN_Q_OVERFLOW``.

    ``finished`` turns true when all expected events were handled or the
    sentinel was seen; a contender may poll it to leave its loop, but need
    not: the consumer's monitor thread reports and exits the process anyway.
    """

    def __init__(self, mode: str, expected: int, per_cycle: int, channel: Channel) -> None:
        if mode not in STREAM_MODES:
            raise ValueError(f"unknown stream mode {mode!r}")
        self.mode = mode
        self.expected = expected
        self.per_cycle = per_cycle if mode == "drain" else 0
        self.count = 0
        self.overflows = 0
        self.finished = False
        self.reason = ""
        self.t_ready = 0
        self.t_first = 0
        self.t_last = 0
        self.latencies_ns: list[int] = []
        self.extras: dict[str, float] = {}
        #: False for contenders that cannot see IN_Q_OVERFLOW (reported as n/a).
        self.overflow_visible = True
        self._cycle = 0
        self._next_mark = 1
        self._seen: set[str] = set()
        self._channel = channel
        if mode == "latency":
            self.hit = self._hit_latency  # type: ignore[method-assign]

    # -- hot path ---------------------------------------------------------
    def hit(self, name: str | None = None) -> None:
        """One file event handled."""
        self.count += 1
        self.t_last = time.monotonic_ns()
        if self.count >= self._next_mark:
            self._mark()

    def hit_many(self, n: int) -> None:
        """``n`` file events handled at once (throughput modes only)."""
        if n <= 0:
            return
        self.count += n
        self.t_last = time.monotonic_ns()
        if self.count >= self._next_mark:
            self._mark()

    def _hit_latency(self, name: str | None = None) -> None:
        now = time.monotonic_ns()
        if name is not None and name not in self._seen:
            self._seen.add(name)
            if name.isdigit():
                self.latencies_ns.append(now - int(name))
        self.count += 1
        self.t_last = now
        if self.count >= self._next_mark:
            self._mark()

    def sentinel(self) -> None:
        """The end sentinel (a directory event) was seen."""
        if not self.finished:
            self.reason = "sentinel"
            self.finished = True

    def overflow(self) -> None:
        """An IN_Q_OVERFLOW was seen."""
        self.overflows += 1

    # -- bookkeeping --------------------------------------------------------
    def _mark(self) -> None:
        if not self.t_first:
            self.t_first = self.t_last
        while self.per_cycle and self.count >= (self._cycle + 1) * self.per_cycle:
            self._channel.send(f"CYCLE {self._cycle} {self.t_last}")
            self._cycle += 1
        if self.count >= self.expected:
            self.reason = self.reason or "complete"
            self.finished = True
            self._next_mark = 1 << 62
        elif self.per_cycle:
            self._next_mark = (self._cycle + 1) * self.per_cycle
        else:
            self._next_mark = self.expected

    def report(self) -> dict[str, Any]:
        return {
            "received": self.count,
            "overflows": self.overflows if self.overflow_visible else None,
            "reason": self.reason,
            "t_ready": self.t_ready,
            "t_first": self.t_first,
            "t_last": self.t_last,
            "latencies_ns": self.latencies_ns,
            "extras": self.extras,
        }


@dataclass
class StreamContext:
    """What a stream contender (drain, burst and latency scenarios) gets.

    The contender watches ``path`` for ``mask`` (non-recursively), calls
    ``ready()`` once the watch is in place, then handles events forever,
    reporting each to ``rec``.  It may return once ``rec.finished`` is true.
    The consumer's monitor thread ends the process when ``rec.finished``
    turns true, after ``idle_s`` without a new event, ``start_timeout_s``
    after ``ready()`` without any, or ``hard_timeout_s`` after the start.
    """

    mode: str
    path: str
    mask: int
    rec: Recorder
    workdir: str
    options: dict[str, str]
    channel: Channel
    idle_s: float
    start_timeout_s: float
    hard_timeout_s: float
    on_finish: list[Callable[[], None]] = field(default_factory=list)

    def ready(self, pid: int | None = None) -> None:
        """Announce that the watch is in place (``pid``: the reading process)."""
        self.rec.t_ready = time.monotonic_ns()
        self.channel.send(f"READY {pid or os.getpid()}")

    def at_finish(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in the monitor thread) before the report is sent,
        e.g. to wait for rows to reach a table and put figures in
        ``rec.extras``."""
        self.on_finish.append(callback)


@dataclass
class SetupResult:
    """Returned by a recursive-setup contender.

    ``keep`` holds whatever keeps the watches alive (watch manager, observer,
    child process) while the harness measures.  Contenders that watch from
    another process give its ``pid`` and their own measurements.
    """

    keep: Any
    pid: int | None = None
    setup_ns: int | None = None
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None


@dataclass
class SetupContext:
    """What a recursive-setup contender gets: watch every directory under
    ``root`` (``dirs`` directories, root included) for ``mask``.

    Call ``begin()`` right before the timed part (after imports and
    configuration); the harness takes time and VmRSS there and again when the
    function returns.
    """

    root: str
    mask: int
    dirs: int
    workdir: str
    options: dict[str, str]
    channel: Channel
    t_begin: int = 0
    rss_begin_kb: int = 0

    def begin(self) -> None:
        gc.collect()
        self.rss_begin_kb = vm_rss_kb()
        self.t_begin = time.monotonic_ns()


@dataclass
class TaskContext:
    """What a project task (reload, reconcile, admin) gets: scratch
    directories on disk (``workdir``) and on tmpfs (``shm``), the quick flag
    and ``--opt`` options.  The task returns ``{metric: value}``."""

    workdir: str
    shm: str
    quick: bool
    options: dict[str, str]


class Skip(Exception):
    """Raised by a contender that cannot run here (missing tool, service...)."""


# -- /proc helpers ---------------------------------------------------------


def vm_rss_kb(pid: int | str = "self") -> int:
    """Resident set size of ``pid`` in kB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def inotify_watch_count(pid: int) -> int:
    """Kernel watches held by all inotify instances of ``pid``."""
    total = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                total += sum(1 for line in fh if line.startswith("inotify wd:"))
        except OSError:
            continue
    return total


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))
