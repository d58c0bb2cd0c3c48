"""The built-in processors against real inotify: with pyinotify's own Notifier and in the daemon."""

from __future__ import annotations

import abc
import io
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyinotify
import pytest

from inotifier import signals
from inotifier.daemon.watches import InotifierEvent
from inotifier.event_processors import (
    AllEventsPrinter,
    AllEventsSignaler,
    CreateSignaler,
    CreateViaChunksSignaler,
)

from .conftest import PyinotifyRun, pump

CHUNK_MASK = pyinotify.IN_CREATE | pyinotify.IN_MOVED_FROM | pyinotify.IN_MOVED_TO | pyinotify.IN_CLOSE_WRITE


class Caught:
    """Connect a receiver to signals for the duration of a test."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []
        self._connected: list[Any] = []

    def connect(self, *names: str) -> Caught:
        for name in names:

            def receiver(sender: Any, event: Any, _name: str = name, **kw: Any) -> None:
                self.events.append((_name, sender, event))

            signals.SIGNALS[name].connect(receiver, weak=False)
            self._connected.append((signals.SIGNALS[name], receiver))
        return self

    def disconnect(self) -> None:
        for signal, receiver in self._connected:
            signal.disconnect(receiver)

    def pairs(self) -> list[tuple[str, str]]:
        return [(n, e.pathname) for n, _s, e in self.events]


@pytest.fixture
def caught() -> Iterator[Caught]:
    c = Caught()
    yield c
    c.disconnect()


def test_all_events_signaler_with_pyinotify(watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE", "IN_CLOSE_WRITE", "IN_DELETE")
    run = PyinotifyRun(watch_dir, pyinotify.ALL_EVENTS, AllEventsSignaler())
    try:
        f = watch_dir / "a.txt"
        f.write_text("x")
        f.unlink()
        run.pump(lambda: len(caught.events) >= 3)
    finally:
        run.close()
    assert caught.pairs() == [
        ("IN_CREATE", str(f)),
        ("IN_CLOSE_WRITE", str(f)),
        ("IN_DELETE", str(f)),
    ]
    assert all(isinstance(sender, AllEventsSignaler) for _n, sender, _e in caught.events)
    assert all(isinstance(e, pyinotify.Event) for _n, _s, e in caught.events)


def test_create_signaler_only_creates(watch_dir: Path, caught: Caught) -> None:
    caught.connect(*signals.SIGNALS)
    run = PyinotifyRun(watch_dir, pyinotify.ALL_EVENTS, CreateSignaler())
    try:
        (watch_dir / "b").write_text("x")
        (watch_dir / "c").mkdir()
        (watch_dir / "b").unlink()
        run.pump(lambda: len(caught.events) >= 2)
        run.pump(lambda: True)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(watch_dir / "b")), ("IN_CREATE", str(watch_dir / "c"))]
    assert caught.events[1][2].dir is True


def test_all_events_printer(watch_dir: Path) -> None:
    out = io.StringIO()
    run = PyinotifyRun(watch_dir, pyinotify.IN_CREATE, AllEventsPrinter(out=out))
    try:
        (watch_dir / "printed").touch()
        run.pump(lambda: "printed" in out.getvalue())
    finally:
        run.close()
    assert out.getvalue() == f"IN_CREATE {str(watch_dir / 'printed')!r}\n"


def upload(directory: Path, name: str, chunks: int = 3, suffix: str = ".part") -> Path:
    part = directory / (name + suffix)
    with open(part, "wb") as fh:
        for _ in range(chunks):
            fh.write(b"x" * 1024)
            fh.flush()
    final = directory / name
    os.rename(part, final)
    return final


def test_chunked_upload_signals_once_for_the_final_file(watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    run = PyinotifyRun(watch_dir, CHUNK_MASK, CreateViaChunksSignaler())
    try:
        final = upload(watch_dir, "data.csv")
        run.pump(lambda: caught.events)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(final))]
    event = caught.events[0][2]
    assert event.src_pathname == str(watch_dir / "data.csv.part")


def test_plain_rename_does_not_signal(watch_dir: Path, caught: Caught) -> None:
    existing = watch_dir / "old.part"
    existing.write_text("made before the watch")
    caught.connect("IN_CREATE")
    processor = CreateViaChunksSignaler()
    run = PyinotifyRun(watch_dir, CHUNK_MASK, processor)
    try:
        os.rename(existing, watch_dir / "old")  # by hand: the upload flow was not seen
        (watch_dir / "other.part").write_text("x")
        os.rename(watch_dir / "other.part", watch_dir / "renamed-differently")
        (watch_dir / "plain").write_text("x")
        os.rename(watch_dir / "plain", watch_dir / "plain2")
        final = upload(watch_dir, "sentinel")
        run.pump(lambda: caught.events)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(final))]
    assert processor.pending() == 0


def test_chunked_upload_custom_suffix_and_expiry(watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    processor = CreateViaChunksSignaler(suffix=".uploading", timeout=0.2)
    run = PyinotifyRun(watch_dir, CHUNK_MASK, processor)
    try:
        (watch_dir / "stale.uploading").write_text("x")
        run.pump(lambda: processor.pending() == 1)
        time.sleep(0.3)
        # Any later create expires entries older than the timeout.
        final = upload(watch_dir, "fresh.bin", suffix=".uploading")
        run.pump(lambda: caught.events)
        assert processor.pending() == 0
        os.rename(watch_dir / "stale.uploading", watch_dir / "stale")
        run.pump(lambda: True)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(final))]


def test_chunk_suffix_setting(settings: Any) -> None:
    settings.INOTIFIER_CHUNK_SUFFIX = ".tmp"
    assert CreateViaChunksSignaler().suffix == ".tmp"
    with pytest.raises(ValueError, match="non-empty suffix"):
        CreateViaChunksSignaler(suffix="")


@pytest.fixture
def in_daemon(in_process: Any) -> Any:
    """A daemon in this process (``conftest.in_process``), started on the entries given."""
    return in_process


def test_signals_in_the_daemon_carry_the_event(in_daemon: Any, watch_dir: Path, caught: Caught) -> None:
    caught.connect(*signals.SIGNALS)
    d = in_daemon([(str(watch_dir), "ALL_EVENTS", "inotifier.event_processors.AllEventsSignaler")])
    (watch_dir / "sub").mkdir()
    f = watch_dir / "f.txt"
    f.write_text("x")
    os.rename(f, watch_dir / "g.txt")
    pump(d, lambda: ("IN_MOVED_TO", str(watch_dir / "g.txt")) in caught.pairs())
    pairs = caught.pairs()
    assert ("IN_CREATE", str(watch_dir / "sub")) in pairs
    assert pairs.index(("IN_CREATE", str(f))) < pairs.index(("IN_CLOSE_WRITE", str(f)))
    moved_to = next(e for n, _s, e in caught.events if n == "IN_MOVED_TO")
    assert moved_to.src_pathname == str(f)
    assert moved_to.name == "g.txt" and moved_to.path == str(watch_dir)
    assert moved_to.maskname == "IN_MOVED_TO"
    sub = next(e for n, _s, e in caught.events if n == "IN_CREATE" and e.name == "sub")
    assert sub.dir is True and sub.maskname == "IN_CREATE|IN_ISDIR"
    assert isinstance(sub, pyinotify.Event)


def test_chunked_upload_in_the_daemon(in_daemon: Any, watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    d = in_daemon([(str(watch_dir), CHUNK_MASK, "inotifier.event_processors.CreateViaChunksSignaler")])
    final = upload(watch_dir, "report.pdf")
    (watch_dir / "handmade.part").write_text("x")
    pump(d, lambda: caught.events)
    (watch_dir / "sentinel").touch()
    d.tick(timeout=0.05)
    assert caught.pairs() == [("IN_CREATE", str(final))]


def test_non_utf8_name_does_not_break_the_batch(in_daemon: Any, watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    d = in_daemon([(str(watch_dir), "IN_CREATE", "inotifier.event_processors.AllEventsSignaler")])
    raw = os.fsencode(str(watch_dir)) + b"/bad-\xff\xfe-name"
    with open(raw, "wb"):
        pass
    (watch_dir / "after").touch()
    pump(d, lambda: len(caught.events) == 2)
    first = caught.events[0][2]
    assert os.fsencode(first.pathname) == raw  # lossless (surrogateescape)
    assert caught.events[1][2].pathname == str(watch_dir / "after")


# -- issue 11: process_* methods are called as pyinotify calls them, and super() works -------------


class DeleteAuditingSignaler(AllEventsSignaler):
    """Written the 2010 way: override two methods, keep the signals through super()."""

    seen: list[tuple[str, str]] = []

    def process_IN_DELETE(self, event: pyinotify.Event) -> None:
        DeleteAuditingSignaler.seen.append(("process_IN_DELETE", event.pathname))
        super().process_IN_DELETE(event)

    def process_IN_CREATE(self, event: pyinotify.Event) -> None:
        DeleteAuditingSignaler.seen.append(("process_IN_CREATE", event.pathname))
        super().process_IN_CREATE(event)


class CreateOrElse(CreateSignaler):
    """A CreateSignaler that also hears every event it has no method for."""

    seen: list[tuple[str, str]] = []

    def process_default(self, event: pyinotify.Event) -> None:
        CreateOrElse.seen.append((event.maskname, event.pathname))


@pytest.fixture
def audit() -> Iterator[None]:
    DeleteAuditingSignaler.seen.clear()
    CreateOrElse.seen.clear()
    yield
    DeleteAuditingSignaler.seen.clear()
    CreateOrElse.seen.clear()


def test_overridden_method_is_called_and_super_sends_with_pyinotify(
    watch_dir: Path, caught: Caught, audit: None
) -> None:
    caught.connect("IN_CREATE", "IN_DELETE", "IN_CLOSE_WRITE")
    run = PyinotifyRun(watch_dir, pyinotify.ALL_EVENTS, DeleteAuditingSignaler())
    try:
        f = watch_dir / "gone.txt"
        f.write_text("x")
        f.unlink()
        run.pump(lambda: len(caught.events) >= 3)
    finally:
        run.close()
    assert DeleteAuditingSignaler.seen == [("process_IN_CREATE", str(f)), ("process_IN_DELETE", str(f))]
    assert caught.pairs() == [("IN_CREATE", str(f)), ("IN_CLOSE_WRITE", str(f)), ("IN_DELETE", str(f))]


def test_overridden_method_is_called_and_super_sends_in_the_daemon(
    in_daemon: Any, watch_dir: Path, caught: Caught, audit: None
) -> None:
    caught.connect("IN_CREATE", "IN_DELETE", "IN_CLOSE_WRITE")
    d = in_daemon([(str(watch_dir), "ALL_EVENTS", "tests.test_event_processors.DeleteAuditingSignaler")])
    f = watch_dir / "gone.txt"
    f.write_text("x")
    f.unlink()
    pump(d, lambda: len(caught.events) >= 3)
    assert DeleteAuditingSignaler.seen == [("process_IN_CREATE", str(f)), ("process_IN_DELETE", str(f))]
    assert caught.pairs() == [("IN_CREATE", str(f)), ("IN_CLOSE_WRITE", str(f)), ("IN_DELETE", str(f))]
    assert all(isinstance(s, DeleteAuditingSignaler) for _n, s, _e in caught.events)


def test_process_default_of_a_subclass_gets_the_rest(
    in_daemon: Any, watch_dir: Path, caught: Caught, audit: None
) -> None:
    caught.connect(*signals.SIGNALS)
    d = in_daemon([(str(watch_dir), "IN_CREATE|IN_DELETE", "tests.test_event_processors.CreateOrElse")])
    f = watch_dir / "f"
    f.touch()
    f.unlink()
    pump(d, lambda: CreateOrElse.seen)
    assert caught.pairs() == [("IN_CREATE", str(f))]
    assert CreateOrElse.seen == [("IN_DELETE", str(f))]


def test_every_built_in_method_is_there_and_callable_through_super(caught: Caught) -> None:
    # The 2010 app's methods, as a subclass reaches them with super().
    caught.connect(*signals.SIGNALS)
    signaler = AllEventsSignaler()
    for name in signals.SIGNALS:
        event = InotifierEvent(
            mask=pyinotify.EventsCodes.ALL_FLAGS[name], maskname=name, pathname="/x/" + name
        )
        getattr(AllEventsSignaler, "process_" + name)(signaler, event)
    assert caught.pairs() == [(name, "/x/" + name) for name in signals.SIGNALS]
    caught.events.clear()
    creator = CreateSignaler()
    event = InotifierEvent(mask=pyinotify.IN_CREATE, maskname="IN_CREATE", pathname="/x/c")
    CreateSignaler.process_IN_CREATE(creator, event)
    assert caught.pairs() == [("IN_CREATE", "/x/c")]
    out = io.StringIO()
    printer = AllEventsPrinter(out=out)
    for name in signals.SIGNALS:
        event = InotifierEvent(mask=pyinotify.EventsCodes.ALL_FLAGS[name], maskname=name, pathname="/x/p")
        getattr(AllEventsPrinter, "process_" + name)(printer, event)
    assert out.getvalue() == "".join(f"{name} '/x/p'\n" for name in signals.SIGNALS)


class Recorder:
    """Methods that record which of them ran, for comparing dispatch with pyinotify's."""

    calls: list[str]

    def _rec(self, name: str, event: Any) -> str:
        self.calls.append(name)
        return name


