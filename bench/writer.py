"""The event source: a process creating files as fast as it can (or paced).

Each file is opened with O_CREAT, written once and closed, which raises
IN_CREATE, IN_OPEN, IN_MODIFY and IN_CLOSE_WRITE (``EVENTS_PER_FILE``).

Usage (prints one JSON line: ``t_start``, ``t_end`` in monotonic ns, ``files``)::

    python -m bench.writer burst DIR N          # N files, no pause
    python -m bench.writer latency DIR N GAP_S  # N files, GAP_S seconds apart;
                                                # each is named after the
                                                # monotonic_ns taken just
                                                # before its creation
"""

from __future__ import annotations

import json
import os
import sys
import time

_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC
_DATA = b"x"


def create_files(directory: str, count: int, prefix: str = "f") -> tuple[int, int]:
    """Create ``count`` files in ``directory`` as fast as possible.

    Returns (t_start, t_end) in monotonic ns.
    """
    names = [f"{directory}/{prefix}{i:07d}" for i in range(count)]
    open_, write, close = os.open, os.write, os.close
    flags, data = _FLAGS, _DATA
    t_start = time.monotonic_ns()
    for path in names:
        fd = open_(path, flags, 0o644)
        write(fd, data)
        close(fd)
    return t_start, time.monotonic_ns()


def create_paced(directory: str, count: int, gap_s: float) -> tuple[int, int]:
    """Create ``count`` files ``gap_s`` apart, each named after the
    monotonic_ns read just before its open()."""
    t_start = time.monotonic_ns()
    for _ in range(count):
        t = time.monotonic_ns()
        fd = os.open(f"{directory}/{t}", _FLAGS, 0o644)
        os.write(fd, _DATA)
        os.close(fd)
        time.sleep(gap_s)
    return t_start, time.monotonic_ns()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    mode, directory, count = argv[0], argv[1], int(argv[2])
    if mode == "burst":
        t_start, t_end = create_files(directory, count)
    elif mode == "latency":
        t_start, t_end = create_paced(directory, count, float(argv[3]))
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps({"t_start": t_start, "t_end": t_end, "files": count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
