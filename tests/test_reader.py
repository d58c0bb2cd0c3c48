"""The reader thread (``daemon/reader.py``): a real inotify fd read into a bounded list of raw chunks.

Each test watches a fresh directory with its own inotify instance, writes files
in it and looks at the chunks the thread read, at the wake-up calls it made and
at what the kernel still holds (``FIONREAD`` on the fd).
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inotifier.daemon.kernel import HEADER_SIZE, Inotify, parse, read_sysctl
from inotifier.daemon.reader import Reader
from inotifier.masks import BITS, IN_Q_OVERFLOW

from .conftest import wait_for
from .kernelstate import modify

IN_CREATE, IN_MODIFY = BITS["IN_CREATE"], BITS["IN_MODIFY"]
#: The size of a kernel event about a name of at most 15 bytes (the name is padded to 16).
SHORT_EVENT = HEADER_SIZE + 16

StartReader = Callable[..., Reader]


@pytest.fixture
def inotify(watch_dir: Path) -> Iterator[Inotify]:
    """An inotify instance watching ``watch_dir`` for IN_CREATE and IN_MODIFY."""
    instance = Inotify()
    fd = os.open(watch_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        instance.add_watch_fd(fd, IN_CREATE | IN_MODIFY)
    finally:
        os.close(fd)
    yield instance
    instance.close()


@pytest.fixture
def start_reader(inotify: Inotify) -> Iterator[StartReader]:
    """Start readers of ``inotify``'s fd: ``start_reader(max_bytes=..., wake=...)``; stopped at the end."""
    readers: list[Reader] = []

    def start(max_bytes: int = 1 << 20, wake: Callable[[], None] = lambda: None) -> Reader:
        reader = Reader(inotify.fd, wake, max_bytes)
        reader.start()
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        if reader.stopped_at is None:  # (stopped once only: see the report on stop() called twice)
            reader.stop()


def names(chunk: bytes | None) -> list[str]:
    assert chunk is not None
    return [name for _wd, _mask, _cookie, name in parse(chunk)]


def kernel_queued(fd: int) -> int:
    """Return the bytes of events the kernel holds for ``fd``, not yet read."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def create_one_chunk_each(reader: Reader, directory: Path, *files: str) -> None:
    """Create each file once the reader has read the previous one's event: one chunk per file."""
    for count, name in enumerate(files, len(reader.chunks) + 1):
        (directory / name).touch()
        wait_for(lambda count=count: len(reader.chunks) == count, 5)


def test_chunks_are_taken_oldest_first_and_buffered_counts_their_bytes(
    start_reader: StartReader, watch_dir: Path
) -> None:
    reader = start_reader()
    assert reader.take() is None and reader.buffered == 0
    create_one_chunk_each(reader, watch_dir, "a", "b", "c")
    assert reader.buffered == 3 * SHORT_EVENT
    assert [names(reader.take()) for _ in range(3)] == [["a"], ["b"], ["c"]]
    assert reader.take() is None
    assert reader.buffered == 0
    assert reader.peak == 3 * SHORT_EVENT  # the most ever buffered (a metric)


def test_the_wake_callback_runs_once_when_the_buffer_goes_from_empty_to_non_empty(
    start_reader: StartReader, watch_dir: Path
) -> None:
    held: list[int] = []  # at each wake-up, how many chunks were buffered
    reader = start_reader(wake=lambda: held.append(len(reader.chunks)))
    create_one_chunk_each(reader, watch_dir, "a")
    wait_for(lambda: held, 5)
    create_one_chunk_each(reader, watch_dir, "b", "c")  # the buffer was not empty: no wake-up
    while reader.take() is not None:
        pass
    create_one_chunk_each(reader, watch_dir, "d")  # empty again: a wake-up
    wait_for(lambda: len(held) >= 2, 5)
    assert held == [1, 1]


