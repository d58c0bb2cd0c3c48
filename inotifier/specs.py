"""WatchSpec, the desired set of watches, and the validation shared by checks, admin and daemon."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyinotify
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from .conf import app_settings
from .escaping import printable
from .masks import MaskError, parse_mask


class SpecError(ValueError):
    """A watch entry that cannot be used; the message names what is wrong."""


@dataclass(frozen=True)
class WatchSpec:
    """One desired watch: what to watch, which events, and who processes them."""

    key: str  # "settings:<n>" or "row:<pk>": identity across reconciles
    path: str
    mask: int
    processor: str
    recursive: bool = False
    auto_add: bool = False
    excludes: tuple[str, ...] = ()
    event_log: bool = True
    label: str = ""
    watch_id: int | None = None  # WatchPath pk, None for settings entries
    #: One daemon at a time (WatchPath.exclusive): held through a lease; see daemon/exclusive.py.
    exclusive: bool = False
    #: Real directories the watch may never leave (INOTIFIER_ALLOWED_ROOTS), None: no fence.
    #: Checked on the opened directory at every (re)attach, so a root swapped for a link is caught.
    fence: tuple[str, ...] | None = None
    #: Seconds a path must be quiet before its events are delivered, collapsed (0: off).
    settle: float = 0.0
    #: Seconds after which a path that never stops changing is delivered anyway (0 when settle is off).
    settle_max: float = 0.0
    #: What the watch delivers at each start: None, "changed" (since it was last watched) or "all".
    catch_up: str | None = None
    error: str = field(default="", compare=True)  # set when the entry is unusable

    @property
    def source(self) -> str:
        """Return ``"settings"`` or ``"admin"``."""
        return "settings" if self.watch_id is None else "admin"


def is_excluded(path: str, patterns: tuple[str, ...]) -> bool:
    """Return True when ``path`` (absolute) or its last part matches one of ``patterns``."""
    if not patterns:
        return False
    base = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        target = path if "/" in pattern else base
        if fnmatch.fnmatchcase(target, pattern):
            return True
    return False


def parse_excludes(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return the exclude patterns of a text (one per line) or an iterable."""
    if not text:
        return ()
    lines = text.splitlines() if isinstance(text, str) else list(text)
    return tuple(line.strip() for line in lines if line and line.strip())


# -- validation of the parts ---------------------------------------------------------


def validate_path(path: object) -> str:
    """Return ``path`` normalised; raise SpecError unless it is an absolute path string."""
    if not isinstance(path, str):
        raise SpecError(_("path must be a string, not %(type)s") % {"type": type(path).__name__})
    if not path:
        raise SpecError(_("path is empty"))
    if "\x00" in path:
        raise SpecError(_("path contains a NUL byte"))
    if not path.isprintable():
        # A newline, an ANSI/OSC escape or U+202E in a watched path would forge
        # log lines, drive a terminal or make the path read as another one.
        bad = ", ".join(dict.fromkeys(printable(c) for c in path if not c.isprintable()))
        raise SpecError(
            _("path '%(path)s' contains a control or invisible character (%(chars)s)")
            % {"path": printable(path), "chars": bad}
        )
    if not os.path.isabs(path):
        raise SpecError(_("path %(path)r is not absolute") % {"path": path})
    return os.path.normpath(path)


def allowed_roots() -> list[str] | None:
    """Return INOTIFIER_ALLOWED_ROOTS resolved (symlinks followed), or None when unset."""
    roots = app_settings.INOTIFIER_ALLOWED_ROOTS
    if roots is None:
        return None
    if isinstance(roots, str):
        roots = [roots]
    return [os.path.realpath(str(root)) for root in roots]


def is_within(real: str, roots: Iterable[str]) -> bool:
    """Return True when ``real`` (a path with symlinks resolved) is one of ``roots`` or below one."""
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)


def fence_for(path: str, roots: list[str] | None, *, row: bool) -> tuple[str, ...] | None:
    """Return the directories a watch of ``path`` may never leave, or None (no fence).

    A row from the admin is fenced by INOTIFIER_ALLOWED_ROOTS. A settings entry
    is the project's own choice: fenced by the allowed roots when it lies inside
    them, so a link swapped in later cannot take it out; else trusted as written.
    """
    if roots is None:
        return None
    if row or is_within(os.path.realpath(path), roots):
        return tuple(roots)
    return None


