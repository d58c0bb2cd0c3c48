"""The event signals: any sender Django allows, receivers still cached per processor."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyinotify
import pytest
from django.dispatch import Signal

from inotifier import signals
from inotifier.daemon.runner import Daemon
from inotifier.daemon.watches import InotifierEvent
from inotifier.event_processors import AllEventsSignaler, CreateSignaler

from .conftest import pump


class Slotted:
    """A sender that cannot be weakly referenced (no __weakref__ slot)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture
def heard() -> Iterator[list[Any]]:
    """Connect one receiver to every event signal; yield the senders it heard."""
    senders: list[Any] = []

    def receiver(sender: Any, event: Any, **kwargs: Any) -> str:
        senders.append(sender)
        return f"heard {event.pathname}"

    for signal in signals.SIGNALS.values():
        signal.connect(receiver, weak=False, dispatch_uid="test-signals")
    yield senders
    for signal in signals.SIGNALS.values():
        signal.disconnect(dispatch_uid="test-signals")


def event(name: str = "IN_CREATE") -> InotifierEvent:
    return InotifierEvent(mask=pyinotify.EventsCodes.ALL_FLAGS[name], maskname=name, pathname="/x/f")


SENDERS = [None, "by hand", 42, ("a", "tuple"), Slotted("s"), AllEventsSignaler, object()]


@pytest.mark.parametrize("sender", SENDERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", sorted(signals.SIGNALS))
def test_every_signal_accepts_any_sender_with_a_receiver_connected(
    name: str, sender: Any, heard: list[Any]
) -> None:
    signal = signals.SIGNALS[name]
    responses = signal.send(sender=sender, event=event(name))
    assert [r for _receiver, r in responses] == ["heard /x/f"]
    robust = signal.send_robust(sender=sender, event=event(name))
    assert [r for _receiver, r in robust] == ["heard /x/f"]
    assert heard == [sender, sender]
    assert signal.has_listeners(sender)


@pytest.mark.skipif(not hasattr(Signal, "asend"), reason="Signal.asend is new in Django 5.0")
def test_asend_accepts_any_sender(heard: list[Any]) -> None:
    for sender in (None, "by hand"):
        responses = asyncio.run(signals.in_modify.asend(sender=sender, event=event("IN_MODIFY")))
        assert [r for _receiver, r in responses] == ["heard /x/f"]
        robust = asyncio.run(signals.in_modify.asend_robust(sender=sender, event=event("IN_MODIFY")))
        assert [r for _receiver, r in robust] == ["heard /x/f"]
    assert heard == [None, None, "by hand", "by hand"]


def test_receivers_for_one_sender_only_and_none_senders_mix(heard: list[Any]) -> None:
    only: list[Any] = []

    def for_the_string(sender: Any, **kwargs: Any) -> None:
        only.append(sender)

    signals.in_delete.connect(for_the_string, sender="by hand", weak=False)
    try:
        signals.in_delete.send(sender="by hand", event=event("IN_DELETE"))
        signals.in_delete.send(sender=None, event=event("IN_DELETE"))
        signals.in_delete.send(sender="other", event=event("IN_DELETE"))
    finally:
        signals.in_delete.disconnect(for_the_string, sender="by hand")
    assert only == ["by hand"]
    assert heard == ["by hand", None, "other"]


def test_receivers_are_cached_per_processor_and_not_for_uncachable_senders(heard: list[Any]) -> None:
    signal = signals.in_create
    cache = signal.sender_receivers_cache
    processor = CreateSignaler()
    assert len(cache) == 0  # connecting cleared it
    processor(event())
    cached = cache.get(processor)
    assert isinstance(cached, list) and len(cached) == 1  # the receiver list, kept for this sender
    processor(event())
    assert cache.get(processor) is cached  # the second send reused it, nothing rebuilt
    signal.send(sender=None, event=event())
    signal.send(sender="by hand", event=event())
    assert list(cache.keys()) == [processor]  # None and the string were served uncached
    assert heard == [processor, processor, None, "by hand"]
    heard.clear()
    del processor, cached
    gc.collect()
    assert len(cache) == 0  # a processor that is gone leaves nothing behind


def test_the_event_signals_are_caching_signals() -> None:
    for signal in signals.SIGNALS.values():
        assert isinstance(signal, Signal) and signal.use_caching
        assert isinstance(signal, signals.EventSignal)
    assert set(signals.SIGNALS) == {
        "IN_ACCESS",
        "IN_ATTRIB",
        "IN_CLOSE_NOWRITE",
        "IN_CLOSE_WRITE",
        "IN_CREATE",
        "IN_DELETE",
        "IN_DELETE_SELF",
        "IN_IGNORED",
        "IN_MODIFY",
        "IN_MOVE_SELF",
        "IN_MOVED_FROM",
        "IN_MOVED_TO",
        "IN_OPEN",
        "IN_Q_OVERFLOW",
        "IN_UNMOUNT",
    }
    for name, signal in signals.SIGNALS.items():
        assert getattr(signals, name.lower()) is signal


def test_a_receiver_sending_by_hand_inside_the_daemon(
    in_process: Any,
    watch_dir: Path,
    heard: list[Any],
) -> None:
    """A receiver that re-sends by hand with sender=None (as 2010-era code did) works in the daemon."""
    forwarded: list[str] = []

    def forward(sender: Any, event: Any, **kwargs: Any) -> None:
        if sender is not None:
            signals.in_close_write.send(sender=None, event=event)
        else:
            forwarded.append(event.pathname)

    signals.in_close_write.connect(forward, weak=False)
    try:
        d: Daemon = in_process(
            [(str(watch_dir), "IN_CLOSE_WRITE", "inotifier.event_processors.AllEventsSignaler")]
        )
        (watch_dir / "f").write_text("x")
        pump(d, lambda: forwarded)
    finally:
        signals.in_close_write.disconnect(forward)
    assert forwarded == [str(watch_dir / "f")]
    assert d.watchset.errors == 0
    assert heard[1] is None and isinstance(heard[0], AllEventsSignaler)


def test_a_raising_life_receiver_is_logged_the_others_still_hear_and_the_daemon_goes_on(
    in_process: Any, watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """daemon_started, reconciled, daemon_stopping: a receiver that raises stops nothing."""
    heard: list[str] = []

    def explode(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a receiver's bug")

    def listen(sender: Any, signal: Signal, **kwargs: Any) -> None:
        heard.append(next(name for name in LIFE if getattr(signals, name) is signal))

    LIFE = ("daemon_started", "reconciled", "daemon_stopping")
    for name in LIFE:  # the raising one first: it must not keep the next from hearing
        getattr(signals, name).connect(explode, weak=False)
        getattr(signals, name).connect(listen, weak=False)
    try:
        d: Daemon = in_process([(str(watch_dir), "IN_CLOSE_WRITE", "tests.testapp.receivers.ListProcessor")])
        (watch_dir / "f").write_text("x")
        pump(d, lambda: d.watches and next(iter(d.watches.values())).events)
        d.close()
    finally:
        for name in LIFE:
            getattr(signals, name).disconnect(explode)
            getattr(signals, name).disconnect(listen)
    assert heard == ["reconciled", "daemon_started", "daemon_stopping"]
    raised = [r for r in caplog.records if r.name == "inotifier.daemon" and "receiver" in r.getMessage()]
    assert [r.getMessage().split(" receiver")[0] for r in raised] == [
        "a reconciled",
        "a daemon_started",
        "a daemon_stopping",
    ]
    assert all(r.exc_info and "a receiver's bug" in str(r.exc_info[1]) for r in raised)
