"""A processor for the progress test: while it is in use, a daemon pauses after a progress report.

Naming ``tests.progress_gate.GatedSignaler`` as the processor of a watch makes the
daemon create one, which connects a receiver to ``inotifier.signals.setup_progress``
when the environment variable ``INOTIFIER_TEST_PROGRESS_GATE`` names a file: after
the first report the daemon waits (at most a minute) until that file exists. The
test reads ``inotifier_status`` during the pause, which a real large tree would
leave time for.
"""

from __future__ import annotations

import os
import time
from typing import Any

from inotifier import signals
from inotifier.event_processors import AllEventsSignaler

GATE_ENV = "INOTIFIER_TEST_PROGRESS_GATE"


def _wait_at_the_gate(sender: Any, done: bool = False, **kwargs: Any) -> None:
    gate = os.environ.get(GATE_ENV)
    if not gate or done:
        return
    signals.setup_progress.disconnect(_wait_at_the_gate)  # once
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)


class GatedSignaler(AllEventsSignaler):
    """AllEventsSignaler that, once created in a daemon, holds it after its first progress report."""

    def my_init(self, **kwargs: Any) -> None:
        super().my_init(**kwargs)
        if os.environ.get(GATE_ENV):
            signals.setup_progress.connect(_wait_at_the_gate, weak=False)