def validate_allowed_root(path: str) -> None:
    """Raise SpecError when ``path``, symlinks and ``..`` resolved, is outside the allowed roots."""
    roots = allowed_roots()
    if roots is None:
        return
    real = os.path.realpath(path)
    if is_within(real, roots):
        return
    shown = ", ".join(roots) or "(none)"
    raise SpecError(
        _("path %(path)r (really %(real)r) is outside INOTIFIER_ALLOWED_ROOTS (%(roots)s)")
        % {"path": path, "real": real, "roots": shown}
    )


def validate_mask(mask: object) -> int:
    """Return the mask as an int; raise SpecError naming the problem."""
    try:
        return parse_mask(mask)
    except MaskError as exc:
        raise SpecError(str(exc)) from None


def load_processor(dotted: object) -> type[pyinotify.ProcessEvent]:
    """Import and return a ProcessEvent subclass named by dotted path; SpecError otherwise."""
    if not isinstance(dotted, str) or not dotted.strip():
        raise SpecError(_("processor must be a dotted path string, not %(value)r") % {"value": dotted})
    try:
        obj = import_string(dotted.strip())
    except ImportError as exc:
        raise SpecError(
            _("processor %(p)r cannot be imported: %(error)s") % {"p": dotted, "error": exc}
        ) from None
    except Exception as exc:  # a module that fails on import must not take the caller down
        raise SpecError(
            _("processor %(p)r failed while importing: %(type)s: %(error)s")
            % {"p": dotted, "type": type(exc).__name__, "error": exc}
        ) from None
    if not isinstance(obj, type):
        raise SpecError(_("processor %(p)r is not a class") % {"p": dotted})
    if not issubclass(obj, pyinotify.ProcessEvent):
        raise SpecError(_("processor %(p)r is not a pyinotify.ProcessEvent subclass") % {"p": dotted})
    return obj


def processor_allowlist() -> tuple[str, ...]:
    """Return the processors rows may name: INOTIFIER_PROCESSORS or the default list."""
    from .event_processors import BUILTIN_PROCESSORS

    configured = app_settings.INOTIFIER_PROCESSORS
    if configured is not None:
        return tuple(str(p) for p in configured)
    names = list(BUILTIN_PROCESSORS)
    for entry in settings_entries()[0]:
        if (
            isinstance(entry, (tuple, list))
            and len(entry) in (3, 4)
            and isinstance(entry[2], str)
            and entry[2] not in names
        ):
            names.append(entry[2])
    return tuple(names)


def validate_processor_allowed(dotted: str, allowlist: tuple[str, ...] | None = None) -> None:
    """Raise SpecError when ``dotted`` is not in the processor allowlist (nothing is imported).

    The one allowlist check: the form, ``WatchPath.clean``, and the daemon before
    it imports anything for a row (which passes the ``allowlist`` it computed once).
    """
    if dotted not in (processor_allowlist() if allowlist is None else allowlist):
        raise SpecError(
            _("processor %(p)r is not in INOTIFIER_PROCESSORS (the processors this site allows)")
            % {"p": dotted}
        )


#: Longest settle a watch may ask for (seconds): events held longer are better a scheduled job.
SETTLE_LIMIT = 3600.0
#: ``settle_max`` when not given: this many times ``settle``.
SETTLE_MAX_FACTOR = 10
#: The values ``catch_up`` takes (None: off).
CATCH_UP_CHOICES = ("changed", "all")


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(
            _("%(name)s must be a number of seconds, not %(value)r") % {"name": name, "value": value}
        )
    seconds = float(value)
    if not 0 <= seconds <= SETTLE_LIMIT:  # also refuses NaN
        raise SpecError(
            _("%(name)s must be between 0 and %(limit)d seconds, not %(value)r")
            % {"name": name, "value": value, "limit": SETTLE_LIMIT}
        )
    return seconds


