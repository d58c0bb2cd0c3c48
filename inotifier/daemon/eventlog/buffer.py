"""The event log's bounded buffer: the read loop appends, the feeder takes, the bound is memory."""

from __future__ import annotations

import sys
import threading
from typing import Any

from ...conf import app_settings
from .config import positive_setting
from .rows import ROW_ITEMS, Flat, Tail, append_row

#: Bytes a buffered row costs besides its path strings (``sys.getsizeof`` of the path,
#: and of the source path of a move), measured with tracemalloc on 100 000 rows
#: (see ``tests/test_eventlog.py::test_the_row_size_estimate_matches_what_rows_cost``):
#: 89 B in the read loop's flat list (four list slots, a float, an int), 118 B as a
#: ``Row`` in the writer process's deque (the tuple, a float, an int, a slot). The larger
#: of the two with some room, so the estimate holds in whichever process a row waits.
ROW_OVERHEAD = 128
#: Path size assumed until rows are seen: ``sys.getsizeof`` of a 60-character ASCII path.
INITIAL_PATH_BYTES = 109
#: Newest rows whose path sizes ``poke`` samples.
SIZE_SAMPLE_ROWS = 8
#: Weight of a sample in the running mean when paths get shorter (longer paths count
#: at once: the bound errs on the side of memory).
SIZE_SAMPLE_WEIGHT = 0.1
#: ``poke`` samples row sizes only while more than 1/SAMPLE_FROM of the bound is pending
#: (with a nearly empty buffer the estimate does not matter), and once per SAMPLE_EVERY
#: rows: a sample costs about 5 us, and during a burst the loop may turn every few events.
SAMPLE_FROM = 8
SAMPLE_EVERY = 1024


def buffer_limits(rows: Any = None, max_bytes: Any = None) -> tuple[int | None, int]:
    """Return the buffer's bounds: (row cap or None, bytes), from the arguments or the settings.

    ``rows`` defaults to INOTIFIER_EVENT_LOG_BUFFER (None or 0: no row cap, the
    memory bound only), ``max_bytes`` to INOTIFIER_EVENT_LOG_BUFFER_BYTES.
    Raise ImproperlyConfigured naming the setting when a value is not a
    positive whole number.
    """
    if rows is None:
        rows = app_settings.INOTIFIER_EVENT_LOG_BUFFER
    if max_bytes is None:
        max_bytes = app_settings.INOTIFIER_EVENT_LOG_BUFFER_BYTES
    row_cap = None if rows is None or rows == 0 else positive_setting("INOTIFIER_EVENT_LOG_BUFFER", rows)
    return row_cap, positive_setting("INOTIFIER_EVENT_LOG_BUFFER_BYTES", max_bytes)


class Tally:
    """What became of the rows taken from the buffer, counted by whoever writes them."""

    __slots__ = ("lost", "pruned", "rejected", "written")

    def __init__(self) -> None:
        self.written = 0
        self.rejected = 0  # refused by the database (one bad row is isolated, the rest written)
        self.lost = 0  # unwritten when the writer gave up (a stop during an outage, a killed writer)
        self.pruned = 0  # old rows deleted by the retention

    @property
    def finished(self) -> int:
        """Return the rows done with: written, rejected or lost."""
        return self.written + self.rejected + self.lost

    def add(self, written: int = 0, rejected: int = 0, lost: int = 0, pruned: int = 0) -> None:
        self.written += written
        self.rejected += rejected
        self.lost += lost
        self.pruned += pruned


