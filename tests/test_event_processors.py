"""The built-in processors against real inotify: with pyinotify's own Notifier and in the daemon."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyinotify
import pytest
from django.test import override_settings

from inotifier import signals
from inotifier.daemon.runner import Daemon
from inotifier.event_processors import (
    AllEventsPrinter,
    AllEventsSignaler,
    CreateSignaler,
    CreateViaChunksSignaler,
)

from .conftest import wait_for

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


class PyinotifyRun:
    """pyinotify's own WatchManager + Notifier: the processors work outside the daemon too."""

    def __init__(self, path: Path, mask: int, processor: pyinotify.ProcessEvent):
        self.wm = pyinotify.WatchManager()
        self.notifier = pyinotify.Notifier(self.wm, processor, timeout=50)
        self.wm.add_watch(str(path), mask)

    def pump(self, until: Any, timeout: float = 5) -> None:
        def step() -> Any:
            if self.notifier.check_events(timeout=20):
                self.notifier.read_events()
                self.notifier.process_events()
            return until()

        wait_for(step, timeout, interval=0)

    def close(self) -> None:
        self.notifier.stop()


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
        ("IN_CREATE", str(f)), ("IN_CLOSE_WRITE", str(f)), ("IN_DELETE", str(f)),
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
        import time

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
def in_daemon(db: Any) -> Iterator[Any]:
    daemons = []

    def make(entries: list[Any]) -> Daemon:
        with override_settings(INOTIFIER_WATCH_PATHS=entries):
            d = Daemon(install_signal_handlers=False, use_database=False)
            d.setup()
            assert d.reader is not None
            d.reader.start()
            d.reconcile()
        daemons.append(d)
        return d

    yield make
    for d in daemons:
        d.shutdown()


def pump(d: Daemon, until: Any, timeout: float = 5.0) -> None:
    def step() -> Any:
        d.tick(timeout=0.02)
        return until()

    wait_for(step, timeout, interval=0)


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
