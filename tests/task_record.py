"""Where the hand-off tests' tasks record what they received (no Django needed: the Celery worker)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Events the in-process tasks received, in order (the immediate backend runs them at enqueue).
RECEIVED: list[dict[str, Any]] = []


def record_line(event: dict[str, Any]) -> None:
    """Append ``id<TAB>hex pathname`` to the file INOTIFIER_TEST_TASK_RECORD names (one write: atomic)."""
    path = os.environ.get("INOTIFIER_TEST_TASK_RECORD")
    if not path:
        RECEIVED.append(event)
        return
    line = f"{event['id']}\t{event['pathname'].encode('utf-8', 'surrogateescape').hex()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_records(path: Path) -> list[tuple[str, str]]:
    """Return the (event id, pathname) lines a task recorded, whole lines only."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        event_id, hexpath = line.split("\t")
        out.append((event_id, bytes.fromhex(hexpath).decode("utf-8", "surrogateescape")))
    return out
