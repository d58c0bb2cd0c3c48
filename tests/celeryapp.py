"""A tiny Celery app for the hand-off tests: its worker records every event it receives.

The broker and queue come from the environment (INOTIFIER_TEST_BROKER,
INOTIFIER_TEST_QUEUE): each test runs its own Redis server, or its own queue on
RabbitMQ. Run ``celery -A tests.celeryapp worker`` from the repository root.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from tests.task_record import record_line

app = Celery("inotifier_tests", broker=os.environ.get("INOTIFIER_TEST_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_default_queue=os.environ.get("INOTIFIER_TEST_QUEUE", "inotifier-tests"),
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
    task_ignore_result=True,
)


@app.task(name="tests.celeryapp.record")
def record(event: dict[str, Any]) -> None:
    record_line(event)