def recording(name: str) -> Any:
    def method(self: Any, event: Any) -> str:
        return self._rec(name, event)

    return method


class ByFamily(Recorder, CreateSignaler):
    process_IN_CLOSE = recording("process_IN_CLOSE")
    process_IN_MOVED = recording("process_IN_MOVED")
    process_IN_DELETE = recording("process_IN_DELETE")  # also IN_DELETE_SELF, as in pyinotify
    process_IN_CLOSE_NOWRITE = recording("process_IN_CLOSE_NOWRITE")
    process_default = recording("process_default")


class SkippedByNone(Recorder, AllEventsSignaler):
    process_IN_ATTRIB = None  # pyinotify skips a None attribute: the family, then process_default
    process_default = recording("process_default")
    process_IN_DELETE_SELF = recording("process_IN_DELETE_SELF")


class SetInMyInit(Recorder, AllEventsSignaler):
    def my_init(self, **kwargs: Any) -> None:
        self.process_IN_MODIFY = lambda event: self._rec("instance process_IN_MODIFY", event)
        self.process_IN_MOVE = lambda event: self._rec("instance process_IN_MOVE", event)


class PrinterSubclass(Recorder, AllEventsPrinter):
    process_default = recording("process_default")
    process_IN_OPEN = recording("process_IN_OPEN")


