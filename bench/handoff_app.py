"""The Celery app, the task and the two processors compared by bench/handoff.py.

``NaiveDelay`` is the processor a user writes today: ``.delay()`` per event,
from the daemon's read loop. ``Outbox`` is ``TaskDispatcher`` naming the same
task. Both publish to the broker in BENCH_BROKER, queue BENCH_QUEUE.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pyinotify
from celery import Celery

from inotifier.event_processors import TaskDispatcher

app = Celery("inotifier_bench", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.task_default_queue = os.environ.get("BENCH_QUEUE", "inotifier-bench")
app.conf.task_ignore_result = True


@app.task(name="bench.handoff_app.process_file")
def process_file(event: Any) -> None:
    """Nothing: no worker runs during the benchmark, the queue's length is what is measured."""


class Stats:
    """What the naive processor saw: calls, failures (events lost), the longest stall of the loop."""

    calls = 0
    failed = 0
    blocked = 0.0
    longest = 0.0


class NaiveDelay(pyinotify.ProcessEvent):
    def process_IN_CLOSE_WRITE(self, event: Any) -> None:
        started = time.perf_counter()
        Stats.calls += 1
        try:
            process_file.delay(event.pathname)
        except Exception:
            Stats.failed += 1  # the daemon would log it and go on: this event is lost
        finally:
            took = time.perf_counter() - started
            Stats.blocked += took
            Stats.longest = max(Stats.longest, took)


class Outbox(TaskDispatcher):
    task = "bench.handoff_app.process_file"
