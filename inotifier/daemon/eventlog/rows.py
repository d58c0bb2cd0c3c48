"""The event log's row: its one layout, from the read loop's flat list to a database row."""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from typing import cast

from ...escaping import escape_path
from ...masks import event_maskname

#: Items per row in the read loop's flat list: pathname, time.time(), key, src pathname or "".
#: The key is (the watch's index in the tails table << 32) | the event's mask.
ROW_ITEMS = 4
MASK_BITS = 0xFFFFFFFF

#: The read loop's rows, flat: ROW_ITEMS items per row.
Flat = list[str | float | int]
#: A watch's part of its rows: (WatchPath id or None for a settings entry, label).
Tail = tuple["int | None", str]
#: One logged event, built from the flat list: (time.time(), pathname, src_pathname or "",
#: mask, maskname, tail). The tail is shared by the rows of a watch.
Row = tuple[float, str, str, int, str, Tail]


def append_row(rows: Flat, pathname: str, ts: float, key: int, src: str) -> None:
    """Append one row to a flat list, as the read loop does inline (``ActiveWatch.deliver``)."""
    rows += (pathname, ts, key, src)


_MASKNAMES: dict[int, str] = {}


def maskname_of(mask: int) -> str:
    """``event.maskname`` for ``mask`` (cached: a handful of masks make up all events)."""
    name = _MASKNAMES.get(mask)
    if name is None:
        try:
            name = event_maskname(mask)
        except Exception:
            name = f"0x{mask:x}"
        if len(_MASKNAMES) < 4096:
            _MASKNAMES[mask] = name
    return name


def rows_from_flat(flat: Flat, tails: list[Tail]) -> list[Row]:
    """Return the rows of a flat list, their tails looked up in ``tails``."""
    if len(flat) % ROW_ITEMS:
        raise ValueError("a row list whose length is not a multiple of ROW_ITEMS")
    rows: list[Row] = []
    append = rows.append
    it = iter(flat)
    # The layout is by position (pathname, time, key, src): one cast for the whole list.
    quads = cast(Iterator[tuple[str, float, int, str]], zip(it, it, it, it, strict=True))
    for pathname, ts, key, src in quads:
        mask = key & MASK_BITS
        append((ts, pathname, src, mask, maskname_of(mask), tails[key >> 32]))
    return rows


def pack_rows(flat: Flat, new_tails: list[Tail]) -> bytes:
    """Return a frame's payload: the tails the other end has not seen yet, and the flat rows."""
    return marshal.dumps((new_tails, flat))


def unpack_rows(payload: bytes, tails: list[Tail]) -> list[Row]:
    """Return the rows of a payload made by ``pack_rows``; ``tails`` (the receiver's table) grows first."""
    new_tails, flat = marshal.loads(payload)
    tails.extend(tuple(tail) for tail in new_tails)
    return rows_from_flat(flat, tails)


def escape_pair(pathname: str, src: str) -> tuple[str, str, bool]:
    """Return (pathname, src_pathname, escaped) as stored: both escaped or neither.

    ``EventLog.escaped`` covers both columns, so when one name needs escaping
    the other is escaped too (for valid UTF-8 that only doubles backslashes).
    """
    path_text, path_escaped = escape_path(pathname)
    src_text, src_escaped = escape_path(src) if src else ("", False)
    if path_escaped != src_escaped and src:
        if not path_escaped:
            path_text = pathname.replace("\\", "\\\\")
        else:
            src_text = src.replace("\\", "\\\\")
    return path_text, src_text, path_escaped or src_escaped
