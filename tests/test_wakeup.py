"""What the daemon's loop sleeps on (``daemon.wakeup``): the signal flags, the wake-up pipe, named deadlines.

The waker is exercised on real pipes; a wait that must end at once is given a
timeout far longer than the bound asserted, so a loaded machine cannot make
it flaky, and a wait that must sleep is only ever checked to have slept at
least about its timeout.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inotifier.daemon.wakeup import Deadlines, Flags, Waker

LONG = 5.0  # a timeout a wait that ends "at once" never reaches
SHORT = 0.05


@pytest.fixture
def waker() -> Iterator[Waker]:
    w = Waker()
    yield w
    w.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A real pipe, as another fd the loop may watch (a LISTEN connection's socket in the daemon)."""
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def timed_wait(waker: Waker, timeout: float) -> tuple[frozenset[int], float]:
    """Return what ``waker.wait(timeout)`` returned and how long it took."""
    start = time.monotonic()
    ready = waker.wait(timeout)
    return ready, time.monotonic() - start


# -- Flags -------------------------------------------------------------------------------------


def test_flags_start_lowered() -> None:
    flags = Flags()

    assert (flags.stopping, flags.hup, flags.reopen, flags.resync) == (False, False, False, False)


def test_a_misspelt_flag_is_refused_not_silently_set() -> None:
    flags = Flags()

    with pytest.raises(AttributeError):
        flags.stoping = True  # type: ignore[attr-defined]


# -- Waker -------------------------------------------------------------------------------------


def test_a_wake_ends_the_next_wait_at_once_and_is_not_reported_as_a_readable_fd(waker: Waker) -> None:
    waker.wake()

    ready, took = timed_wait(waker, LONG)

    assert ready == frozenset()
    assert took < LONG / 2


def test_a_wake_from_another_thread_ends_a_wait_already_asleep(waker: Waker) -> None:
    thread = threading.Timer(SHORT, waker.wake)
    thread.start()
    try:
        ready, took = timed_wait(waker, LONG)
    finally:
        thread.join()

    assert ready == frozenset()
    assert took < LONG / 2


def test_without_a_wake_or_a_readable_fd_wait_sleeps_its_timeout(waker: Waker) -> None:
    ready, took = timed_wait(waker, SHORT)

    assert ready == frozenset()
    assert took >= SHORT * 0.8


def test_drain_empties_the_pipe_however_many_wakes_so_the_next_wait_sleeps(waker: Waker) -> None:
    for _ in range(70_000):  # more than a pipe holds (64 KiB): a full pipe is already awake
        waker.wake()

    waker.drain()
    ready, took = timed_wait(waker, SHORT)

    assert ready == frozenset()
    assert took >= SHORT * 0.8