class ChunksSubclass(Recorder, CreateViaChunksSignaler):
    process_IN_MOVED_FROM = recording("process_IN_MOVED_FROM")
    process_default = recording("process_default")


@pytest.mark.parametrize("cls", [ByFamily, SkippedByNone, SetInMyInit, PrinterSubclass, ChunksSubclass])
def test_dispatch_calls_what_pyinotify_calls(cls: type, caught: Caught) -> None:
    """pyinotify's own ProcessEvent.__call__ is the oracle, for every event, with and without IN_ISDIR."""
    caught.connect(*signals.SIGNALS)
    kwargs = {"out": io.StringIO()} if cls is PrinterSubclass else {}
    ours, theirs = cls(**kwargs), cls(**kwargs)
    for name in signals.SIGNALS:
        for isdir in (0, pyinotify.IN_ISDIR):
            mask = pyinotify.EventsCodes.ALL_FLAGS[name] | isdir
            event = InotifierEvent(
                mask=mask, maskname=name, pathname="/x/y", name="y", path="/x", dir=bool(isdir), cookie=0
            )
            ours.calls, theirs.calls = [], []
            caught.events.clear()
            got = ours(event)
            signalled = caught.pairs()
            caught.events.clear()
            expected = pyinotify.ProcessEvent.__call__(theirs, event)
            assert (ours.calls, got, signalled) == (theirs.calls, expected, caught.pairs()), (
                cls,
                name,
                isdir,
            )