def validate_settle(settle: object, settle_max: object = None) -> tuple[float, float]:
    """Return (settle, settle_max) in seconds; settle_max defaults to 10 x settle (0: settle off)."""
    quiet = _seconds("settle", 0 if settle is None else settle)
    if settle_max is None:
        return quiet, min(quiet * SETTLE_MAX_FACTOR, SETTLE_LIMIT)
    longest = _seconds("settle_max", settle_max)
    if quiet == 0:
        if longest:
            raise SpecError(_("settle_max is set but settle is 0 (off)"))
        return 0.0, 0.0
    if longest < quiet:
        raise SpecError(
            _("settle_max (%(max)s s) is shorter than settle (%(settle)s s)")
            % {"max": longest, "settle": quiet}
        )
    return quiet, longest


def validate_catch_up(value: object) -> str | None:
    """Return the catch-up mode: None, "changed" or "all" ("" and None are off)."""
    if value is None or value == "":
        return None
    if value not in CATCH_UP_CHOICES:
        raise SpecError(_("catch_up must be None, 'changed' or 'all', not %(value)r") % {"value": value})
    return str(value)


# -- settings entries -------------------------------------------------------------


def settings_entries() -> tuple[list[Any], str]:
    """Return INOTIFIER_WATCH_PATHS as a list of entries, and the error when it is not a list.

    The one reading of the setting: the checks, the daemon and the allowlist
    all see the same entries (a dict, a string or a number is no list of
    entries: no entry, and the error says why).
    """
    raw = app_settings.INOTIFIER_WATCH_PATHS
    if raw is None:
        return [], ""
    if isinstance(raw, (str, bytes, dict)) or not isinstance(raw, Iterable):
        return [], (
            "INOTIFIER_WATCH_PATHS must be a list or tuple of (path, mask, processor) "
            f"tuples, not {type(raw).__name__}"
        )
    return list(raw), ""


#: Keys the optional 4th item of a settings entry (a dict) may hold.
SETTINGS_OPTIONS = ("recursive", "auto_add", "exclude", "event_log", "settle", "settle_max", "catch_up")


def validate_settings_entry(index: int, entry: object, *, import_processor: bool = True) -> WatchSpec:
    """Return the WatchSpec of one INOTIFIER_WATCH_PATHS entry; SpecError names what is wrong.

    An entry is ``(path, mask, processor)``, optionally followed by a dict of
    options (``recursive``, ``auto_add``, ``exclude``, ``event_log``, ``settle``,
    ``settle_max``, ``catch_up``).
    """
    where = f"INOTIFIER_WATCH_PATHS[{index}]"
    if not isinstance(entry, (tuple, list)) or len(entry) not in (3, 4):
        if isinstance(entry, (tuple, list)):
            what = _("has %(n)d items") % {"n": len(entry)}
        else:
            what = _("is a %(type)s") % {"type": type(entry).__name__}
        raise SpecError(
            _("%(where)s %(what)s; expected a (path, mask, processor) 3-tuple: %(entry)r")
            % {"where": where, "what": what, "entry": entry}
        )
    path, mask, processor = entry[:3]
    options = entry[3] if len(entry) == 4 else {}
    try:
        if not isinstance(options, dict):
            raise SpecError(
                _("the 4th item must be a dict of options, not %(type)s") % {"type": type(options).__name__}
            )
        unknown = sorted(set(options) - set(SETTINGS_OPTIONS))
        if unknown:
            raise SpecError(
                _("unknown option(s) %(unknown)s; known: %(known)s")
                % {"unknown": ", ".join(map(repr, unknown)), "known": ", ".join(SETTINGS_OPTIONS)}
            )
        norm = validate_path(path)
        int_mask = validate_mask(mask)
        settle, settle_max = validate_settle(options.get("settle"), options.get("settle_max"))
        catch_up = validate_catch_up(options.get("catch_up"))
        if import_processor:
            load_processor(processor)
        elif not isinstance(processor, str):
            raise SpecError(_("processor must be a dotted path string, not %(value)r") % {"value": processor})
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return WatchSpec(
        key=f"settings:{index}",
        path=norm,
        mask=int_mask,
        processor=str(processor),
        recursive=bool(options.get("recursive", False)),
        auto_add=bool(options.get("auto_add", False)),
        excludes=parse_excludes(options.get("exclude")),
        event_log=bool(options.get("event_log", True)),
        label=norm,
        fence=fence_for(norm, allowed_roots(), row=False),
        settle=settle,
        settle_max=settle_max,
        catch_up=catch_up,
    )


