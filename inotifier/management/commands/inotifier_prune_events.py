"""Delete old EventLog rows (for cron): by age and by count, in small batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ...escaping import printable
from ._base import InotifierCommand


class Command(InotifierCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Delete event log rows older than INOTIFIER_EVENT_LOG_MAX_AGE seconds and beyond the "
        "newest INOTIFIER_EVENT_LOG_MAX_ROWS rows, in small batches (each its own short "
        "statement, so the daemon keeps writing meanwhile)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help=_("Seconds to keep rows (default: INOTIFIER_EVENT_LOG_MAX_AGE; 0: no age limit)."),
        )
        parser.add_argument(
            "--max-rows",
            type=int,
            default=None,
            help=_("Rows to keep (default: INOTIFIER_EVENT_LOG_MAX_ROWS; 0: no count limit)."),
        )
        parser.add_argument(
            "--batch",
            type=int,
            default=1000,
            help=_("Rows deleted per statement (default: 1000)."),
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help=_("Database alias to prune (default: %(default)s)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...models import EventLog

        for name in ("max_age", "max_rows"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(
                    _("--%(option)s must be 0 or more, not %(value)s.")
                    % {"option": name.replace("_", "-"), "value": options[name]}
                )
        if options["batch"] < 1:
            raise CommandError(_("--batch must be at least 1."))
        try:
            deleted, _done = EventLog.objects.using(options["database"]).prune(
                options["max_age"], options["max_rows"], options["batch"]
            )
        except DatabaseError as exc:
            raise CommandError(
                _(
                    "Could not prune the event log: %(error)s (is the database reachable and "
                    "migrated? run manage.py migrate inotifier)"
                )
                % {"error": printable(str(exc), backslash=False)}
            ) from exc
        if options["verbosity"] >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    ngettext(
                        "%(count)d event log row deleted.",
                        "%(count)d event log rows deleted.",
                        deleted,
                    )
                    % {"count": deleted}
                )
            )
