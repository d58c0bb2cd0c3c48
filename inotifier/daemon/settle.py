"""Settle: a watch's events held per path until the path is quiet, then delivered collapsed."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from typing import Any, Protocol, TypeAlias

from ..conf import app_settings
from ..escaping import get_logger
from ..masks import IN_DELETE_SELF, IN_IGNORED, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_UNMOUNT
from ..specs import WatchSpec

logger = get_logger("inotifier.daemon.settle")

#: Events never held: they say a kernel watch went (or events were lost), not that a file
#: changed. What is held for their path is delivered first, then they follow at once.
IMMEDIATE_BITS = IN_IGNORED | IN_UNMOUNT | IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW

#: One held event type of a path, the last of its kind: (mask, how many it stands for, wd,
#: cookie, path, src_pathname of a paired IN_MOVED_TO or "", synthetic). The name is not
#: kept: it is the pathname past ``path + "/"`` (a bare tuple: a million of them are held).
Kept: TypeAlias = tuple[int, int, int, int, str, str, bool]
#: A path's entry: [first, last (time.monotonic()), pathname, Kept, Kept, ...], the event
#: types in the order of their last occurrence. Emptied once delivered.
Entry: TypeAlias = list[Any]


class Emit(Protocol):
    """Deliver one event as the watch does an unsettled one (``ActiveWatch.deliver`` given ``src``)."""

    def __call__(
        self,
        wd: int,
        mask: int,
        cookie: int,
        name: str,
        path: str,
        pathname: str,
        synthetic: bool = False,
        src: str | None = None,
        count: int = 1,
    ) -> None: ...


class Hold:
    """The events of one settled watch, held per path until that path is quiet.

    A path is due when no event came for it during ``quiet`` seconds, or
    ``longest`` seconds after the first event of its entry (a file that never
    stops changing). ``entries`` is ordered by each path's last event, so the
    quiet paths are at its front; ``oldest`` lists the entries in the order of
    their first event, for ``longest``. An event costs one update of its path's
    entry: no event object is built until the entry is delivered.
    """

    __slots__ = ("cap", "early", "entries", "longest", "oldest", "quiet")

    def __init__(self, quiet: float, longest: float, cap: int = 1_000_000) -> None:
        self.quiet = quiet
        self.longest = longest
        #: Paths held at most: beyond, the least recently changed are delivered before they are
        #: quiet (an uploader who creates files without end cannot make the daemon's memory grow
        #: without end). Checked by ``release()``: between two loop turns it may be passed by the
        #: events of one turn.
        self.cap = max(1, cap)
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.oldest: deque[Entry] = deque()  # delivered entries stay, emptied, until they reach the front

    def __len__(self) -> int:
        """Return how many paths are held."""
        return len(self.entries)

    def __repr__(self) -> str:
        return f"<Hold {len(self.entries)} paths, settle {self.quiet:g} s, at most {self.longest:g} s>"

    def add(self, pathname: str, mask: int, wd: int, cookie: int, path: str, src: str, synth: bool) -> bool:
        """Hold one event; return True when it is the first one held (the hold was empty)."""
        now = time.monotonic()
        entries = self.entries
        entry = entries.get(pathname)
        if entry is None:
            entry = [now, now, pathname, (mask, 1, wd, cookie, path, src, synth)]
            entries[pathname] = entry
            self.oldest.append(entry)
            return len(entries) == 1
        entries.move_to_end(pathname)
        entry[1] = now
        last = entry[-1]
        if last[0] == mask:  # the same type again, replaced in place (bench/settle.py, chunked)
            entry[-1] = (mask, last[1] + 1, wd, cookie, path, src, synth)
            return False
        for i in range(3, len(entry) - 1):
            kept = entry[i]
            if kept[0] == mask:  # its last occurrence moves it to the end
                del entry[i]
                entry.append((mask, kept[1] + 1, wd, cookie, path, src, synth))
                return False
        entry.append((mask, 1, wd, cookie, path, src, synth))
        return False

    def touch(self, pathname: str) -> None:
        """Count an event the mask does not deliver: the path's quiet period starts again."""
        entry = self.entries.get(pathname)
        if entry is not None:
            self.entries.move_to_end(pathname)
            entry[1] = time.monotonic()

    def next_due(self) -> float:
        """Return the ``time.monotonic()`` at which a held path is due (inf: nothing held)."""
        entries = self.entries
        if not entries:
            return math.inf
        if len(entries) > self.cap:
            return 0.0  # over the cap: due now
        due: float = entries[next(iter(entries))][1] + self.quiet
        oldest = self._oldest()
        if oldest is not None:
            due = min(due, oldest[0] + self.longest)
        return due

    def held_since(self) -> float | None:
        """Return the ``time.time()`` of the oldest event held now (None: nothing held)."""
        oldest = self._oldest()
        if oldest is None:
            return None
        return time.time() - (time.monotonic() - oldest[0])

    def _oldest(self) -> Entry | None:
        oldest = self.oldest
        while oldest and not oldest[0]:
            oldest.popleft()  # delivered when it was quiet
        return oldest[0] if oldest else None

    def release(self, emit: Emit, until: float) -> int:
        """Deliver the due paths until ``until`` (``time.monotonic()``); return the events delivered."""
        now = time.monotonic()
        entries = self.entries
        delivered = 0
        if len(entries) > self.cap:
            delivered += self._over_cap(emit)
        quiet_since = now - self.quiet
        while entries:
            pathname, entry = entries.popitem(last=False)
            if entry[1] > quiet_since:  # not quiet yet: back to the front, where it was
                entries[pathname] = entry
                entries.move_to_end(pathname, last=False)
                break
            delivered += deliver(entry, emit)
            if time.monotonic() >= until:
                return delivered
        oldest = self.oldest
        first_before = now - self.longest
        while oldest:
            entry = oldest[0]
            if entry and entry[0] > first_before:
                break
            oldest.popleft()
            if entry:  # held since settle_max: delivered though the path still changes
                del entries[entry[2]]
                delivered += deliver(entry, emit)
                if time.monotonic() >= until:
                    break
        return delivered

    def _over_cap(self, emit: Emit) -> int:
        """Deliver the least recently changed paths beyond ``cap``, before they are quiet."""
        entries = self.entries
        over = len(entries) - self.cap
        logger.warning(
            "a settled watch holds %d paths, more than INOTIFIER_SETTLE_MAX_PATHS (%d): the %d that "
            "changed least recently are delivered now, before they are quiet",
            len(entries),
            self.cap,
            over,
        )
        delivered = 0
        for _ in range(over):
            delivered += deliver(entries.popitem(last=False)[1], emit)
        return delivered

    def release_path(self, pathname: str, emit: Emit) -> None:
        """Deliver what is held for ``pathname`` now (an event that is never held follows)."""
        entry = self.entries.pop(pathname, None)
        if entry is not None:
            deliver(entry, emit)

    def flush(self, emit: Emit) -> int:
        """Deliver everything held, oldest quiet first; return the events delivered."""
        entries = self.entries
        delivered = 0
        while entries:
            delivered += deliver(entries.popitem(last=False)[1], emit)
        self.oldest.clear()
        return delivered


