"""Receivers used by daemons started in tests: they append events to INOTIFIER_TEST_RECORD."""

from __future__ import annotations

import os
import time
from typing import Any

import pyinotify

from inotifier import signals


def record(signal_name: str, event: Any) -> None:
    path = os.environ.get("INOTIFIER_TEST_RECORD")
    if not path:
        return
    line = f"{signal_name}\t{os.fsencode(event.pathname).hex()}\t{event.maskname}\t{time.time()!r}\n"
    with open(path, "a") as fh:
        fh.write(line)


def make_receiver(name: str) -> Any:
    def receiver(sender: Any, event: Any, **kwargs: Any) -> None:
        if os.environ.get("INOTIFIER_TEST_RAISE") and os.path.basename(
            getattr(event, "pathname", "")
        ).startswith("boom"):
            raise RuntimeError(f"receiver exploded on {event.pathname}")
        record(name, event)

    return receiver


_receivers = {name: make_receiver(name) for name in signals.SIGNALS}


def connect() -> None:
    if not os.environ.get("INOTIFIER_TEST_RECORD"):
        return
    for name, signal in signals.SIGNALS.items():
        signal.connect(_receivers[name], dispatch_uid=f"tests-{name}")


def sqlite_wal(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")


class RaisingProcessor(pyinotify.ProcessEvent):
    """A processor that raises on every event (for fault tests)."""

    def process_default(self, event: Any) -> None:
        raise ValueError(f"processor exploded on {event.pathname}")


class SlowProcessor(pyinotify.ProcessEvent):
    """A processor that takes 50 ms per event and records it."""

    def process_default(self, event: Any) -> None:
        import time

        time.sleep(0.05)
        record("slow", event)


class StuckProcessor(pyinotify.ProcessEvent):
    """A processor that blocks the daemon's loop for 2 s on each event, then records it."""

    def process_default(self, event: Any) -> None:
        import time

        time.sleep(2.0)
        record("stuck", event)


class RecordingProcessor(pyinotify.ProcessEvent):
    """Record every event under the name "processor"."""

    def process_default(self, event: Any) -> None:
        record("processor", event)


NOT_A_CLASS = 42


class NotAProcessor:
    pass


class ListProcessor(pyinotify.ProcessEvent):
    """Keep events in a class-level list (for daemons driven in the test process)."""

    seen: list[Any] = []

    def process_default(self, event: Any) -> None:
        ListProcessor.seen.append(event)
