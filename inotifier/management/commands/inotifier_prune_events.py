"""Delete old EventLog rows (for cron): by age and by count, in small batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _


class Command(BaseCommand):
    help = _(
        "Delete event log rows older than INOTIFIER_EVENT_LOG_MAX_AGE seconds and beyond the "
        "newest INOTIFIER_EVENT_LOG_MAX_ROWS rows, in small batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=float, default=None, help=_("Seconds to keep rows."))
        parser.add_argument("--max-rows", type=int, default=None, help=_("Rows to keep."))

    def handle(self, *args: Any, **options: Any) -> None:
        from ...daemon.eventlog import prune_events

        deleted = prune_events(options["max_age"], options["max_rows"])
        self.stdout.write(self.style.SUCCESS(_("%d event log rows deleted.") % deleted))
