"""The pipe between the daemon and its writer process: frames of a kind byte, a length, a payload.

daemon -> writer:
    ``C`` the configuration (a pickled ``StoreConfig``, first frame), ``R`` rows
    (``rows.pack_rows``: new tails and a flat row list), ``S`` stop (write what
    is left, exit).
writer -> daemon:
    ``A`` what was done so far (marshal: written, rejected, lost, pruned,
    cumulative), ``L`` a log record (a pickled dict), ``D`` done (clean exit).
"""

from __future__ import annotations

import contextlib
import os
import struct

CONFIG = b"C"
ROWS = b"R"
STOP = b"S"
DONE_SO_FAR = b"A"
LOG = b"L"
DONE = b"D"

HEADER = struct.Struct("<cI")
#: Pipe capacity asked for (the kernel may give less): room for several frames.
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


class ProtocolError(Exception):
    """The other end sent something that is not a frame."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """Return one frame."""
    return HEADER.pack(kind, len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int) -> bytes:
    """Read ``n`` bytes; b"" at a clean end of file, ProtocolError in mid-frame."""
    parts: list[bytes] = []
    while n:
        part = os.read(fd, n)
        if not part:
            if parts:
                raise ProtocolError("end of file in the middle of a frame")
            return b""
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def read_frame(fd: int) -> tuple[bytes, bytes] | None:
    """Return (kind, payload), or None at end of file."""
    header = _read_exact(fd, HEADER.size)
    if not header:
        return None
    kind, length = HEADER.unpack(header)
    payload = _read_exact(fd, length) if length else b""
    if length and not payload:
        raise ProtocolError("end of file in the middle of a frame")
    return kind, payload


def grow_pipe(fd: int) -> None:
    """Ask for a bigger pipe (the kernel may give less; nothing breaks if it refuses)."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