def test_pevent_chaining_and_unknown_masks_as_in_pyinotify(watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    only_keep = pyinotify.ChainIfTrue(func=lambda event: event.name.startswith("keep"))
    run = PyinotifyRun(watch_dir, pyinotify.IN_CREATE, AllEventsSignaler(pevent=only_keep))
    try:
        (watch_dir / "drop-me").touch()
        (watch_dir / "keep-me").touch()
        run.pump(lambda: caught.events)
        run.pump(lambda: True)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(watch_dir / "keep-me"))]
    both = InotifierEvent(mask=pyinotify.IN_CREATE | pyinotify.IN_DELETE, pathname="/x")
    with pytest.raises(pyinotify.ProcessEventError, match="Unknown mask 0x00000300"):
        AllEventsSignaler()(both)


class OnlyKept(AllEventsSignaler):
    """pevent set in my_init, the way to chain when the daemon creates the processor."""

    def my_init(self, **kwargs: Any) -> None:
        self.pevent = pyinotify.ChainIfTrue(func=lambda event: event.name.startswith("keep"))


def test_pevent_set_in_my_init_chains_in_the_daemon(in_daemon: Any, watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    d = in_daemon([(str(watch_dir), "IN_CREATE", "tests.test_event_processors.OnlyKept")])
    (watch_dir / "drop-me").touch()
    (watch_dir / "keep-me").touch()
    pump(d, lambda: caught.events)
    (watch_dir / "drop-me-too").touch()
    (watch_dir / "keep-me-too").touch()
    pump(d, lambda: len(caught.events) == 2)
    assert caught.pairs() == [
        ("IN_CREATE", str(watch_dir / "keep-me")),
        ("IN_CREATE", str(watch_dir / "keep-me-too")),
    ]


class AbstractAudit(abc.ABC):
    @abc.abstractmethod
    def audit(self, event: Any) -> None: ...


class AuditedViaABC(AllEventsSignaler, AbstractAudit):
    """A subclass may still mix in an ABC (the processors' metaclass is ABCMeta-based)."""

    seen: list[str] = []

    def audit(self, event: Any) -> None:
        AuditedViaABC.seen.append(event.pathname)

    def process_IN_CREATE(self, event: pyinotify.Event) -> None:
        self.audit(event)
        super().process_IN_CREATE(event)


def test_a_subclass_mixing_in_an_abc(caught: Caught) -> None:
    caught.connect("IN_CREATE")
    AuditedViaABC()(InotifierEvent(mask=pyinotify.IN_CREATE, maskname="IN_CREATE", pathname="/x/c"))
    assert AuditedViaABC.seen == ["/x/c"] and caught.pairs() == [("IN_CREATE", "/x/c")]


def test_methods_patched_on_the_class_later_are_called(
    monkeypatch: pytest.MonkeyPatch, caught: Caught
) -> None:
    caught.connect("IN_CREATE")
    seen: list[str] = []
    child = DeleteAuditingSignaler()
    event = InotifierEvent(mask=pyinotify.IN_ATTRIB, maskname="IN_ATTRIB", pathname="/x/a")
    monkeypatch.setattr(AllEventsSignaler, "process_IN_ATTRIB", lambda self, e: seen.append(e.pathname))
    AllEventsSignaler()(event)
    child(event)  # the subclass inherits the patched method
    assert seen == ["/x/a", "/x/a"]
    monkeypatch.undo()
    AllEventsSignaler()(InotifierEvent(mask=pyinotify.IN_CREATE, maskname="IN_CREATE", pathname="/x/c"))
    AllEventsSignaler()(event)
    assert seen == ["/x/a", "/x/a"]
    assert caught.pairs() == [("IN_CREATE", "/x/c")]


# -- issue 15: the 2010 attributes of CreateViaChunksSignaler ---------------------------------------


class ShortLivedUploads(CreateViaChunksSignaler):
    """The 2010 way of shortening the memory: a class attribute."""

    max_allowed_age = timedelta(seconds=0.6)


class ShortLivedSeconds(CreateViaChunksSignaler):
    max_allowed_age = 0.6


class OwnMyInit(CreateViaChunksSignaler):
    """A 2010 subclass whose my_init sets the attributes itself and never calls ours."""

    instances: list[OwnMyInit] = []

    def my_init(self, **kwargs: Any) -> None:
        self.temp_files = {}
        self.max_allowed_age = timedelta(hours=2)
        OwnMyInit.instances.append(self)


class BadAge(CreateViaChunksSignaler):
    max_allowed_age = "6 hours"  # type: ignore[assignment]


def stale_and_fresh(run_or_pump: Any, processor: Any, directory: Path, wait: float) -> Path:
    """Start an upload, let it age ``wait`` seconds, then finish it and a fresh one; return the fresh."""
    (directory / "stale.part").write_text("x")
    run_or_pump(lambda: processor.pending() == 1)  # its age counts from when it is processed
    time.sleep(wait)
    os.rename(directory / "stale.part", directory / "stale")
    return upload(directory, "fresh")


@pytest.mark.parametrize("cls", [ShortLivedUploads, ShortLivedSeconds])
def test_max_allowed_age_class_attribute_is_the_expiry(watch_dir: Path, caught: Caught, cls: type) -> None:
    caught.connect("IN_CREATE")
    processor = cls()
    assert processor.max_allowed_age == timedelta(seconds=0.6)
    run = PyinotifyRun(watch_dir, CHUNK_MASK, processor)
    try:
        fresh = stale_and_fresh(run.pump, processor, watch_dir, 0.9)
        run.pump(lambda: caught.events)
        run.pump(lambda: True)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(fresh))]


