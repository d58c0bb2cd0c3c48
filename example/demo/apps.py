"""The demo app: a receiver that says what was created, and when a chunked upload has arrived."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig

from inotifier.escaping import get_logger

# get_logger: a file name with a newline or a terminal escape is logged visibly escaped.
logger = get_logger("demo")


def file_created(sender: Any, event: Any, **kwargs: Any) -> None:
    """Log an ``in_create``: an upload only when CreateViaChunksSignaler saw its whole flow."""
    from inotifier.event_processors import CreateViaChunksSignaler

    if isinstance(sender, CreateViaChunksSignaler):
        # Sent for the final name only, once "name.part" was created, written and renamed.
        logger.info("upload complete: %s (written as %s)", event.pathname, event.src_pathname)
    else:
        logger.info(
            "%s created: %s (from %s)",
            "directory" if event.dir else "file",
            event.pathname,
            type(sender).__name__,
        )


class DemoConfig(AppConfig):
    name = "demo"

    def ready(self) -> None:
        from inotifier.signals import in_create

        in_create.connect(file_created, dispatch_uid="demo-file-created")
