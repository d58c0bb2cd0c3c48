"""What both retention commands share: their options, their checks, their errors, their report."""

from __future__ import annotations

from typing import Any, Protocol

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.utils.functional import Promise
from django.utils.translation import gettext as _

from ...batches import DELETE_BATCH
from ...escaping import printable
from ._base import InotifierCommand


class Prunable(Protocol):
    """Rows with a retention (``EventLog.objects``, ``OutboxEntry.objects``)."""

    def prune(
        self, max_age: float | None, max_rows: int | None, batch: int, deadline: float | None = None
    ) -> tuple[int, bool]: ...


class PruneCommand(InotifierCommand):
    """Delete a table's old rows by age and by count, in small batches (``inotifier_prune_*``).

    A subclass names the rows (``what``), says what its options default to
    (``max_age_help`` / ``max_rows_help``), gives its rows (``rows()``, whose
    ``prune`` does the work) and how to report the count (``deleted_message``).
    """

    what: str | Promise = ""  # "the event log": in the error when the database refuses
    max_age_help: str | Promise = ""
    max_rows_help: str | Promise = ""

    def rows(self, database: str) -> Prunable:
        raise NotImplementedError

    def deleted_message(self, count: int) -> str:
        raise NotImplementedError

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=float, default=None, help=str(self.max_age_help))
        parser.add_argument("--max-rows", type=int, default=None, help=str(self.max_rows_help))
        parser.add_argument(
            "--batch",
            type=int,
            default=DELETE_BATCH,
            help=_("Rows deleted per statement (default: %(default)s)."),
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help=_("Database alias to prune (default: %(default)s)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("max_age", "max_rows"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(
                    _("--%(option)s must be 0 or more, not %(value)s.")
                    % {"option": name.replace("_", "-"), "value": options[name]}
                )
        if options["batch"] < 1:
            raise CommandError(_("--batch must be at least 1."))
        try:
            deleted, _done = self.rows(options["database"]).prune(
                options["max_age"], options["max_rows"], options["batch"]
            )
        except DatabaseError as exc:
            raise CommandError(
                _(
                    "Could not prune %(what)s: %(error)s (is the database reachable and migrated? "
                    "run manage.py migrate inotifier)"
                )
                % {"what": self.what, "error": printable(str(exc), backslash=False)}
            ) from exc
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(self.deleted_message(deleted)))
