"""Delete handed-off outbox rows (for cron): by age and by count, in small batches."""

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
        "Delete outbox rows handed off (done) more than INOTIFIER_OUTBOX_MAX_AGE seconds ago and "
        "beyond the newest INOTIFIER_OUTBOX_MAX_ROWS done rows, in small batches. Pending, failed "
        "and dead rows are never deleted (the admin retries or discards them). The daemon does the "
        "same while it runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help=_("Seconds to keep done rows (default: INOTIFIER_OUTBOX_MAX_AGE; 0: no age limit)."),
        )
        parser.add_argument(
            "--max-rows",
            type=int,
            default=None,
            help=_("Done rows to keep (default: INOTIFIER_OUTBOX_MAX_ROWS; 0: no count limit)."),
        )
        parser.add_argument("--batch", type=int, default=1000, help=_("Rows deleted per statement."))
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help=_("Database alias (default: %(default)s).")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...outbox import OutboxEntry

        for name in ("max_age", "max_rows"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(
                    _("--%(option)s must be 0 or more, not %(value)s.")
                    % {"option": name.replace("_", "-"), "value": options[name]}
                )
        if options["batch"] < 1:
            raise CommandError(_("--batch must be at least 1."))
        try:
            deleted, _done = OutboxEntry.objects.using(options["database"]).prune(
                options["max_age"], options["max_rows"], options["batch"]
            )
        except DatabaseError as exc:
            raise CommandError(
                _(
                    "Could not prune the outbox: %(error)s (is the database reachable and migrated? "
                    "run manage.py migrate inotifier)"
                )
                % {"error": printable(str(exc), backslash=False)}
            ) from exc
        if options["verbosity"] >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    ngettext("%(count)d outbox row deleted.", "%(count)d outbox rows deleted.", deleted)
                    % {"count": deleted}
                )
            )
