"""A processor for the progress test: while it is imported, a daemon pauses after a progress report.

Naming ``tests.progress_gate.GatedSignaler`` as the processor of a watch makes the
daemon import this module, which wraps ``Daemon.progress`` when the environment
variable ``INOTIFIER_TEST_PROGRESS_GATE`` names a file: after its first progress
report the daemon waits (at most a minute) until that file exists. The test reads
``inotifier_status`` during the pause, which a real large tree would leave time for.
"""

from __future__ import annotations

import os
import time
from typing import Any

from inotifier.daemon import status
from inotifier.event_processors import AllEventsSignaler

GATE_ENV = "INOTIFIER_TEST_PROGRESS_GATE"
_original_progress = status.StatusReporter.progress


def _gated_progress(self: Any, watch: Any, added: int, started: float, done: bool) -> None:
    _original_progress(self, watch, added, started, done)
    gate = os.environ.get(GATE_ENV)
    if not gate or done or getattr(self, "_test_gate_passed", False):
        return
    self._test_gate_passed = True
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)


if os.environ.get(GATE_ENV):
    status.StatusReporter.progress = _gated_progress  # type: ignore[method-assign]


class GatedSignaler(AllEventsSignaler):
    """AllEventsSignaler under another name; importing it installs the gate."""
