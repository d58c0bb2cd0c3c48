"""Inotify event names and bits: parse ``"IN_CREATE|IN_MOVED_TO"``, describe an int."""

from __future__ import annotations

from functools import cache

import pyinotify
from django.utils.translation import gettext as _

#: Events a watch can ask for, in the order the admin shows them.
EVENT_NAMES: tuple[str, ...] = (
    "IN_ACCESS",
    "IN_ATTRIB",
    "IN_CLOSE_NOWRITE",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_MODIFY",
    "IN_MOVE_SELF",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_OPEN",
)
#: Events the kernel sends whatever the mask (they may still be named in one).
KERNEL_EVENT_NAMES: tuple[str, ...] = ("IN_IGNORED", "IN_Q_OVERFLOW", "IN_UNMOUNT")
#: Flags that change how a watch behaves rather than naming an event.
FLAG_NAMES: tuple[str, ...] = ("IN_DONT_FOLLOW", "IN_EXCL_UNLINK", "IN_ONLYDIR")

BITS: dict[str, int] = {
    name: int(pyinotify.EventsCodes.ALL_FLAGS[name])
    for name in EVENT_NAMES + KERNEL_EVENT_NAMES + FLAG_NAMES + ("IN_ISDIR",)
}
ALL_EVENTS: int = 0
for _name in EVENT_NAMES:
    ALL_EVENTS |= BITS[_name]
EVENT_BITS: int = ALL_EVENTS | BITS["IN_IGNORED"] | BITS["IN_Q_OVERFLOW"] | BITS["IN_UNMOUNT"]
#: Every bit a configured mask may hold.
VALID_BITS: int = EVENT_BITS | BITS["IN_DONT_FOLLOW"] | BITS["IN_EXCL_UNLINK"] | BITS["IN_ONLYDIR"]
#: Aliases accepted when parsing, as pyinotify spells them.
ALIASES: dict[str, int] = {
    "ALL_EVENTS": ALL_EVENTS,
    "IN_CLOSE": BITS["IN_CLOSE_WRITE"] | BITS["IN_CLOSE_NOWRITE"],
    "IN_MOVE": BITS["IN_MOVED_FROM"] | BITS["IN_MOVED_TO"],
}

# The bits the daemon tests itself, named once.
IN_ISDIR = BITS["IN_ISDIR"]
IN_Q_OVERFLOW = BITS["IN_Q_OVERFLOW"]
IN_IGNORED = BITS["IN_IGNORED"]
IN_UNMOUNT = BITS["IN_UNMOUNT"]
IN_CREATE = BITS["IN_CREATE"]
IN_DELETE = BITS["IN_DELETE"]
IN_CLOSE_WRITE = BITS["IN_CLOSE_WRITE"]
IN_MOVED_FROM = BITS["IN_MOVED_FROM"]
IN_MOVED_TO = BITS["IN_MOVED_TO"]
IN_DELETE_SELF = BITS["IN_DELETE_SELF"]
IN_MOVE_SELF = BITS["IN_MOVE_SELF"]
IN_ONLYDIR = BITS["IN_ONLYDIR"]
IN_DONT_FOLLOW = BITS["IN_DONT_FOLLOW"]


class MaskError(ValueError):
    """A mask that is not a usable set of inotify events."""


def parse_mask(value: object) -> int:
    """Return the int for a mask given as an int or as ``"IN_CREATE|IN_MOVED_TO"``.

    Raise MaskError naming the culprit when the value is empty, names an unknown
    event or holds bits outside the inotify range.
    """
    if isinstance(value, bool):
        raise MaskError(_("mask must be an int or a string of event names, not %(value)r") % {"value": value})
    if isinstance(value, int):
        mask = value
    elif isinstance(value, str):
        mask = 0
        for part in value.replace(",", "|").split("|"):
            name = part.strip().upper()
            if not name:
                continue
            if not name.startswith("IN_") and name != "ALL_EVENTS":
                name = "IN_" + name
            if name in ALIASES:
                mask |= ALIASES[name]
            elif name in BITS and name != "IN_ISDIR":
                mask |= BITS[name]
            else:
                raise MaskError(_("unknown event name %(name)r") % {"name": part.strip()})
    else:
        raise MaskError(
            _("mask must be an int or a string of event names, not %(type)s") % {"type": type(value).__name__}
        )
    if mask < 0:
        raise MaskError(_("mask %(mask)d is negative") % {"mask": mask})
    if mask & ~VALID_BITS:
        raise MaskError(
            _("mask %(mask)#x has bits outside the inotify events (%(bits)#x)")
            % {"mask": mask, "bits": mask & ~VALID_BITS}
        )
    if not mask & EVENT_BITS:
        raise MaskError(_("mask names no event (it is 0)"))
    return mask


@cache
def mask_names(mask: int) -> tuple[str, ...]:
    """Return the event and flag names set in ``mask`` (``ALL_EVENTS`` folded)."""
    names: list[str] = []
    if mask & ALL_EVENTS == ALL_EVENTS:
        names.append("ALL_EVENTS")
        rest = mask & ~ALL_EVENTS
    else:
        rest = mask
    for name in EVENT_NAMES + KERNEL_EVENT_NAMES + FLAG_NAMES + ("IN_ISDIR",):
        if rest & BITS[name]:
            names.append(name)
    return tuple(names)


def describe_mask(mask: int) -> str:
    """Return ``mask`` as ``"IN_CREATE|IN_MOVED_TO"``."""
    return "|".join(mask_names(mask)) or "0"


@cache
def event_maskname(mask: int) -> str:
    """Return the maskname pyinotify gives an event with this mask (``IN_CREATE|IN_ISDIR``)."""
    return str(pyinotify.EventsCodes.maskname(mask))
