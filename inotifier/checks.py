"""System checks for the inotifier settings (``manage.py check``)."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.apps import apps
from django.core.checks import Error, Tags, Warning, register

from .conf import app_settings, metrics_problems
from .handoff.engines import TaskRefError, load_task
from .specs import SpecError, load_processor, settings_problems


class Codes:
    SETTINGS = "inotifier.E001"
    PLATFORM = "inotifier.E002"
    PROCESSORS = "inotifier.E003"
    ROOTS = "inotifier.E004"
    METRICS = "inotifier.E005"
    TASK = "inotifier.E006"
    MISSING_PATH = "inotifier.W001"
    NO_ALLOWED_ROOTS = "inotifier.W002"


def task_problems(specs: Any) -> list[str]:
    """Return what is wrong with the ``task`` of each TaskDispatcher the settings entries name."""
    from .event_processors import TaskDispatcher

    problems = []
    for spec in specs:
        try:
            cls = load_processor(spec.processor)
        except SpecError:
            continue  # said by the entry's own error
        if not issubclass(cls, TaskDispatcher):
            continue
        where = f"INOTIFIER_WATCH_PATHS[{spec.key.split(':')[1]}]"
        if not cls.task:
            problems.append(
                f"{where}: {cls.__name__}.task is not set: name the task to call as a dotted path"
            )
            continue
        try:
            load_task(cls.task)
        except TaskRefError as exc:
            problems.append(f"{where}: {cls.__name__}.task: {exc}")
    return problems


def watch_path_problems() -> tuple[list[str], list[str]]:
    """Return (errors, warnings) about INOTIFIER_WATCH_PATHS, each naming the entry."""
    errors, specs = settings_problems()
    warnings = [
        f"INOTIFIER_WATCH_PATHS[{spec.key.split(':')[1]}]: path {spec.path!r} does not exist "
        "(yet); it is watched once it appears"
        for spec in specs
        if not os.path.exists(spec.path)
    ]
    return errors, warnings


@register(Tags.compatibility)
def check_platform(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    if sys.platform.startswith("linux"):
        return []
    return [
        Error(
            f"inotifier needs Linux: inotify does not exist on {sys.platform}.",
            hint="Run the inotifier daemon on a Linux host.",
            id=Codes.PLATFORM,
        )
    ]


@register()
def check_watch_paths(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors, warnings = watch_path_problems()
    messages: list[Any] = [
        Error(
            message,
            hint="Each entry is (absolute path, mask as int or 'IN_CREATE|IN_MOVED_TO', "
            "'dotted.path.to.ProcessEventSubclass').",
            obj="settings.INOTIFIER_WATCH_PATHS",
            id=Codes.SETTINGS,
        )
        for message in errors
    ]
    messages += [
        Warning(
            message,
            hint="Create the directory, or remove the entry.",
            obj="settings.INOTIFIER_WATCH_PATHS",
            id=Codes.MISSING_PATH,
        )
        for message in warnings
    ]
    messages += [
        Error(
            message,
            hint="Set the class attribute task to the dotted path of a Celery task or a django.tasks task.",
            obj="settings.INOTIFIER_WATCH_PATHS",
            id=Codes.TASK,
        )
        for message in task_problems(settings_problems()[1])
    ]
    cap = app_settings.INOTIFIER_SETTLE_MAX_PATHS
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        messages.append(
            Error(
                f"INOTIFIER_SETTLE_MAX_PATHS must be a positive integer (paths), not {cap!r}",
                obj="settings.INOTIFIER_SETTLE_MAX_PATHS",
                id=Codes.SETTINGS,
            )
        )
    return messages


@register(Tags.security)
def check_admin_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = []
    processors = app_settings.INOTIFIER_PROCESSORS
    if processors is not None and (
        isinstance(processors, str) or not all(isinstance(p, str) for p in processors)
    ):
        messages.append(
            Error(
                "INOTIFIER_PROCESSORS must be a list of dotted paths.",
                hint="For example ['inotifier.event_processors.AllEventsSignaler'].",
                obj="settings.INOTIFIER_PROCESSORS",
                id=Codes.PROCESSORS,
            )
        )
    roots = app_settings.INOTIFIER_ALLOWED_ROOTS
    if roots is None:
        if apps.is_installed("django.contrib.admin"):
            messages.append(
                Warning(
                    "INOTIFIER_ALLOWED_ROOTS is not set: admin users may watch any directory "
                    "the daemon can read.",
                    hint="Set INOTIFIER_ALLOWED_ROOTS to the directories watches may live under.",
                    obj="settings.INOTIFIER_ALLOWED_ROOTS",
                    id=Codes.NO_ALLOWED_ROOTS,
                )
            )
    else:
        items = [roots] if isinstance(roots, str) else list(roots)
        bad = [r for r in items if not isinstance(r, str) or not os.path.isabs(r)]
        if bad:
            messages.append(
                Error(
                    f"INOTIFIER_ALLOWED_ROOTS holds entries that are not absolute paths: {bad!r}",
                    hint="List absolute directory paths.",
                    obj="settings.INOTIFIER_ALLOWED_ROOTS",
                    id=Codes.ROOTS,
                )
            )
    return messages


@register()
def check_metrics_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    return [
        Error(
            message,
            hint="See the Monitoring section of docs/deployment.md.",
            obj="settings.INOTIFIER_METRICS_*",
            id=Codes.METRICS,
        )
        for message in metrics_problems()
    ]