class RowBuffer:
    """The rows between the read loop and the writer, bounded by memory.

    The read loop appends each logged event to ``incoming``, ``ROW_ITEMS``
    items per row: one ``list +=`` per event, inlined in ``ActiveWatch.deliver``,
    no lock, no counter. The feeder takes rows from the head (under the lock;
    the loop only ever extends the tail). At most ``capacity`` rows are taken
    and not yet finished; rows beyond what may still wait are cut from the
    tail once per tick (``poke``) and counted in ``dropped``: the newest rows
    are the ones dropped, and the bound holds within a tick's worth of events.

    The bound is INOTIFIER_EVENT_LOG_BUFFER_BYTES, turned into rows by
    sampling the sizes of the newest rows' paths (``row_bytes``), so the
    append itself never counts; INOTIFIER_EVENT_LOG_BUFFER, when set, caps
    the rows as well.
    """

    def __init__(self, capacity: int | None = None, max_bytes: int | None = None) -> None:
        self.row_cap, self.max_bytes = buffer_limits(capacity, max_bytes)
        #: The read loop's rows, flat; never replaced (the loop holds a reference).
        self.incoming: Flat = []
        #: (watch id, label) of every watch that logs; a row's key carries its index.
        self.tails: list[Tail] = []
        self._tail_keys: dict[Tail, int] = {}
        self.path_bytes = float(INITIAL_PATH_BYTES)  # mean sys.getsizeof of a row's path(s)
        self.capacity = self._rows_allowed()
        self.taken = 0  # rows taken from ``incoming``
        self.dropped = 0  # rows cut because the buffer was full
        self.peak = 0  # most rows pending at a tick
        self.tally = Tally()
        self._sampled_at = -SAMPLE_EVERY  # rows appended so far at the last sample
        self._lock = threading.Lock()

    @property
    def row_bytes(self) -> int:
        """Return the estimated bytes of one buffered row (see ROW_OVERHEAD)."""
        return ROW_OVERHEAD + int(self.path_bytes)

    @property
    def accepted(self) -> int:
        """Return the rows accepted from the read loop so far (cut rows excluded once cut)."""
        return self.taken + len(self.incoming) // ROW_ITEMS

    @property
    def pending(self) -> int:
        """Return the rows accepted and not finished (written, rejected or lost)."""
        return self.accepted - self.tally.finished

    def unlogged(self) -> int:
        """Return the rows that are not in the table: dropped, rejected, or lost."""
        return self.dropped + self.tally.rejected + self.tally.lost

    def _rows_allowed(self) -> int:
        rows = self.max_bytes // self.row_bytes
        if self.row_cap is not None:
            rows = min(rows, self.row_cap)
        return max(1, rows)

    # -- the read loop's side --------------------------------------------------------

    def tail_key(self, watch_id: int | None, label: str) -> int:
        """Return the key bits (index << 32) of a watch's rows; a mask is or-ed in per row."""
        tail = (watch_id, label)
        key = self._tail_keys.get(tail)
        if key is None:
            self.tails.append(tail)
            key = self._tail_keys[tail] = (len(self.tails) - 1) << 32
        return key

    def offer(self, pathname: str, ts: float, key: int, src: str = "") -> bool:
        """Append one row unless the buffer is full (exact, unlike the loop's append); True if kept."""
        with self._lock:
            full = self.pending >= self.capacity
        if full:
            self.dropped += 1
            return False
        append_row(self.incoming, pathname, ts, key, src)
        self.poke()
        return True

    def poke(self) -> bool:
        """Cut the rows beyond the bound (once per tick); return True when half the bound waits."""
        incoming = self.incoming
        if not incoming:
            return False
        with self._lock:  # the feeder may shorten the list meanwhile
            in_flight = self.taken - self.tally.finished
            waiting = len(incoming) // ROW_ITEMS
            appended = self.taken + waiting + self.dropped  # only ever grows
            if (
                in_flight + waiting >= self.capacity // SAMPLE_FROM
                and appended - self._sampled_at >= SAMPLE_EVERY
            ):
                self._sampled_at = appended
                self._sample_sizes(incoming)
            excess = waiting - max(0, self.capacity - in_flight)
            if excess > 0:
                del incoming[-excess * ROW_ITEMS :]  # the newest rows
                self.dropped += excess
                waiting -= excess
            if in_flight + waiting > self.peak:
                self.peak = in_flight + waiting
        return waiting >= max(1, self.capacity // 2)

    def _sample_sizes(self, incoming: Flat) -> None:
        """Update the row size estimate from the newest rows, and the bound in rows with it."""
        n = min(len(incoming) // ROW_ITEMS, SIZE_SAMPLE_ROWS)
        if not n:
            return
        getsizeof = sys.getsizeof
        total = 0
        for start in range(-n * ROW_ITEMS, 0, ROW_ITEMS):
            total += getsizeof(incoming[start])
            src = incoming[start + 3]
            if src:
                total += getsizeof(src)
        mean = total / n
        if mean >= self.path_bytes:
            self.path_bytes = mean
        else:
            self.path_bytes += (mean - self.path_bytes) * SIZE_SAMPLE_WEIGHT
        self.capacity = self._rows_allowed()

    # -- the feeder's side -----------------------------------------------------------

    def take(self, limit: int | None = None) -> Flat:
        """Take up to ``limit`` waiting rows (flat) from the head, within the bound."""
        with self._lock:
            incoming = self.incoming
            n = min(len(incoming) // ROW_ITEMS, self.capacity - (self.taken - self.tally.finished))
            if limit is not None:
                n = min(n, limit)
            if n <= 0:
                return []
            size = n * ROW_ITEMS
            taken = incoming[:size]
            del incoming[:size]
            self.taken += n
        return taken

    def put_back(self, flat: Flat) -> None:
        """Return rows taken and not sent to the head (for the next writer process)."""
        with self._lock:
            self.incoming[0:0] = flat
            self.taken -= len(flat) // ROW_ITEMS

    def lose_waiting(self) -> int:
        """Give up every row still waiting (the writer could not take them before the end)."""
        with self._lock:
            left = len(self.incoming) // ROW_ITEMS
            self.incoming.clear()
            self.taken += left
        self.tally.add(lost=left)
        return left