def deliver(entry: Entry, emit: Emit) -> int:
    """Deliver a path's entry, one event per type, each with the count it stands for; empty it."""
    pathname = entry[2]
    kept = entry[3:]
    entry.clear()
    for mask, count, wd, cookie, path, src, synthetic in kept:
        name = pathname[len(path) + 1 :] if pathname != path else ""
        emit(wd, mask, cookie, name, path, pathname, synthetic, src, count)
    return len(kept)


def hold_for(spec: WatchSpec) -> Hold | None:
    """Return a hold for a spec that settles (None: its events are delivered at once)."""
    if spec.settle <= 0:
        return None
    return Hold(spec.settle, spec.settle_max or spec.settle, max_paths())


def max_paths() -> int:
    """Return INOTIFIER_SETTLE_MAX_PATHS (the default when it is not a positive integer: see checks)."""
    value = app_settings.INOTIFIER_SETTLE_MAX_PATHS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return 1_000_000
    return value


def retune(hold: Hold | None, spec: WatchSpec, emit: Emit) -> Hold | None:
    """Return the hold for a changed spec: the same one with the new times, or None once flushed.

    Held paths are kept through a change of ``settle`` / ``settle_max`` (due by
    the new times); turning settle off delivers them at once.
    """
    if hold is None:
        return hold_for(spec)
    if spec.settle > 0:
        hold.quiet, hold.longest = spec.settle, spec.settle_max or spec.settle
        return hold
    flush(hold, emit, spec, "settle turned off")
    return None


def flush(hold: Hold | None, emit: Emit, spec: WatchSpec, why: str) -> int:
    """Deliver everything ``hold`` keeps, saying so at INFO with the count; return it."""
    if hold is None or not hold.entries:
        return 0
    paths = len(hold.entries)
    delivered = hold.flush(emit)
    logger.info(
        "watch %s (%s): %s; %d held events of %d paths delivered", spec.label, spec.key, why, delivered, paths
    )
    return delivered
