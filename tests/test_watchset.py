"""The watch set (``daemon/watchset.py``): updates that keep what was read, or drop it loudly.

In-process daemons on real inotify; events are routed by the real dispatcher
and left queued, as a busy daemon's turns leave them, before the change.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from inotifier.daemon.kernel import parse
from tests.testapp.receivers import ListProcessor

from .conftest import wait_for

LIST = "tests.testapp.receivers.ListProcessor"


def queue_events(d: Any, watch_dir: Path, count: int) -> None:
    """Create ``count`` files; route their events, handle one, leave the rest queued."""
    for i in range(count):
        (watch_dir / f"f{i:02}").touch()
    wait_for(lambda: sum(1 for chunk in tuple(d.reader.chunks) for _ in parse(chunk)) == count, 5)
    d.dispatcher.process(deadline=time.monotonic())  # a busy turn: routed, one handled
    assert d.watchset.queued == count - 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({}, id="same tree: swap"),
        pytest.param({"recursive": True}, id="another tree: rebuild"),
    ],
)
def test_events_queued_for_a_processor_that_became_unusable_are_dropped_said_so_not_blamed_on_it(
    in_process: Any, watch_dir: Path, change: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in the new dotted path: no event goes to ``None`` (each was counted as its error)."""
    ListProcessor.seen.clear()
    d = in_process([(str(watch_dir), "IN_CREATE", LIST)])
    queue_events(d, watch_dir, 20)
    caplog.set_level(logging.WARNING, "inotifier")
    entry = (str(watch_dir), "IN_CREATE", "tests.no.such.Processor", *([change] if change else []))
    with override_settings(INOTIFIER_WATCH_PATHS=[entry]):
        d.reconcile(force=True)
    watch = d.watches["settings:0"]
    assert watch.state == "error" and watch.processor is None
    while d.dispatcher.has_work():
        d.dispatcher.process(deadline=time.monotonic() + 1)
    assert watch.errors == 0 and d.watchset.errors == 0
    assert any("19 events read but not delivered" in r.getMessage() for r in caplog.records)
    ListProcessor.seen.clear()


def test_events_queued_before_a_processor_swap_go_to_the_new_processor(
    in_process: Any, watch_dir: Path
) -> None:
    ListProcessor.seen.clear()
    d = in_process([(str(watch_dir), "IN_CREATE", "tests.testapp.receivers.RecordingProcessor")])
    queue_events(d, watch_dir, 5)
    with override_settings(INOTIFIER_WATCH_PATHS=[(str(watch_dir), "IN_CREATE", LIST)]):
        d.reconcile(force=True)
    while d.dispatcher.has_work():
        d.dispatcher.process(deadline=time.monotonic() + 1)
    assert sorted(e.name for e in ListProcessor.seen) == [f"f{i:02}" for i in range(1, 5)]
    ListProcessor.seen.clear()
