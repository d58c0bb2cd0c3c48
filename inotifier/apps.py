"""App config: registers the system checks."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InotifierConfig(AppConfig):
    name = "inotifier"
    verbose_name = _("File monitoring (inotify)")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
        from . import handoff  # isort: skip
        from .outbox import DirectSink

        # TaskDispatcher outside the daemon writes each row at once; the daemon installs its own.
        handoff.set_fallback(DirectSink())
