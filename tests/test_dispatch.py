"""The dispatcher (``daemon/dispatch.py``): raw chunks routed to the watches by wd, served in fair turns.

An in-process daemon on real inotify; the tests let its reader thread read what
the kernel queued, then drive ``Dispatcher.process()`` (or ``tick()``) themselves,
and look at the order in which the events reach the processors.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyinotify
import pytest

from inotifier.daemon import dispatch, runner
from inotifier.daemon.kernel import HEADER_SIZE, parse, read_sysctl
from inotifier.daemon.reader import Reader
from tests.testapp.receivers import ListProcessor

from .conftest import pump, wait_for
from .kernelstate import modify

LIST = "tests.testapp.receivers.ListProcessor"
SLOW = "tests.test_dispatch.Slow"
TREE = {"recursive": True, "auto_add": True}
#: The size of a kernel event about a name of at most 15 bytes (the name is padded to 16).
SHORT_EVENT = HEADER_SIZE + 16


class Slow(pyinotify.ProcessEvent):
    """Take at least half a millisecond per event (a turn of 5 ms holds a few), kept in ListProcessor.seen."""

    def process_default(self, event: Any) -> None:
        time.sleep(0.0005)
        ListProcessor.seen.append(event)


@pytest.fixture
def in_daemon(in_process: Any) -> Iterator[Any]:
    ListProcessor.seen.clear()
    yield in_process
    ListProcessor.seen.clear()


def seen() -> list[str]:
    return [e.pathname for e in ListProcessor.seen]


def unrouted_names(reader: Reader) -> list[str]:
    """Return the names in the events the reader has read and the dispatcher not yet routed."""
    return [name for chunk in tuple(reader.chunks) for _wd, _mask, _cookie, name in parse(chunk)]


def read_by_reader(daemon: Any, last: str) -> None:
    """Wait until the reader has read the event about ``last`` (and so all the events before it)."""
    wait_for(lambda: last in unrouted_names(daemon.reader), 5)


def process_all(daemon: Any) -> int:
    """Run the dispatcher until nothing is left to do; return how many events it handled."""
    handled = [0]

    def step() -> bool:
        handled[0] += daemon.dispatcher.process(deadline=time.monotonic() + 0.02)
        return not daemon.dispatcher.has_work()

    wait_for(step, 10, interval=0)
    return handled[0]


def test_an_event_in_a_directory_two_watches_share_reaches_both(in_daemon: Any, watch_dir: Path) -> None:
    shared = watch_dir / "shared"
    shared.mkdir()
    d = in_daemon([(str(watch_dir), "IN_CREATE", LIST, TREE), (str(shared), "IN_CREATE", LIST)])
    tree, plain = d.watches["settings:0"], d.watches["settings:1"]
    assert tree.paths[str(shared)] == plain.paths[str(shared)]  # one kernel watch, one wd, two owners
    (shared / "f").touch()
    pump(d, lambda: len(ListProcessor.seen) >= 2)
    assert seen() == [str(shared / "f")] * 2
    assert (tree.events, plain.events) == (1, 1)


def test_a_flooded_watch_does_not_starve_another_whose_event_comes_within_the_first_turns(
    in_daemon: Any, watch_dir: Path
) -> None:
    busy, quiet = watch_dir / "busy", watch_dir / "quiet"
    busy.mkdir()
    quiet.mkdir()
    d = in_daemon([(str(busy), "IN_CREATE", SLOW), (str(quiet), "IN_CREATE", LIST)])
    flood = [str(busy / f"f{i:03}") for i in range(100)]
    for path in flood:
        open(path, "w").close()
    (quiet / "q").touch()  # after the whole flood, in the kernel's order too
    read_by_reader(d, "q")
    assert d.dispatcher.process(deadline=time.monotonic() + 30) == len(flood) + 1
    order = seen()
    # A turn of the busy watch lasts 5 ms, at least 0.5 ms an event: the quiet watch's turn
    # comes after at most 11 of the flood, however slow the machine, not after all 100.
    assert order.index(str(quiet / "q")) < 25
    assert [p for p in order if p.startswith(str(busy))] == flood  # a watch's own order is kept


def test_process_stops_at_its_deadline_with_work_left_and_has_work_says_so(
    in_daemon: Any, watch_dir: Path
) -> None:
    d = in_daemon([(str(watch_dir), "IN_CREATE", LIST)])
    assert not d.dispatcher.has_work()
    names = [f"f{i:02}" for i in range(50)]
    for name in names:
        (watch_dir / name).touch()
    read_by_reader(d, names[-1])
    assert d.dispatcher.has_work()  # read, not yet routed
    handled = d.dispatcher.process(deadline=time.monotonic())  # a deadline already passed
    assert 0 < handled < len(names)
    assert len(ListProcessor.seen) == handled
    assert d.dispatcher.has_work()  # routed, not yet handled
    assert handled + process_all(d) == len(names)
    assert seen() == [str(watch_dir / name) for name in names]


def test_at_a_stop_the_events_read_are_delivered_before_the_held_ones(
    in_daemon: Any, watch_dir: Path
) -> None:
    plain, settled = watch_dir / "plain", watch_dir / "settled"
    plain.mkdir()
    settled.mkdir()
    d = in_daemon([(str(plain), "IN_CREATE", LIST), (str(settled), "IN_CREATE", LIST, {"settle": 60})])
    (settled / "held").touch()
    pump(d, lambda: d.watches["settings:1"].hold)
    names = [f"f{i}" for i in range(5)]
    for name in names:
        (plain / name).touch()
    read_by_reader(d, names[-1])  # read by the reader, not yet routed
    d.close()
    assert seen() == [*(str(plain / name) for name in names), str(settled / "held")]


def test_a_kernel_queue_overflow_calls_on_overflow_once_and_the_events_before_it_are_delivered(
    in_daemon: Any, watch_dir: Path
) -> None:
    limit = read_sysctl("max_queued_events")
    if limit is None or limit > 200_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many events to overflow it quickly")
    # A reader buffer of 64 events, filled first: it stops reading, and the kernel's own queue overflows.
    d = in_daemon([(str(watch_dir), "IN_MODIFY", LIST)], INOTIFIER_QUEUE_SIZE=64)
    first = d.reader.max_bytes // SHORT_EVENT
    modify(watch_dir, first)
    wait_for(lambda: d.reader.buffered >= d.reader.max_bytes, 5)
    modify(watch_dir, limit + 100)
    assert d.status.overflows == 0  # nothing routed yet: the overflow is the last event queued
    pump(d, lambda: d.status.overflows)  # the loop's turns: the reader resumes as chunks are taken
    process_all(d)  # the events routed with it
    assert d.status.overflows == 1
    assert len(ListProcessor.seen) == first + limit  # all the reader and the kernel's queue held
    assert {e.maskname for e in ListProcessor.seen} == {"IN_MODIFY"}  # the overflow is no watch's event


def test_while_many_routed_events_wait_the_rest_stays_raw_in_the_readers_buffer(
    in_daemon: Any, watch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    low_water = 2000  # (20 000 in the daemon: the same behaviour at a tenth of the events)
    monkeypatch.setattr(dispatch, "ROUTE_LOW_WATER", low_water)
    d = in_daemon([(str(watch_dir), "IN_MODIFY", LIST)])
    # Written a batch at a time, each read before the next (nothing lost, no read of more than a
    # batch): more than the low water mark plus what one routing may take past it (64 KiB + a read).
    batch = 1024
    total = low_water + dispatch.ROUTE_BYTES // SHORT_EVENT + batch + 1000
    for done in range(0, total, batch):
        modify(watch_dir, min(batch, total - done))
        wait_for(lambda done=done: d.reader.added >= min(done + batch, total) * SHORT_EVENT, 5)
    for _ in range(total // 1000 + 5):  # more calls than it takes to route everything, a chunk each
        d.dispatcher.process(deadline=time.monotonic())  # (each handles an event)
    assert d.watchset.queued >= low_water
    assert d.reader.buffered > 0  # the rest still raw: memory stays bounded by the reader's limit
    process_all(d)
    assert len(ListProcessor.seen) == total
    assert d.watchset.queued == 0 and d.reader.buffered == 0


def test_a_wd_the_kernel_dropped_is_forgotten_by_every_watch_that_shared_it(
    in_daemon: Any, watch_dir: Path
) -> None:
    sub = watch_dir / "sub"
    sub.mkdir()
    d = in_daemon([(str(watch_dir), "IN_DELETE", LIST, TREE), (str(sub), "IN_DELETE", LIST)])
    tree, plain = d.watches["settings:0"], d.watches["settings:1"]
    wd = plain.paths[str(sub)]
    assert tree.paths[str(sub)] == wd and d.watchset.kernel_watches() == 2
    sub.rmdir()
    pump(d, lambda: [e.maskname for e in ListProcessor.seen].count("IN_IGNORED") == 2)
    assert wd not in d.table.nodes
    assert str(sub) not in tree.paths and str(sub) not in plain.paths
    assert d.watchset.kernel_watches() == 1  # the root of the tree


def test_what_start_made_is_frozen_out_of_the_collectors_full_passes_and_the_gil_is_handed_on_soon(
    in_process: Any, watch_dir: Path
) -> None:
    """A full collection holds the GIL: walking all of Django in a burst starved the reader."""
    made_before = [object()]  # a container the collector tracks, made before the daemon started
    in_process([(str(watch_dir), "IN_CREATE", LIST)])
    assert gc.get_freeze_count() > 0
    assert not any(o is made_before for o in gc.get_objects())  # in the permanent generation
    # And a thread waiting for the GIL (the reader, with what it read) gets it within 1 ms, not 5.
    assert sys.getswitchinterval() == pytest.approx(runner.SWITCH_SECONDS) and runner.SWITCH_SECONDS <= 0.001