def test_take_many_joins_the_oldest_chunks_up_to_the_limit_and_leaves_the_rest(
    start_reader: StartReader, watch_dir: Path
) -> None:
    reader = start_reader()
    assert reader.take_many(1 << 16) is None
    create_one_chunk_each(reader, watch_dir, "a", "b", "c", "d")
    assert names(reader.take_many(2 * SHORT_EVENT)) == ["a", "b"]
    assert reader.buffered == 2 * SHORT_EVENT and len(reader.chunks) == 2
    assert names(reader.take_many(1)) == ["c"]  # at least one chunk, however small the limit
    assert names(reader.take_many(1 << 16)) == ["d"]
    assert reader.take_many(1 << 16) is None and reader.buffered == 0


def test_a_full_buffer_stops_reading_the_kernel_queue_overflows_and_reading_resumes_once_taken(
    start_reader: StartReader, inotify: Inotify, watch_dir: Path
) -> None:
    limit = read_sysctl("max_queued_events")
    if limit is None or limit > 200_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many events to overflow it quickly")
    (watch_dir / "a").touch()
    (watch_dir / "b").touch()
    reader = start_reader(max_bytes=1)  # full with its first chunk: the two IN_CREATE, read at once
    wait_for(lambda: reader.chunks, 5)
    modify(watch_dir, limit + 100)
    assert len(reader.chunks) == 1  # nothing more was read
    assert kernel_queued(inotify.fd) >= limit * SHORT_EVENT  # the kernel holds the rest, all it can
    events: list[tuple[int, int, int, str]] = []

    def take() -> bool:  # each take makes room for one more read
        chunk = reader.take()
        if chunk is not None:
            events.extend(parse(chunk))
        return bool(events) and events[-1][1] & IN_Q_OVERFLOW != 0

    wait_for(take, 10, interval=0.001)
    assert [(mask, name) for _wd, mask, _c, name in events[:2]] == [(IN_CREATE, "a"), (IN_CREATE, "b")]
    assert [(wd, mask) for wd, mask, _c, _n in events[-1:]] == [(-1, IN_Q_OVERFLOW)]
    assert {mask for _wd, mask, _c, _n in events[2:-1]} == {IN_MODIFY}
    assert len(events[2:-1]) == limit  # the kernel's queue, full, then the word that it lost some
    assert kernel_queued(inotify.fd) == 0


@pytest.mark.parametrize("full", [False, True], ids=["waiting-for-events", "buffer-full"])
def test_stop_ends_the_thread_and_records_when(
    start_reader: StartReader, watch_dir: Path, full: bool
) -> None:
    reader = start_reader(max_bytes=1)
    if full:
        create_one_chunk_each(reader, watch_dir, "a")
    before = time.time()
    reader.stop()
    assert not reader.is_alive()
    assert reader.stopped_at is not None and before <= reader.stopped_at <= time.time()


def test_stop_returns_only_once_the_thread_has_ended_even_when_it_is_busy(
    start_reader: StartReader, watch_dir: Path
) -> None:
    inside, release = threading.Event(), threading.Event()

    def wake() -> None:  # a wake-up that takes its time: the thread is busy until released
        inside.set()
        release.wait(10)

    reader = start_reader(wake=wake)
    (watch_dir / "a").touch()
    assert inside.wait(5)
    stopper = threading.Thread(target=reader.stop)
    stopper.start()
    stopper.join(0.1)
    waited = stopper.is_alive()  # (the thread cannot end before the release: stop() must still wait)
    release.set()
    stopper.join(10)
    assert waited
    assert not reader.is_alive()


def test_a_second_stop_leaves_descriptors_opened_since_alone() -> None:
    """The stop pipe is closed once: its numbers may be someone else's by the second call."""
    inotify = Inotify()
    try:
        reader = Reader(inotify.fd, lambda: None, 1 << 20)
        reader.start()
        reader.stop()
        mine = os.pipe()  # takes the lowest free numbers: those the first stop() closed
        try:
            reader.stop()
            for fd in mine:
                os.fstat(fd)  # was: OSError EBADF, the second stop() closed this pipe
        finally:
            for fd in mine:
                os.close(fd)
    finally:
        inotify.close()
