"""Delete old EventLog rows (for cron): by age and by count, in small batches."""

from __future__ import annotations

from django.utils.translation import gettext_lazy, ngettext

from ._prune import Prunable, PruneCommand


class Command(PruneCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Delete event log rows older than INOTIFIER_EVENT_LOG_MAX_AGE seconds and beyond the "
        "newest INOTIFIER_EVENT_LOG_MAX_ROWS rows, in small batches (each its own short "
        "statement, so the daemon keeps writing meanwhile)."
    )
    what = gettext_lazy("the event log")
    max_age_help = gettext_lazy(
        "Seconds to keep rows (default: INOTIFIER_EVENT_LOG_MAX_AGE; 0: no age limit)."
    )
    max_rows_help = gettext_lazy("Rows to keep (default: INOTIFIER_EVENT_LOG_MAX_ROWS; 0: no count limit).")

    def rows(self, database: str) -> Prunable:
        from ...models import EventLog

        return EventLog.objects.using(database)

    def deleted_message(self, count: int) -> str:
        return ngettext("%(count)d event log row deleted.", "%(count)d event log rows deleted.", count) % {
            "count": count
        }
