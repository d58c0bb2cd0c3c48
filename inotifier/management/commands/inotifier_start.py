"""Start the inotifier daemon (detached by default, or ``--foreground``)."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ...checks import watch_path_problems
from ...conf import metrics_problems
from ...daemon.pidfile import AlreadyRunning, PidFileError
from ...escaping import printable, printable_lines
from ._base import InotifierCommand


class Command(InotifierCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Start the inotifier daemon that watches INOTIFIER_WATCH_PATHS and the WatchPath rows. "
        "It detaches and returns once the daemon is watching, unless --foreground is given."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--foreground",
            action="store_true",
            help=_("Run attached to the terminal, logging to stderr (systemd, supervisor, containers)."),
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help=_("Seconds to wait for the detached daemon to report it is watching."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not sys.platform.startswith("linux"):
            raise CommandError(_("inotifier needs Linux (inotify); this is %s.") % sys.platform)
        errors, warnings = watch_path_problems()
        errors += metrics_problems()
        if errors:
            raise CommandError(
                _("Invalid inotifier configuration:\n  %s")
                % "\n  ".join(printable(error, backslash=False) for error in errors)
            )
        for warning in warnings:
            self.stderr.write(self.style.WARNING(_("Warning: %s") % printable(warning, backslash=False)))
        from ...daemon import process

        verbosity = int(options["verbosity"])
        try:
            if options["foreground"]:
                code = process.run_foreground(verbosity)
                if code:
                    raise CommandError(_("The daemon stopped with exit code %d.") % code)
                return
            pid = process.start_daemon(verbosity, options["timeout"])
        except AlreadyRunning as exc:
            raise CommandError(
                _("inotifier is already running (pid %(pid)s); stop it first with inotifier_stop.")
                % {"pid": exc.pid}
            ) from None
        except (PidFileError, process.StartError) as exc:
            # The message names files (pid, output) whose names anyone may have chosen.
            raise CommandError(_("File monitoring did not start: %s") % printable_lines(str(exc))) from None
        if os.getpid() != pid:
            self.stdout.write(self.style.SUCCESS(_("File monitoring started (pid %d)") % pid))
