"""Stop the inotifier daemon of this host."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ...escaping import printable
from ._base import InotifierCommand


class Command(InotifierCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Stop the inotifier daemon: SIGTERM, wait, then SIGKILL. Only a process that holds "
        "the pid file's lock (a real inotifier daemon) is ever signalled."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help=_("Seconds to wait after SIGTERM before sending SIGKILL (default 10)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...daemon.process import StopError, stop_daemon

        try:
            pid, killed = stop_daemon(options["timeout"])
        except StopError as exc:
            raise CommandError(printable(str(exc), backslash=False)) from None  # names the pid file
        if killed:
            self.stdout.write(
                self.style.WARNING(_("File monitoring killed (pid %d did not stop in time)") % pid)
            )
        else:
            self.stdout.write(self.style.SUCCESS(_("File monitoring stopped (pid %d)") % pid))
