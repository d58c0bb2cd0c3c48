"""The task engines a TaskDispatcher names: a Celery task, or a task of Django's tasks framework."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from django.db import DatabaseError
from django.utils.module_loading import import_string


class TaskRefError(ValueError):
    """The dotted path of a task names nothing usable; the message says what and why."""


class Engine(Protocol):
    """One task, as the dispatcher hands events to it."""

    name: str  # "celery" or "django.tasks"
    #: Most payloads one ``send`` takes: 1 when the engine cannot say which of several it accepted.
    batch: int
    #: Errors that say the engine cannot be reached now (broker or backend down): retried
    #: for as long as it takes. Any other error is blamed on the row (dead after N attempts).
    transient: tuple[type[BaseException], ...]

    def send(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Hand every payload to the engine; return only once the engine accepted them all.

        When it raises, none of them counts as accepted (some may have been:
        the hand-off is at least once).
        """
        ...

    def close(self) -> None:
        """Release connections (the dispatcher stops, or the engine failed)."""
        ...


def is_celery_task(obj: object) -> bool:
    """Return True for a Celery task (``@app.task``, ``@shared_task``)."""
    try:
        from celery import Task as CeleryTask
    except ImportError:
        return False
    try:
        return isinstance(obj, CeleryTask)
    except Exception:  # a shared_task proxy that cannot be evaluated
        return False


def is_django_task(obj: object) -> bool:
    """Return True for a task of ``django.tasks`` (Django 6) or of the django-tasks backport."""
    classes: list[type] = []
    try:
        from django.tasks import Task as DjangoTask  # type: ignore[import-not-found,unused-ignore]

        classes.append(DjangoTask)
    except ImportError:
        pass
    try:
        from django_tasks import Task as BackportTask  # type: ignore[attr-defined,unused-ignore]

        classes.append(BackportTask)
    except (ImportError, AttributeError):
        try:
            from django_tasks.base import Task as BackportTask

            classes.append(BackportTask)
        except ImportError:
            pass
    return bool(classes) and isinstance(obj, tuple(classes))


def load_task(dotted: object) -> tuple[str, Any]:
    """Import the task named by ``dotted``; return (engine name, task); TaskRefError saying why not."""
    if not isinstance(dotted, str) or not dotted.strip():
        raise TaskRefError(f"task must be the dotted path of a task, not {dotted!r}")
    try:
        obj = import_string(dotted.strip())
    except ImportError as exc:
        raise TaskRefError(f"task {dotted!r} cannot be imported: {exc}") from None
    except Exception as exc:  # a module that fails on import must not take the caller down
        raise TaskRefError(f"task {dotted!r} failed while importing: {type(exc).__name__}: {exc}") from None
    if is_celery_task(obj):
        return CeleryEngine.name, obj
    if is_django_task(obj):
        return DjangoTasksEngine.name, obj
    raise TaskRefError(
        f"task {dotted!r} is a {type(obj).__name__}, not a Celery task (@shared_task, @app.task) "
        "nor a task of Django's tasks framework (@task of django.tasks or django_tasks)"
    )


def resolve(dotted: object, publish_timeout: float = 10.0) -> Engine:
    """Return the engine of the task named by ``dotted``; TaskRefError saying why not."""
    kind, task = load_task(dotted)
    if kind == CeleryEngine.name:
        return CeleryEngine(task, publish_timeout)
    return DjangoTasksEngine(task)


