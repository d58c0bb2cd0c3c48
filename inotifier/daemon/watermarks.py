"""Catch-up watermarks: how far each watch of this host has been delivered, never past an unsure event."""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ..escaping import get_logger
from ..specs import WatchSpec
from .dbguard import DatabaseGuard

logger = get_logger("inotifier.daemon.catchup")

#: Seconds a mark stays behind the moment it stands for: file timestamps come from the
#: kernel's coarse clock (a few ms behind time.time()) and the reader thread may not have
#: read what the kernel queued a moment ago. A file changed within it is delivered again.
MARGIN_SECONDS = 2.0
#: Seconds between two samples of "everything read was processed" (the mark's candidates).
SAMPLE_EVERY = 0.5
#: Samples kept: a mark held back longer than this many samples by an unsure event simply waits.
SAMPLES = 64


def mark_key(spec: WatchSpec) -> str:
    """Return the key of a watch's watermark: stable when the settings are reordered.

    A row is its primary key (the same on every host, so a failover finds the
    previous holder's mark); a settings entry is its path and processor.
    """
    if spec.watch_id is not None:
        return f"row:{spec.watch_id}"
    text = f"{spec.path}\n{spec.processor}".encode("utf-8", "surrogateescape")
    return "settings:" + hashlib.sha256(text).hexdigest()[:40]


class Marked(Protocol):
    """What a watermark asks of its watch (an ``ActiveWatch``)."""

    spec: WatchSpec

    @property
    def processor(self) -> object: ...

    def held_since(self) -> float | None: ...


@dataclass
class Track:
    """One watch's mark in memory: where it stands, and from when samples count for it."""

    watch: Marked
    mark: float | None  # time.time(); None: never watched on this host
    floor: float  # samples taken before this moment do not count (the watch's start or scan end)
    frozen: bool = False  # a catch-up scan runs: the mark stays where the scan started from
    dirty: bool = False  # moved since it was written
    gone: bool = False  # the watch is no longer held: dropped once its mark is written
    unknown: bool = False  # the stored mark could not be read: the first scan delivers everything


def blocker(watch: Marked) -> float | None:
    """Return the time of the oldest event of ``watch`` processed but not yet safe, or None."""
    oldest = watch.held_since()
    pending = getattr(watch.processor, "inotifier_pending_since", None)
    if pending is not None:
        try:
            since = pending()
        except Exception:
            logger.exception("inotifier_pending_since() of watch %s raised", watch.spec.key)
            return 0.0  # unknown: the mark does not move
        if since is not None and (oldest is None or since < oldest):
            oldest = since
    return oldest


