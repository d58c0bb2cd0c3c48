"""The demo app: a receiver that says when a chunked upload has arrived."""

import logging

from django.apps import AppConfig

logger = logging.getLogger("demo")


class DemoConfig(AppConfig):
    name = "demo"

    def ready(self) -> None:
        from inotifier.signals import in_create

        def upload_arrived(sender, event, **kwargs):  # type: ignore[no-untyped-def]
            logger.info("upload complete: %s (via %s)", event.pathname, getattr(event, "src_pathname", "?"))

        in_create.connect(upload_arrived, dispatch_uid="demo-upload-arrived", weak=False)
