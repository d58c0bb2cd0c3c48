"""Delete handed-off outbox rows (for cron): by age and by count, in small batches."""

from __future__ import annotations

from django.utils.translation import gettext_lazy, ngettext

from ._prune import Prunable, PruneCommand


class Command(PruneCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Delete outbox rows handed off (done) more than INOTIFIER_OUTBOX_MAX_AGE seconds ago and "
        "beyond the newest INOTIFIER_OUTBOX_MAX_ROWS done rows, in small batches. Pending, failed "
        "and dead rows are never deleted (the admin retries or discards them). The daemon does the "
        "same while it runs."
    )
    what = gettext_lazy("the outbox")
    max_age_help = gettext_lazy(
        "Seconds to keep done rows (default: INOTIFIER_OUTBOX_MAX_AGE; 0: no age limit)."
    )
    max_rows_help = gettext_lazy("Done rows to keep (default: INOTIFIER_OUTBOX_MAX_ROWS; 0: no count limit).")

    def rows(self, database: str) -> Prunable:
        from ...outbox import OutboxEntry

        return OutboxEntry.objects.using(database)

    def deleted_message(self, count: int) -> str:
        return ngettext("%(count)d outbox row deleted.", "%(count)d outbox rows deleted.", count) % {
            "count": count
        }