def test_max_allowed_age_in_the_daemon(in_daemon: Any, watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    d = in_daemon([(str(watch_dir), CHUNK_MASK, "tests.test_event_processors.ShortLivedUploads")])
    [watch] = d.watches.values()
    fresh = stale_and_fresh(lambda until: pump(d, until), watch.processor, watch_dir, 0.9)
    pump(d, lambda: caught.events)
    (watch_dir / "sentinel").touch()
    d.tick(timeout=0.05)
    assert caught.pairs() == [("IN_CREATE", str(fresh))]


def test_a_subclass_my_init_setting_temp_files_keeps_working(
    in_daemon: Any, watch_dir: Path, caught: Caught
) -> None:
    OwnMyInit.instances.clear()
    caught.connect("IN_CREATE")
    d = in_daemon([(str(watch_dir), CHUNK_MASK, "tests.test_event_processors.OwnMyInit")])
    [processor] = OwnMyInit.instances
    assert processor.max_allowed_age == timedelta(hours=2) and processor.suffix == ".part"
    part = watch_dir / "a.csv.part"
    part.write_text("x")
    pump(d, lambda: processor.temp_files)
    started = processor.temp_files[str(part)]
    # The 2010 value: datetime.now() when IN_CREATE was seen, usable as such.
    assert isinstance(started, datetime) and timedelta(0) <= datetime.now() - started < timedelta(seconds=5)
    os.rename(part, watch_dir / "a.csv")
    pump(d, lambda: caught.events)
    assert caught.pairs() == [("IN_CREATE", str(watch_dir / "a.csv"))]
    assert processor.temp_files == {}
    OwnMyInit.instances.clear()


def test_temp_files_can_be_read_cleared_and_replaced(watch_dir: Path, caught: Caught) -> None:
    caught.connect("IN_CREATE")
    processor = CreateViaChunksSignaler()
    run = PyinotifyRun(watch_dir, CHUNK_MASK, processor)
    try:
        (watch_dir / "one.part").write_text("x")
        run.pump(lambda: processor.temp_files)
        assert list(processor.temp_files) == [str(watch_dir / "one.part")]
        processor.temp_files.clear()  # forgotten: its rename sends nothing
        os.rename(watch_dir / "one.part", watch_dir / "one")
        replacement: dict[str, datetime] = {}
        processor.temp_files = replacement
        final = upload(watch_dir, "two")
        run.pump(lambda: caught.events)
    finally:
        run.close()
    assert caught.pairs() == [("IN_CREATE", str(final))]
    assert processor.temp_files is replacement and replacement == {}


def test_sleepshop_forgets_old_uploads_and_entries_added_by_hand_count() -> None:
    processor = CreateViaChunksSignaler(max_allowed_age=timedelta(minutes=5))
    processor.temp_files["/in/old.part"] = datetime.now() - timedelta(minutes=6)
    processor.temp_files["/in/new.part"] = datetime.now() - timedelta(minutes=4)
    processor.temp_files["/in/utc.part"] = datetime.now(UTC) - timedelta(minutes=10)
    processor.sleepshop()
    assert list(processor.temp_files) == ["/in/new.part"]
    processor.max_allowed_age = 60  # changed later: honoured at once, seconds or timedelta
    processor.sleepshop()
    assert processor.pending() == 0


def test_a_class_level_temp_files_is_per_instance() -> None:
    class Shared(CreateViaChunksSignaler):
        temp_files = {}  # the 2010 habit this test is about: a mutable class attribute

    a, b = Shared(), Shared()
    a.temp_files["/x.part"] = datetime.now()
    assert b.temp_files == {} and Shared.temp_files == {}


@pytest.mark.parametrize(
    ("attributes", "error", "message"),
    [
        (
            {"max_allowed_age": "6 hours"},
            TypeError,
            "Bad.max_allowed_age must be a timedelta or a number of seconds, not '6 hours'",
        ),
        (
            {"max_allowed_age": timedelta(0)},
            ValueError,
            "Bad.max_allowed_age must be positive, not datetime.timedelta(0)",
        ),
        ({"max_allowed_age": -5}, ValueError, "Bad.max_allowed_age must be positive, not -5"),
        ({"timeout": True}, TypeError, "Bad.timeout must be a timedelta or a number of seconds, not True"),
        (
            {"max_allowed_age": 60, "timeout": 30},
            ValueError,
            "Bad: max_allowed_age (60) and timeout (30) disagree; set one",
        ),
        (
            {"temp_files": ["/a.part"]},
            TypeError,
            "Bad.temp_files must be a dict (pathname -> datetime), not ['/a.part']",
        ),
        ({"suffix": ""}, ValueError, "Bad needs a non-empty suffix, not ''"),
    ],
)
def test_what_cannot_be_honoured_fails_at_creation(
    attributes: dict[str, Any], error: type, message: str
) -> None:
    as_class = type("Bad", (CreateViaChunksSignaler,), dict(attributes))
    with pytest.raises(error) as raised:
        as_class()
    assert str(raised.value) == message

    def my_init(self: Any, **kwargs: Any) -> None:
        for name, value in attributes.items():
            setattr(self, name, value)

    in_my_init = type("Bad", (CreateViaChunksSignaler,), {"my_init": my_init})
    with pytest.raises(error) as raised:
        in_my_init()
    assert str(raised.value) == message


def test_the_most_specific_setting_of_the_age_wins(settings: Any) -> None:
    settings.INOTIFIER_CHUNK_TIMEOUT = 100
    assert CreateViaChunksSignaler().max_allowed_age == timedelta(seconds=100)
    assert CreateViaChunksSignaler(timeout=7).max_allowed_age == timedelta(seconds=7)
    assert ShortLivedUploads(timeout=7).max_allowed_age == timedelta(seconds=7)  # instance beats class
    assert ShortLivedUploads().timeout == 0.6

    class Child(ShortLivedUploads):
        timeout = 9  # the child class beats its parent's max_allowed_age

    assert Child().max_allowed_age == timedelta(seconds=9)


def test_a_bad_attribute_puts_the_watch_in_error_naming_it(in_daemon: Any, watch_dir: Path) -> None:
    d = in_daemon([(str(watch_dir), CHUNK_MASK, "tests.test_event_processors.BadAge")])
    [watch] = d.watches.values()
    assert watch.state == "error"
    assert watch.message == (
        "processor 'tests.test_event_processors.BadAge' failed to start: TypeError: "
        "BadAge.max_allowed_age must be a timedelta or a number of seconds, not '6 hours'"
    )