def test_a_watched_fd_that_is_readable_ends_the_wait_and_is_reported(
    waker: Waker, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    waker.watch(r)
    os.write(w, b"x")

    ready, took = timed_wait(waker, LONG)

    assert ready == frozenset({r})
    assert took < LONG / 2


def test_a_wake_and_a_readable_watched_fd_together_report_only_the_fd(
    waker: Waker, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    waker.watch(r)
    os.write(w, b"x")
    waker.wake()

    assert waker.wait(LONG) == frozenset({r})


def test_an_unwatched_fd_no_longer_ends_the_wait(waker: Waker, pipe: tuple[int, int]) -> None:
    r, w = pipe
    waker.watch(r)
    os.write(w, b"x")

    waker.unwatch(r)
    ready, took = timed_wait(waker, SHORT)

    assert ready == frozenset()
    assert took >= SHORT * 0.8


def test_unwatching_an_fd_that_is_not_watched_is_harmless(waker: Waker, pipe: tuple[int, int]) -> None:
    r, _w = pipe

    waker.unwatch(r)  # never watched
    waker.watch(r)
    waker.unwatch(r)
    waker.unwatch(r)  # twice

    assert waker.wait(0) == frozenset()


def test_close_releases_both_ends_of_the_pipe() -> None:
    waker = Waker()
    fds = (waker.r, waker.w)

    waker.close()

    for fd in fds:
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF


def test_the_pipe_is_not_inherited_by_child_processes(waker: Waker) -> None:
    assert not os.get_inheritable(waker.r)
    assert not os.get_inheritable(waker.w)


# -- Deadlines ---------------------------------------------------------------------------------


def test_every_deadline_is_due_at_the_first_tick_however_early() -> None:
    deadlines = Deadlines(poll=2.0, resync=300.0)

    assert deadlines.next("poll", "resync") <= 1.0
    assert deadlines.due("poll", 1.0)
    assert deadlines.due("resync", 1.0)


def test_a_deadline_that_was_due_is_due_again_one_period_later_not_before() -> None:
    deadlines = Deadlines(poll=2.0)
    assert deadlines.due("poll", 100.0)

    assert not deadlines.due("poll", 100.0)
    assert not deadlines.due("poll", 101.999)
    assert deadlines.due("poll", 102.0)


def test_a_late_tick_sets_the_next_deadline_from_now_so_missed_periods_do_not_burst() -> None:
    deadlines = Deadlines(poll=2.0)
    deadlines.due("poll", 100.0)

    assert deadlines.due("poll", 109.0)  # four periods late

    assert not deadlines.due("poll", 110.0)
    assert deadlines.due("poll", 111.0)


def test_postpone_sets_a_deadline_one_period_from_now_without_it_being_due() -> None:
    deadlines = Deadlines(resync=300.0)

    deadlines.postpone("resync", 50.0)

    assert deadlines.next("resync") == 350.0
    assert not deadlines.due("resync", 349.0)
    assert deadlines.due("resync", 350.0)


def test_soon_makes_a_deadline_due_at_the_next_tick() -> None:
    deadlines = Deadlines(missing=2.0)
    deadlines.due("missing", 100.0)

    deadlines.soon("missing")

    assert deadlines.due("missing", 100.5)


def test_next_is_the_earliest_of_the_named_deadlines_only() -> None:
    deadlines = Deadlines(poll=2.0, missing=5.0, resync=1.0)
    deadlines.due("poll", 10.0)
    deadlines.due("missing", 10.0)
    deadlines.due("resync", 10.0)

    assert deadlines.next("poll", "missing") == 12.0
    assert deadlines.next("missing") == 15.0


def test_deadlines_are_independent_of_each_other() -> None:
    deadlines = Deadlines(poll=2.0, missing=2.0)
    deadlines.due("poll", 100.0)

    assert deadlines.due("missing", 100.5)  # still at its first tick
    assert not deadlines.due("poll", 100.5)


# -- a closed waker: its descriptor numbers are someone else's now --------------------------


def test_a_wake_after_close_writes_nothing_into_a_file_that_reused_its_descriptor(tmp_path: Path) -> None:
    waker = Waker()
    write_end = waker.w
    waker.close()
    files = []
    try:
        while True:  # the lowest free descriptors are taken: soon the pipe's old write end
            fd = os.open(tmp_path / f"f{len(files)}", os.O_WRONLY | os.O_CREAT)
            files.append(fd)
            if fd == write_end:
                break
            assert len(files) < 1000

        waker.wake()  # "closed: stopping" (wakeup.py): assumed to fail with EBADF

        assert (tmp_path / f"f{len(files) - 1}").read_bytes() == b""  # was: b"r"
    finally:
        for fd in files:
            os.close(fd)


def test_stopping_a_closed_daemon_writes_nothing_into_a_file_that_reused_the_wake_up_pipe(
    in_process: Any, tmp_path: Path
) -> None:
    d = in_process([])
    write_end = d.waker.w
    d.close()
    files = []
    try:
        while True:
            fd = os.open(tmp_path / f"f{len(files)}", os.O_WRONLY | os.O_CREAT)
            files.append(fd)
            if fd == write_end:
                break
            assert len(files) < 1000

        d.stop()  # "thread-safe"; Daemon.close() keeps its closed Waker, so stop() still wakes it

        assert (tmp_path / f"f{len(files) - 1}").read_bytes() == b""  # was: b"r"
    finally:
        for fd in files:
            os.close(fd)