class CeleryEngine:
    """Publish to a Celery broker on a connection of the dispatcher's own.

    The connection has bounded timeouts (connect, socket, publish confirm) and,
    on RabbitMQ, publisher confirms: a message counts as accepted once the
    broker said so. Celery's own publish retries are off (``retry=False``):
    the outbox retries. A batch of messages goes out through kombu's publish
    batch where the transport has one (Redis: one pipeline per batch). The
    message is the one ``apply_async`` builds (routes, the task's options),
    with the task id set to ``event["id"]``.
    """

    name = "celery"
    batch = 500

    def __init__(self, task: Any, publish_timeout: float) -> None:
        from kombu import exceptions as kombu_errors

        self.task = task
        self.app = task.app
        self.timeout = float(publish_timeout)
        self._connection: Any = None
        self._producer: Any = None
        self._declared: set[str] = set()  # queues declared on the current connection
        base: tuple[type[BaseException], ...] = (OSError, socket.timeout, kombu_errors.OperationalError)
        # kombu >= 5.7: a Redis publish batch whose pipeline failed (the broker went away).
        batch_error = getattr(kombu_errors, "BatchPublishError", None)
        if batch_error is not None:
            base += (batch_error,)
        probe = self.app.connection_for_write()
        try:
            transport = probe.transport
            self.driver = str(getattr(transport, "driver_type", ""))
            self.transient = base + tuple(probe.connection_errors) + tuple(probe.channel_errors)
        finally:
            probe.release()

    def _transport_options(self) -> dict[str, Any]:
        t = self.timeout
        if self.driver == "redis":
            return {"socket_timeout": t, "socket_connect_timeout": t}
        if self.driver == "amqp":
            return {"confirm_publish": True, "read_timeout": t, "write_timeout": t}
        return {}

    def _producer_for(self) -> Any:
        if self._producer is None:
            connection = self.app.connection_for_write(
                transport_options=self._transport_options(), connect_timeout=self.timeout
            )
            connection.ensure_connection(max_retries=1, timeout=self.timeout)
            self._connection = connection
            self._producer = self.app.amqp.Producer(connection, auto_declare=True)
        return self._producer

    def send(self, payloads: Sequence[dict[str, Any]]) -> None:
        from celery.utils.nodenames import anon_nodename

        app = self.app
        amqp = app.amqp
        task = self.task
        name = task.name
        options = {k: v for k, v in (task._get_exec_options() or {}).items() if v is not None}
        limits = {k: options.pop(k, None) for k in ("time_limit", "soft_time_limit", "expires")}
        options.pop("ignore_result", None)
        # Without task_routes the route depends on the task alone: found once per batch.
        # With them (a router may look at the arguments) it is found for each message.
        fixed_route = None if app.conf.task_routes else amqp.router.route(dict(options), name, (), {}, task)
        origin = anon_nodename()  # what create_task_message would compute for every message
        try:
            producer = self._producer_for()
            batch = getattr(producer, "batch", None)  # kombu >= 5.7
            grouped = batch(max(1, len(payloads))) if batch is not None else contextlib.nullcontext()
            with grouped:
                for payload in payloads:
                    kwargs = {"event": payload}
                    shown = f"{{'event': {{'id': {payload['id']!r}, 'pathname': {payload['pathname']!r}}}}}"
                    route = fixed_route or amqp.router.route(dict(options), name, (), kwargs, task)
                    message = amqp.create_task_message(
                        payload["id"],
                        name,
                        (),
                        kwargs,
                        argsrepr="()",
                        kwargsrepr=shown,
                        origin=origin,
                        **limits,
                    )
                    queue = route.get("queue")
                    qname = getattr(queue, "name", queue)
                    # Declared once per connection (kombu would, at a copy per message).
                    declare: list[Any] | None = None if qname is None or qname not in self._declared else []
                    amqp.send_task_message(
                        producer, name, message, retry=False, timeout=self.timeout, declare=declare, **route
                    )
                    if qname is not None:
                        self._declared.add(qname)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        self._declared = set()
        if connection is not None:
            try:
                connection.release()
            except Exception:
                pass


class DjangoTasksEngine:
    """Enqueue on a task of Django's tasks framework (``task.enqueue(event=...)``).

    What "accepted" means is the backend's: a database backend has written its
    row (in the transaction that marks the outbox row done, when both share the
    database), the immediate backend has run the task.
    """

    name = "django.tasks"
    batch = 1  # each enqueue is its own acceptance
    transient: tuple[type[BaseException], ...] = (DatabaseError, OSError)

    def __init__(self, task: Any) -> None:
        self.task = task

    def send(self, payloads: Sequence[dict[str, Any]]) -> None:
        enqueue = self.task.enqueue
        for payload in payloads:
            enqueue(event=payload)

    def close(self) -> None:
        pass
