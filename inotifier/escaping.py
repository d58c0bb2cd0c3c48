"""Untrusted names made safe to store, log and print: lossless escaping and control characters shown."""

from __future__ import annotations

import logging
import os
import traceback
from types import TracebackType

#: Characters that are printable but still make a shown name ambiguous.
_AMBIGUOUS = "\\"


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, backslash: bool = True) -> str:
    """Return ``text`` with everything that could forge a line or drive a terminal made visible.

    Control characters (C0, DEL, C1: newlines, ANSI and OSC escapes), line and
    paragraph separators, bidirectional and other format controls (U+202E ...),
    and bytes that were not UTF-8 become ``\\xNN`` / ``\\uNNNN``; with
    ``backslash`` a literal backslash is doubled, so the result reads one way
    only. Letters of any script, emoji and spaces are kept. The fast path (a
    plain name) returns ``text`` itself.
    """
    if text.isprintable() and not (backslash and _AMBIGUOUS in text):
        return text
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\" if backslash else char)
        elif char.isprintable():
            out.append(char)
        else:
            out.append(_escape_char(char))
    return "".join(out)


def escape_path(path: str) -> tuple[str, bool]:
    """Return (text safe for the database, escaped?) for a path from os.fsdecode.

    Valid UTF-8 names are kept as they are. A name holding undecodable bytes
    (surrogate escapes) gets its backslashes doubled and each such byte written
    as ``\\xNN``, which ``unescape_path`` reverses exactly.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace"), True
    return path, False


def unescape_path(text: str) -> bytes:
    """Return the bytes of a path escaped by ``escape_path``."""
    out = bytearray()
    data = text.encode("utf-8")
    i = 0
    while i < len(data):
        if data[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif data[i : i + 2] == b"\\x":
            out.append(int(data[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


# -- log records -------------------------------------------------------------------


def printable_lines(text: str) -> str:
    """Escape control characters in each line of ``text``, keeping its own line breaks."""
    return "\n".join(printable(line, backslash=False) for line in text.split("\n"))


def safe_traceback(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> str:
    """Return the traceback text of ``exc_info`` with control characters in messages escaped.

    A message such as ``RuntimeError(f"failed on {pathname}")`` carries the
    name as it is: a newline in it would start a forged log line. The
    structure (stack frames, "During handling ..." lines) keeps its breaks.
    """
    seen: set[int] = set()
    te: traceback.TracebackException | None = traceback.TracebackException(*exc_info, compact=True)
    pending = [te]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        message = getattr(current, "_str", None)
        if isinstance(message, str):
            current._str = printable(message, backslash=False)  # type: ignore[attr-defined]
        pending += [current.__cause__, current.__context__]
    assert te is not None
    return "".join(te.format()).rstrip("\n")


class EscapeControlCharacters(logging.Filter):
    """Make every record of a logger safe to write: one record, one line of its own.

    File names are chosen by whoever can write in a watched tree. A newline or
    an ANSI/OSC escape in one would otherwise forge log lines or take over the
    terminal of whoever reads the log; here they are shown as ``\\n``, ``\\x1b``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "inotifier_escaped", False):
            return True
        message = record.getMessage()
        safe = printable(message, backslash=False)
        if safe is not message:
            record.msg, record.args = safe, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            try:
                record.exc_text = safe_traceback(record.exc_info)
            except Exception:  # never lose the record over its traceback
                pass
        record.inotifier_escaped = True
        return True


_FILTER = EscapeControlCharacters()


def get_logger(name: str) -> logging.Logger:
    """Return ``logging.getLogger(name)`` with control characters escaped in its records."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