def settings_problems() -> tuple[list[str], list[WatchSpec]]:
    """Return (errors, specs) for INOTIFIER_WATCH_PATHS; errors name each bad entry."""
    entries, error = settings_entries()
    if error:
        return [error], []
    errors: list[str] = []
    specs: list[WatchSpec] = []
    for index, entry in enumerate(entries):
        try:
            specs.append(validate_settings_entry(index, entry))
        except SpecError as exc:
            errors.append(str(exc))
    return errors, specs


def settings_specs() -> Iterator[WatchSpec]:
    """Yield the usable WatchSpecs from settings; a bad entry is yielded with ``error`` set."""
    for index, entry in enumerate(settings_entries()[0]):
        try:
            yield validate_settings_entry(index, entry, import_processor=False)
        except SpecError as exc:
            label = entry[0] if isinstance(entry, (tuple, list)) and entry else repr(entry)
            yield WatchSpec(
                key=f"settings:{index}",
                path=str(label),
                mask=0,
                processor="",
                label=str(label),
                error=str(exc),
            )


#: WatchPath fields a spec is built from, in the order ``values_list`` returns them.
ROW_FIELDS = (
    "pk",
    "path",
    "mask",
    "processor",
    "recursive",
    "auto_add",
    "exclude",
    "event_log",
    "exclusive",
    "settle",
    "settle_max",
    "catch_up",
)


def spec_from_values(
    values: tuple[Any, ...], allowlist: tuple[str, ...], roots: list[str] | None
) -> WatchSpec:
    """Return the WatchSpec of one row given as ``ROW_FIELDS`` values."""
    pk, path, mask, processor, recursive, auto_add, exclude, event_log, exclusive = values[:9]
    settle_raw, settle_max_raw, catch_up_raw = values[9:]
    error = ""
    norm = path
    int_mask = int(mask or 0)
    settle, settle_max, catch_up = 0.0, 0.0, None
    try:
        norm = validate_path(path)
        int_mask = validate_mask(int_mask)
        settle, settle_max = validate_settle(settle_raw or 0, settle_max_raw)
        catch_up = validate_catch_up(catch_up_raw)
        # Checked before anything is imported: an admin must not make the daemon
        # import code the site did not allow.
        validate_processor_allowed(processor, allowlist)
        if roots is not None:
            validate_allowed_root(norm)
    except SpecError as exc:
        error = str(exc)
    return WatchSpec(
        key=f"row:{pk}",
        path=norm,
        mask=int_mask,
        processor=processor,
        recursive=bool(recursive),
        auto_add=bool(auto_add),
        excludes=parse_excludes(exclude),
        event_log=bool(event_log),
        label=norm,
        watch_id=pk,
        exclusive=bool(exclusive),
        error=error,
        fence=tuple(roots) if roots is not None else None,
        settle=settle,
        settle_max=settle_max,
        catch_up=catch_up,
    )


class RowSpecs:
    """Build row specs, reusing the spec of every row whose values did not change.

    With thousands of rows a reconcile after one change validates one row, and
    the unchanged specs are the very same objects, so the diff compares them by
    identity first.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], WatchSpec] = {}
        self._context: tuple[Any, ...] = ()

    def clear(self) -> None:
        """Forget every cached spec (a forced resync re-validates everything)."""
        self._cache = {}

    def build(self, rows: Iterable[tuple[Any, ...]]) -> dict[str, WatchSpec]:
        """Return the desired set: settings entries plus ``rows`` (``ROW_FIELDS`` tuples)."""
        allowlist = processor_allowlist()
        roots = allowed_roots()
        context = (allowlist, tuple(roots) if roots is not None else None)
        if context != self._context:
            self._cache = {}
            self._context = context
        cache = self._cache
        fresh: dict[tuple[Any, ...], WatchSpec] = {}
        desired = {spec.key: spec for spec in settings_specs()}
        for values in rows:
            spec = cache.get(values)
            if spec is None:
                spec = spec_from_values(values, allowlist, roots)
            fresh[values] = spec
            desired[spec.key] = spec
        self._cache = fresh
        return desired
