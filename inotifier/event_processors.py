"""Built-in event processors: pyinotify ``ProcessEvent`` classes that print or send signals."""

from __future__ import annotations

import abc
import copy
import sys
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from types import FunctionType
from typing import Any, TextIO

import pyinotify
from django.dispatch import Signal

from . import handoff, signals
from .conf import app_settings
from .handoff.engines import TaskRefError, load_task

_NOT_ISDIR = ~pyinotify.IN_ISDIR
#: Event bits (IN_ISDIR stripped) -> pyinotify's two method names for them: the
#: specific one and the family one (process_IN_CLOSE for both closes,
#: process_IN_MOVED for both moves, process_IN_DELETE for IN_DELETE_SELF too).
_METHOD_NAMES: dict[int, tuple[str, str]] = {
    bit: ("process_" + name, "process_IN_" + name.split("_")[1])
    for bit, name in pyinotify.EventsCodes.ALL_VALUES.items()
    if bit != pyinotify.IN_ISDIR
}
#: Every name the lookup may try.
_ALL_METHOD_NAMES: frozenset[str] = frozenset(
    {name for names in _METHOD_NAMES.values() for name in names} | {"process_default"}
)
#: pyinotify's dispatch without pevent chaining: raises ProcessEventError for a mask it cannot name.
_pyinotify_dispatch: Callable[[Any, Any], Any] = pyinotify._ProcessEvent.__call__
#: pyinotify's ProcessEvent.process_default does nothing: calling it can be skipped.
_NOOP_DEFAULT = pyinotify.ProcessEvent.process_default
#: The methods that do nothing but send a signal -> that signal (the dispatch sends it directly).
_SENDS: dict[Callable[..., Any], Signal] = {}

#: What ``__call__`` does for one kind of event: (signal to send, or method name to call);
#: (None, None) does nothing.
_Entry = tuple[Signal | None, str | None]


def _signal_method(event_name: str) -> Callable[[Any, pyinotify.Event], None]:
    """Return a ``process_<event_name>`` method that sends the matching signal."""
    signal = signals.SIGNALS[event_name]

    def method(self: Any, event: pyinotify.Event) -> None:
        signal.send(sender=self, event=event)

    method.__name__ = method.__qualname__ = f"process_{event_name}"
    method.__doc__ = f"Send ``inotifier.signals.{event_name.lower()}`` with ``sender=self, event=event``."
    _SENDS[method] = signal
    return method


def _set_on_instance(obj: object, name: str) -> bool:
    """Return True when ``obj`` has its own ``name``, not the one of its class.

    Compared by identity rather than with ``vars(obj)``: on CPython, reading an
    instance's ``__dict__`` makes every later attribute access on it slower (twice
    as slow on 3.11), and the processor's attributes are read at every event.
    """
    found = getattr(obj, name, None)
    declared = getattr(type(obj), name, None)
    return getattr(found, "__func__", found) is not getattr(declared, "__func__", declared)


def _dispatch_table(owner: object) -> dict[int, _Entry]:
    """Return, per event bits, what pyinotify's lookup would call on ``owner`` (a class or instance).

    The lookup order is pyinotify's: ``process_<MASKNAME>``, then the family
    method, then ``process_default``; an attribute set to None is skipped, as
    pyinotify skips it. A method that only sends a signal becomes that signal.
    """
    cls = owner if isinstance(owner, type) else type(owner)
    own = set() if owner is cls else {n for n in _ALL_METHOD_NAMES if _set_on_instance(owner, n)}
    table: dict[int, _Entry] = {}
    for bit, (specific, family) in _METHOD_NAMES.items():
        name = "process_default"
        for candidate in (specific, family):
            if getattr(owner, candidate, None) is not None:
                name = candidate
                break
        if name in own:  # set on the instance (in my_init): looked up at each call
            table[bit] = (None, name)
            continue
        found = getattr(cls, name, None)
        signal = _SENDS.get(found) if isinstance(found, FunctionType) else None
        if signal is not None:
            table[bit] = (signal, None)
        elif found is _NOOP_DEFAULT:
            table[bit] = (None, None)
        else:
            table[bit] = (None, name)
    return table


