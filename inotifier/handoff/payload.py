"""The row a TaskDispatcher appends for one event, and the JSON dict a task receives for it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..escaping import escape_path


class WatchRef(NamedTuple):
    """What a TaskDispatcher knows of its watch and its task: the same for each of its rows."""

    task: str  # dotted path of the task
    key: str  # the watch's key ("row:<pk>", "settings:<n>"); "" outside the daemon
    label: str  # the watch's path as shown
    watch_id: int | None  # the WatchPath pk, None for a settings entry
    host: str


#: One event as the read loop appends it (cheap: a tuple of what the event already holds).
#: The payload, its id and the JSON are made later, off the loop.
class Pending(NamedTuple):
    ref: WatchRef
    pathname: str
    path: str
    name: str
    mask: int
    maskname: str
    dir: bool
    src_pathname: str | None
    synthetic: bool
    collapsed: int  # events this one stands for (``event.count``, settle)
    time: float  # time.time() when the processor accepted it


def _utf8(text: str | None) -> bool:
    if text is None or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str | None) -> str | None:
    """Return ``text`` as the event log stores an escaped name (``unescape_path`` reverses it)."""
    if text is None:
        return None
    if _utf8(text):
        return text.replace("\\", "\\\\")  # only the backslashes, like escape_path does
    return escape_path(text)[0]


def build_payload(row: Pending, event_id: str) -> dict[str, Any]:
    """Return the ``event`` dict a task gets for ``row`` (JSON types only).

    Names that are valid UTF-8 are given as they are. When one is not (a file
    name with bytes of another encoding), the four names are escaped the way
    the event log stores them (backslashes doubled, each undecodable byte as
    ``\\xNN``), ``escaped`` is True, and
    ``inotifier.escaping.unescape_path(event["pathname"])`` gives the bytes back.
    """
    pathname, path, name, src = row.pathname, row.path, row.name, row.src_pathname
    escaped = not (_utf8(pathname) and _utf8(path) and _utf8(name) and _utf8(src))
    if escaped:
        pathname, path, name = _escaped(pathname), _escaped(path), _escaped(name)  # type: ignore[assignment]
        src = _escaped(src)
    ref = row.ref
    return {
        "id": event_id,
        "pathname": pathname,
        "path": path,
        "name": name,
        "maskname": row.maskname,
        "mask": row.mask,
        "dir": bool(row.dir),
        "src_pathname": src,
        "watch": ref.key,
        "host": ref.host,
        "time": datetime.fromtimestamp(row.time, UTC).isoformat(),
        "synthetic": bool(row.synthetic),
        "count": int(row.collapsed),
        "escaped": escaped,
    }