class Watermarks:
    """The watermarks of this host's catch-up watches: moved at each heartbeat, written with it.

    The loop records when everything read from the kernel had been processed
    (``drained``). A sample X becomes a watch's mark (minus ``MARGIN_SECONDS``)
    once no event that watch processed at or before X is still unsure (held by
    settle, or not yet committed to the outbox): any file the daemon may have
    lost changed after the mark, so the next start delivers it again.
    """

    def __init__(self, hostname: str, guard: DatabaseGuard | None) -> None:
        self.hostname = hostname
        self.guard = guard
        self.samples: deque[float] = deque(maxlen=SAMPLES)
        self.tracks: dict[str, Track] = {}
        self._stored: dict[str, float] | None = None  # this host's marks, read once

    # -- the loop's side -----------------------------------------------------------------------

    def drained(self, when: float) -> None:
        """Note that every event read before ``when`` (time.time()) was processed."""
        samples = self.samples
        if not samples or when - samples[-1] >= SAMPLE_EVERY:
            samples.append(when)

    def begin(self, watch: Marked) -> float | None:
        """Start tracking ``watch`` (frozen until ``end``); return its mark (None: first start)."""
        key = mark_key(watch.spec)
        track = self.tracks.get(key)
        if track is None:
            ok, mark = self._stored_mark(watch.spec, key)
            track = self.tracks[key] = Track(watch, mark, time.time(), unknown=not ok)
        track.watch = watch
        track.frozen = True
        track.gone = False
        if track.unknown:
            # The database did not answer: deliver everything rather than miss a file.
            logger.warning("watch %s: its catch-up watermark could not be read; every file is delivered", key)
            track.unknown = False
            return float("-inf")
        return track.mark

    def end(self, watch: Marked, when: float | None = None) -> None:
        """The watch is caught up (or needed no scan): samples from ``when`` on move its mark."""
        track = self.tracks.get(mark_key(watch.spec))
        if track is not None and track.watch is watch:
            track.frozen = False
            track.floor = time.time() if when is None else when

    def forget(self, watch: Marked) -> None:
        """Stop moving the mark of a watch no longer held (a mark not yet written still is)."""
        key = mark_key(watch.spec)
        track = self.tracks.get(key)
        if track is not None and track.watch is watch:
            track.frozen = track.gone = True
            if not track.dirty:
                del self.tracks[key]

    def current(self, watch: Marked) -> float | None:
        """Return the watch's mark, moved as far as it safely can be now."""
        track = self.tracks.get(mark_key(watch.spec))
        if track is None:
            return None
        self._move(track)
        return track.mark

    def refresh(self) -> None:
        """Move every watch's mark as far as it safely can (at each heartbeat)."""
        for track in self.tracks.values():
            self._move(track)

    def _move(self, track: Track) -> None:
        if track.frozen or not self.samples:
            return
        oldest = blocker(track.watch)
        for sample in reversed(self.samples):
            if sample < track.floor:
                return
            if oldest is None or oldest > sample:
                mark = sample - MARGIN_SECONDS
                if track.mark is None or mark > track.mark:
                    track.mark = mark
                    track.dirty = True
                return

    # -- the database ------------------------------------------------------------------------------

    def _stored_mark(self, spec: WatchSpec, key: str) -> tuple[bool, float | None]:
        """Return (read?, the stored mark or None)."""
        guard = self.guard
        if guard is None:
            return True, None
        try:
            if spec.exclusive:
                # Taken over from another host: start where the newest holder got to.
                done, newest = guard.call(lambda: _newest_mark(key), force=True)
                return done, newest
            if self._stored is None:
                done, stored = guard.call(lambda: _host_marks(self.hostname), force=True)
                if not done or stored is None:
                    return False, None
                self._stored = stored
        except Exception:
            logger.exception("reading the catch-up watermarks failed")
            return False, None
        return True, self._stored.get(key)

    def write(self, stopping: bool = False) -> list[str]:
        """Write the marks that moved (inside the caller's transaction); return their keys.

        At a clean stop, the marks of rows that no longer exist, and of settings
        entries no longer watched with catch-up, are pruned.
        """
        from ..models import WatchPath, Watermark

        dirty = [(key, track) for key, track in self.tracks.items() if track.dirty and track.mark is not None]
        if dirty:
            Watermark.objects.bulk_create(
                [
                    Watermark(
                        host=self.hostname,
                        key=key,
                        path=track.watch.spec.path[:4096],
                        mark=datetime.fromtimestamp(track.mark, UTC),  # type: ignore[arg-type]
                    )
                    for key, track in dirty
                ],
                update_conflicts=True,
                unique_fields=["host", "key"],
                update_fields=["path", "mark", "updated"],
                batch_size=1000,
            )
        if stopping:
            mine = Watermark.objects.filter(host=self.hostname)
            rows = {f"row:{pk}" for pk in WatchPath.objects.values_list("pk", flat=True)}
            gone = [k for k in mine.values_list("key", flat=True) if k.startswith("row:") and k not in rows]
            gone += [
                k
                for k in mine.filter(key__startswith="settings:").values_list("key", flat=True)
                if k not in self.tracks
            ]
            if gone:
                mine.filter(key__in=gone).delete()
        return [key for key, _track in dirty]

    def written(self, keys: list[str]) -> None:
        """The marks of ``keys`` are in the database."""
        for key in keys:
            track = self.tracks.get(key)
            if track is not None:
                track.dirty = False
                if self._stored is not None and track.mark is not None:
                    self._stored[key] = track.mark
                if track.gone:
                    del self.tracks[key]


def _host_marks(hostname: str) -> dict[str, float]:
    from ..models import Watermark

    rows = Watermark.objects.filter(host=hostname).values_list("key", "mark")
    return {key: mark.timestamp() for key, mark in rows}


def _newest_mark(key: str) -> float | None:
    from django.db.models import Max

    from ..models import Watermark

    newest = Watermark.objects.filter(key=key).aggregate(newest=Max("mark"))["newest"]
    return None if newest is None else newest.timestamp()
