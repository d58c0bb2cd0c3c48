"""Tasks and TaskDispatchers for the hand-off tests: each task records what it received."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from inotifier.event_processors import TaskDispatcher

from .task_record import RECEIVED, record_line

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    try:
        from django_tasks import task  # type: ignore[no-redef,unused-ignore]
    except ImportError:
        task = None  # type: ignore[assignment]

#: Errors the next sends of the tests' flaky engine raise, in order.
FAIL_NEXT: list[BaseException] = []


if task is not None:

    @task()
    def record(event: dict[str, Any]) -> None:
        record_line(event)

    @task(backend="dummy")
    def record_dummy(event: dict[str, Any]) -> None:
        record_line(event)

    @task()
    def flaky(event: dict[str, Any]) -> None:
        RECEIVED.append(event)

    if "db" in settings.TASKS:

        @task(backend="db")
        def record_db(event: dict[str, Any]) -> None:
            record_line(event)


not_a_task = 42


class DjangoRecorder(TaskDispatcher):
    task = "tests.handoff_tasks.record"


class DummyRecorder(TaskDispatcher):
    task = "tests.handoff_tasks.record_dummy"


class DbRecorder(TaskDispatcher):
    task = "tests.handoff_tasks.record_db"


class CeleryRecorder(TaskDispatcher):
    task = "tests.celeryapp.record"


class NoTask(TaskDispatcher):
    pass


class MissingTask(TaskDispatcher):
    task = "tests.handoff_tasks.no_such_task"


class NotATask(TaskDispatcher):
    task = "tests.handoff_tasks.not_a_task"