class _DispatchMeta(abc.ABCMeta):
    """Keep each processor class's dispatch table equal to its methods.

    The table is built when the class is made, and again (for the class and its
    subclasses) whenever a ``process_*`` attribute is set or deleted on it later,
    as ``mock.patch.object`` does. Based on ABCMeta so that a subclass may still
    mix in ``abc.ABC`` (two unrelated metaclasses could not be combined).
    """

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], /, **kw: Any) -> None:
        super().__init__(name, bases, namespace, **kw)
        cls._inotifier_dispatch = _dispatch_table(cls)

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name.startswith("process_"):
            cls._rebuild_dispatch()

    def __delattr__(cls, name: str) -> None:
        super().__delattr__(name)
        if name.startswith("process_"):
            cls._rebuild_dispatch()

    def _rebuild_dispatch(cls) -> None:
        stack: list[type] = [cls]
        while stack:
            klass = stack.pop()
            type.__setattr__(klass, "_inotifier_dispatch", _dispatch_table(klass))
            stack.extend(type.__subclasses__(klass))


class _TableDispatch(pyinotify.ProcessEvent, metaclass=_DispatchMeta):
    """A ``ProcessEvent`` whose ``__call__`` looks its method up in a table built once per class.

    It calls exactly what pyinotify's ``ProcessEvent.__call__`` would (``pevent``
    first, then ``process_<MASKNAME>``, the family method, ``process_default``),
    without building method names for every event; a method that only sends a
    signal is skipped and the signal sent directly. This is the daemon's
    per-event hot path.
    """

    _inotifier_dispatch: dict[int, _Entry]

    def __init__(self, pevent: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(pevent, **kwargs)
        # Methods set on the instance (in my_init) win over the class's, as in pyinotify.
        if any(_set_on_instance(self, name) for name in _ALL_METHOD_NAMES):
            self._inotifier_dispatch = _dispatch_table(self)

    def __call__(self, event: pyinotify.Event) -> Any:
        pevent = self.pevent
        if pevent is not None and pevent(event):
            return None
        entry = self._inotifier_dispatch.get(event.mask & _NOT_ISDIR)
        if entry is None:  # several events in one mask: pyinotify's own answer (ProcessEventError)
            return _pyinotify_dispatch(self, event)
        signal, name = entry
        if signal is not None:
            signal.send(sender=self, event=event)
            return None
        if name is not None:
            return getattr(self, name)(event)
        return None


class AllEventsPrinter(_TableDispatch):
    """Print every event on stdout (or the ``out=`` stream), one line each.

    Each ``process_IN_*`` method calls ``process_default``, which prints
    ``MASKNAME 'pathname'``: override it to change the format.
    """

    def my_init(self, out: TextIO | None = None, **kwargs: Any) -> None:
        self._out = out

    def process_default(self, event: pyinotify.Event) -> None:
        """Print ``MASKNAME 'pathname'`` and flush."""
        out = self._out or sys.stdout
        out.write(f"{event.maskname} {getattr(event, 'pathname', '')!r}\n")
        out.flush()

    def process_IN_ACCESS(self, event: pyinotify.Event) -> None:
        """Print a file that was read."""
        self.process_default(event)

    def process_IN_ATTRIB(self, event: pyinotify.Event) -> None:
        """Print a change of metadata (permissions, owner, times, links)."""
        self.process_default(event)

    def process_IN_CLOSE_NOWRITE(self, event: pyinotify.Event) -> None:
        """Print a file closed after reading."""
        self.process_default(event)

    def process_IN_CLOSE_WRITE(self, event: pyinotify.Event) -> None:
        """Print a file closed after writing."""
        self.process_default(event)

    def process_IN_CREATE(self, event: pyinotify.Event) -> None:
        """Print a created file or directory."""
        self.process_default(event)

    def process_IN_DELETE(self, event: pyinotify.Event) -> None:
        """Print a deleted file or directory."""
        self.process_default(event)

    def process_IN_DELETE_SELF(self, event: pyinotify.Event) -> None:
        """Print the deletion of a watched directory itself."""
        self.process_default(event)

    def process_IN_IGNORED(self, event: pyinotify.Event) -> None:
        """Print the end of a kernel watch."""
        self.process_default(event)

    def process_IN_MODIFY(self, event: pyinotify.Event) -> None:
        """Print a file that was written to."""
        self.process_default(event)

    def process_IN_MOVE_SELF(self, event: pyinotify.Event) -> None:
        """Print the move of a watched directory itself."""
        self.process_default(event)

    def process_IN_MOVED_FROM(self, event: pyinotify.Event) -> None:
        """Print an entry moved away."""
        self.process_default(event)

    def process_IN_MOVED_TO(self, event: pyinotify.Event) -> None:
        """Print an entry moved in."""
        self.process_default(event)

    def process_IN_OPEN(self, event: pyinotify.Event) -> None:
        """Print an opened file or directory."""
        self.process_default(event)

    def process_IN_Q_OVERFLOW(self, event: pyinotify.Event) -> None:
        """Print a kernel queue overflow (events were lost)."""
        self.process_default(event)

    def process_IN_UNMOUNT(self, event: pyinotify.Event) -> None:
        """Print the unmounting of the watched file system."""
        self.process_default(event)


class AllEventsSignaler(_TableDispatch):
    """Send the matching ``inotifier.signals`` signal for every event.

    One ``process_IN_*`` method per event, each sending its signal, as in the
    2010 app: a subclass may override any of them and call ``super()``.
    """

    process_IN_ACCESS = _signal_method("IN_ACCESS")
    process_IN_ATTRIB = _signal_method("IN_ATTRIB")
    process_IN_CLOSE_NOWRITE = _signal_method("IN_CLOSE_NOWRITE")
    process_IN_CLOSE_WRITE = _signal_method("IN_CLOSE_WRITE")
    process_IN_CREATE = _signal_method("IN_CREATE")
    process_IN_DELETE = _signal_method("IN_DELETE")
    process_IN_DELETE_SELF = _signal_method("IN_DELETE_SELF")
    process_IN_IGNORED = _signal_method("IN_IGNORED")
    process_IN_MODIFY = _signal_method("IN_MODIFY")
    process_IN_MOVE_SELF = _signal_method("IN_MOVE_SELF")
    process_IN_MOVED_FROM = _signal_method("IN_MOVED_FROM")
    process_IN_MOVED_TO = _signal_method("IN_MOVED_TO")
    process_IN_OPEN = _signal_method("IN_OPEN")
    process_IN_Q_OVERFLOW = _signal_method("IN_Q_OVERFLOW")
    process_IN_UNMOUNT = _signal_method("IN_UNMOUNT")


class CreateSignaler(_TableDispatch):
    """Send ``inotifier.signals.in_create`` for IN_CREATE events only (and ``in_q_overflow``)."""

    process_IN_CREATE = _signal_method("IN_CREATE")
    process_IN_Q_OVERFLOW = _signal_method("IN_Q_OVERFLOW")


class _Now:
    """One reading of the clocks, to measure how old ``temp_files`` entries are."""

    def __init__(self) -> None:
        self.monotonic = time.monotonic()
        self._naive: datetime | None = None
        self._aware: datetime | None = None

    def age(self, started: object) -> float:
        """Return the seconds since ``started`` (a datetime; ours also carry the monotonic time)."""
        monotonic = getattr(started, "monotonic", None)
        if isinstance(monotonic, float):
            return self.monotonic - monotonic
        if not isinstance(started, datetime):
            raise TypeError(f"temp_files values must be datetimes, not {started!r}")
        if started.tzinfo is None:
            self._naive = self._naive or datetime.now()
            return (self._naive - started).total_seconds()
        self._aware = self._aware or datetime.now(UTC)
        return (self._aware - started).total_seconds()


class _Started(datetime):
    """When a temporary file was created: ``datetime.now()`` (naive, local, as in the 2010 app).

    It also carries the monotonic clock's reading, so the expiry is exact even
    when the wall clock moves (daylight saving time on a server on local time).
    """

    monotonic: float

    @classmethod
    def stamp(cls) -> _Started:
        started = cls.now()
        started.monotonic = time.monotonic()
        return started


def _seconds(value: object, owner: str, attribute: str) -> float:
    """Return a duration given as a timedelta or a number of seconds; raise naming the attribute."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{owner}.{attribute} must be a timedelta or a number of seconds, not {value!r}")
    if not seconds > 0:
        raise ValueError(f"{owner}.{attribute} must be positive, not {value!r}")
    return seconds


class CreateViaChunksSignaler(_TableDispatch):
    """Send ``in_create`` once a file arrived through a temporary ``name.part`` file.

    A transfer creates ``name.part``, writes it chunk by chunk, closes it and
    renames it to ``name``. The signal is sent for the final file (the event is
    the IN_MOVED_TO of ``name``, with ``src_pathname`` set) only when the whole
    flow was seen: a ``.part`` file that was not created while watched, or a
    rename to another name, sends nothing. The watch mask needs IN_CREATE,
    IN_MOVED_FROM and IN_MOVED_TO.

    The 2010 app's attributes work as they did, as class attributes or set in
    ``my_init``: ``temp_files`` is the live dict of half-done uploads (pathname
    of the temporary file -> ``datetime.now()`` at its IN_CREATE), and
    ``max_allowed_age`` (a timedelta or seconds) how long one is remembered.
    """

    #: Suffix of the temporary file; None reads INOTIFIER_CHUNK_SUFFIX.
    suffix: str | None = None
    #: How long a half-done upload is remembered (a timedelta or seconds). None: ``timeout``.
    max_allowed_age: timedelta | float | None = None
    #: The same in seconds (this app's earlier name); None reads INOTIFIER_CHUNK_TIMEOUT.
    timeout: float | None = None
    #: Half-done uploads, pathname of the temporary file -> when it was created.
    #: A mapping set here is copied for each instance (each watch has its own).
    temp_files: MutableMapping[str, datetime] = None  # type: ignore[assignment]  # a dict once created

    def __init__(self, pevent: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(pevent, **kwargs)
        # After my_init, which a subclass may have replaced without calling ours:
        # fill in what it left unset and refuse what cannot be honoured.
        self._settle_attributes()

    def my_init(
        self,
        suffix: str | None = None,
        timeout: float | None = None,
        max_allowed_age: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        if suffix is not None:
            self.suffix = suffix
        if timeout is not None:
            self.timeout = timeout
        if max_allowed_age is not None:
            self.max_allowed_age = max_allowed_age

    def _settle_attributes(self) -> None:
        owner = type(self).__name__
        suffix = self.suffix
        if suffix is None:
            suffix = self.suffix = str(app_settings.INOTIFIER_CHUNK_SUFFIX)
        if not isinstance(suffix, str) or not suffix:
            raise ValueError(f"{owner} needs a non-empty suffix, not {suffix!r}")
        seconds = self._resolve_max_age(owner)
        # Both names hold the effective value from now on; max_allowed_age is
        # read at each use, so a subclass may still change it (as in 2010).
        self.max_allowed_age = timedelta(seconds=seconds)
        self.timeout = seconds
        declared = type(self).temp_files
        if self.temp_files is declared:
            # A mapping declared on the class is copied: watches never share uploads.
            self.temp_files = {} if declared is None else copy.copy(declared)
        if not isinstance(self.temp_files, MutableMapping):
            raise TypeError(
                f"{owner}.temp_files must be a dict (pathname -> datetime), not {self.temp_files!r}"
            )
        self._next_expiry = 0.0

    def _resolve_max_age(self, owner: str) -> float:
        # The most specific place that sets either name decides: the instance
        # (my_init, arguments), then each class along the MRO; in one place the
        # two names must agree.
        cls = type(self)
        own = {
            name: getattr(self, name)
            for name in ("max_allowed_age", "timeout")
            if getattr(self, name) is not getattr(cls, name)
        }
        for namespace in (own, *(vars(klass) for klass in cls.__mro__)):
            age, timeout = namespace.get("max_allowed_age"), namespace.get("timeout")
            if age is None and timeout is None:
                continue
            if age is None:
                return _seconds(timeout, owner, "timeout")
            seconds = _seconds(age, owner, "max_allowed_age")
            if timeout is not None and _seconds(timeout, owner, "timeout") != seconds:
                raise ValueError(
                    f"{owner}: max_allowed_age ({age!r}) and timeout ({timeout!r}) disagree; set one"
                )
            return seconds
        return _seconds(app_settings.INOTIFIER_CHUNK_TIMEOUT, "settings", "INOTIFIER_CHUNK_TIMEOUT")

    def pending(self) -> int:
        """Return how many half-done uploads are remembered."""
        return len(self.temp_files)

    def sleepshop(self) -> None:
        """Forget the half-done uploads older than ``max_allowed_age`` (the 2010 app's name)."""
        limit = _seconds(self.max_allowed_age, type(self).__name__, "max_allowed_age")
        temp_files = self.temp_files
        now = _Now()
        for pathname in [p for p, started in temp_files.items() if now.age(started) > limit]:
            del temp_files[pathname]
        self._next_expiry = now.monotonic + min(limit, 60.0)

    def process_IN_CREATE(self, event: pyinotify.Event) -> None:
        """Remember a temporary file (``name`` + suffix) created in the watched directory."""
        if not event.dir and event.name.endswith(self.suffix or ""):
            if time.monotonic() >= self._next_expiry:
                self.sleepshop()
            self.temp_files[event.pathname] = _Started.stamp()

    def process_IN_DELETE(self, event: pyinotify.Event) -> None:
        """Forget a temporary file deleted before it was renamed."""
        self.temp_files.pop(event.pathname, None)

    def process_IN_MOVED_TO(self, event: pyinotify.Event) -> None:
        """Send ``in_create`` when a remembered temporary file was renamed to its final name."""
        source = getattr(event, "src_pathname", None)
        if source is None:
            return
        started = self.temp_files.pop(source, None)
        if started is None or source != event.pathname + (self.suffix or ""):
            return
        limit = _seconds(self.max_allowed_age, type(self).__name__, "max_allowed_age")
        if _Now().age(started) <= limit:
            signals.in_create.send(sender=self, event=event)

    process_IN_Q_OVERFLOW = _signal_method("IN_Q_OVERFLOW")


class TaskDispatcher(_TableDispatch):
    """Hand each event to a task queue, durably: a subclass names the task, nothing else.

    ::

        class Thumbnails(TaskDispatcher):
            task = "media.tasks.make_thumbnail"  # @shared_task, or @task of django.tasks

    The task is called with one keyword argument, ``event``: a JSON dict (see
    ``inotifier.handoff.build_payload`` and docs/delivery.md). The processor
    never calls the broker: in the daemon each event is appended to the
    outbox's memory buffer (the read loop's only cost), written to the database
    in batches by a thread, and handed to the engine by the dispatcher, which
    retries until the engine accepted it. Outside the daemon (pyinotify's own
    Notifier, a shell) each event is written to the outbox at once, and the
    next daemon that runs hands it off.

    Every event the watch delivers is handed off except ``IN_IGNORED`` and
    ``IN_Q_OVERFLOW`` (which carry no file); override a ``process_*`` method to
    skip more (``def process_IN_DELETE(self, event): pass``) and call
    ``self.hand_off(event)`` where you want it. The task is checked when the
    processor is created: a path that names no task is an error naming the
    class and the path (the watch is *error*, the others go on).
    """

    #: Dotted path of the task: a Celery task, or a task of Django's tasks framework.
    task: str | None = None

    def __init__(self, pevent: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(pevent, **kwargs)
        owner = type(self).__name__
        if not self.task:
            raise ValueError(
                f"{owner}.task is not set: name the task to call as a dotted path "
                "(task = 'myapp.tasks.process_file')"
            )
        try:
            load_task(self.task)
        except TaskRefError as exc:
            raise ValueError(f"{owner}.task: {exc}") from None
        self._ref = handoff.WatchRef(str(self.task), "", "", None, app_settings.hostname)
        self._sink: handoff.Sink | None = None
        #: (sequence number, time) of the rows appended and maybe not durable yet, oldest first.
        self._unsure: deque[tuple[int, float]] = deque()

    def inotifier_bind(self, key: str, label: str, watch_id: int | None, host: str) -> None:
        """Learn the watch this processor serves (the daemon calls it once it is created)."""
        self._ref = handoff.WatchRef(str(self.task), key, label, watch_id, host)
        self._sink = sink = handoff.current()
        self._unsure.clear()
        sink.used()

    def hand_off(self, event: pyinotify.Event) -> None:
        """Append ``event`` to the outbox (blocking only while the daemon's outbox is full)."""
        sink = self._sink
        if sink is None:
            sink = self._sink = handoff.current()
        now = time.time()
        seq = sink.append(
            handoff.Pending(
                self._ref,
                event.pathname,
                event.path,
                event.name,
                event.mask,
                event.maskname,
                event.dir,
                getattr(event, "src_pathname", None),
                getattr(event, "synthetic", False),
                getattr(event, "count", 1),
                now,
            )
        )
        committed = sink.committed
        unsure = self._unsure
        if seq >= committed:
            unsure.append((seq, now))
        # Forget what became durable as we go: the deque stays within the buffer's bound
        # even when no one asks for inotifier_pending_since().
        while unsure and unsure[0][0] < committed:
            unsure.popleft()

    process_default = hand_off

    def process_IN_IGNORED(self, event: pyinotify.Event) -> None:
        """Hand nothing off: the kernel dropped a watch, no file is concerned."""

    def process_IN_Q_OVERFLOW(self, event: pyinotify.Event) -> None:
        """Hand nothing off: see ``inotifier.signals.in_q_overflow`` and catch-up."""

    def inotifier_pending_since(self) -> float | None:
        """Return the ``time.time()`` of the oldest event accepted and not yet durable, or None.

        Durable means written and committed to the outbox table. A catch-up
        watermark never passes it, so events lost with the daemon's memory (a
        ``kill -9``) are found again at the next start.
        """
        unsure = self._unsure
        if not unsure:
            return None
        sink = self._sink
        committed = sink.committed if sink is not None else 0
        while unsure and unsure[0][0] < committed:
            unsure.popleft()
        return unsure[0][1] if unsure else None


#: The processors an admin may pick when INOTIFIER_PROCESSORS is not set.
BUILTIN_PROCESSORS: tuple[str, ...] = (
    "inotifier.event_processors.AllEventsSignaler",
    "inotifier.event_processors.CreateSignaler",
    "inotifier.event_processors.CreateViaChunksSignaler",
    "inotifier.event_processors.AllEventsPrinter",
)
