"""Print the daemon of this host and a table of watches; exit 0 when it runs, 3 when not."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ...conf import app_settings
from ...masks import describe_mask

#: LSB: "program is not running".
EXIT_NOT_RUNNING = 3


class Command(BaseCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Show whether the inotifier daemon runs on this host, and the state of every watch. "
        "Exit status 0 when it runs, 3 when it does not (LSB)."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all-hosts", action="store_true", help=_("Show the daemons of every host.")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...daemon.pidfile import running_pid
        from ...models import DaemonStatus, WatchState

        host = app_settings.hostname
        pid = running_pid(app_settings.pid_file)
        if pid is None:
            self.stdout.write(_("inotifier is not running on %s.") % host)
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    _("inotifier is running on %(host)s (pid %(pid)d).") % {"host": host, "pid": pid}
                )
            )
        try:
            daemons = DaemonStatus.objects.all()
            if not options["all_hosts"]:
                daemons = daemons.filter(host=host)
            for daemon in daemons:
                age = ""
                if daemon.heartbeat:
                    seconds = (timezone.now() - daemon.heartbeat).total_seconds()
                    age = _(" (%.0f s ago)") % seconds
                self.stdout.write(
                    _(
                        "host %(host)s: pid %(pid)s, started %(started)s, last heartbeat "
                        "%(heartbeat)s%(age)s, config version %(version)s, %(kw)s kernel watches, "
                        "%(events)s events, %(errors)s processor errors, %(overflows)s overflows, "
                        "%(dropped)s log rows dropped"
                    )
                    % {
                        "host": daemon.host,
                        "pid": daemon.pid if daemon.running else "-",
                        "started": daemon.started,
                        "heartbeat": daemon.heartbeat,
                        "age": age,
                        "version": daemon.version_applied,
                        "kw": daemon.kernel_watches,
                        "events": daemon.events,
                        "errors": daemon.errors,
                        "overflows": daemon.overflows,
                        "dropped": daemon.log_dropped,
                    }
                )
                if daemon.progress:
                    self.stdout.write(_("  in progress: %s") % daemon.progress)
            states = WatchState.objects.order_by("host", "path")
            if not options["all_hosts"]:
                states = states.filter(host=host)
            rows = [
                (
                    str(s.get_state_display()).upper(), s.source, s.path, describe_mask(s.mask), s.processor,
                    str(s.kernel_watches), str(s.events),
                    s.last_event.strftime("%Y-%m-%d %H:%M:%S") if s.last_event else "-",
                    s.message,
                )
                for s in states
            ]
        except DatabaseError as exc:
            self.stderr.write(self.style.WARNING(_("Database unavailable: %s") % exc))
            rows = []
        if rows:
            header = (
                _("STATE"), _("SOURCE"), _("PATH"), _("EVENTS"), _("PROCESSOR"),
                _("KWATCHES"), _("COUNT"), _("LAST EVENT"), _("MESSAGE"),
            )
            table = [tuple(str(c) for c in header), *rows]
            widths = [min(60, max(len(r[i]) for r in table)) for i in range(len(header) - 1)]
            for row in table:
                cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
                self.stdout.write("  ".join(cells) + "  " + row[-1])
        elif pid is not None:
            self.stdout.write(_("No watches reported yet."))
        if pid is None:
            sys.exit(EXIT_NOT_RUNNING)
