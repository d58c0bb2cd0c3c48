"""The outbox in the admin: counts per state and watch, dead letters with their error, retry or discard."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .admin_tools import OwnFiltersOnly, path_html, shorten, shown
from .outbox import OutboxEntry
from .states import HandoffState

#: Characters of an error shown in the list (the whole on the row's page).
ERROR_CHARS = 200


class OutboxEntryAdmin(OwnFiltersOnly):
    """Read-only rows, written by the daemon; staff may retry failed and dead rows, or discard them.

    Discarding is Django's own "Delete selected" (the delete permission, a confirmation page).
    """

    list_display = (
        "id",
        "created",
        "state",
        "task_display",
        "watch_display",
        "path_display",
        "attempts",
        "next_attempt",
        "error_display",
    )
    list_filter = ("state", "task", "host")
    list_select_related = False
    ordering = ("-id",)
    # Discarding is Django's own "Delete selected" (the delete permission, a confirmation page).
    actions = ("retry_rows",)
    list_per_page = 100
    show_full_result_count = False
    fields = (
        "state",
        "task",
        "payload_display",
        "watch_label",
        "watch_key",
        "host",
        "created",
        "attempts",
        "next_attempt",
        "done",
        "error_full",
    )
    readonly_fields = fields
    change_list_template = "admin/inotifier/outboxentry/change_list.html"

    # -- what is shown (everything escaped: paths and errors come from outside) --------------

    @admin.display(description=_("task"), ordering="task")
    def task_display(self, obj: OutboxEntry) -> str:
        return shown(obj.task)

    @admin.display(description=_("watch"), ordering="watch_label")
    def watch_display(self, obj: OutboxEntry) -> str:
        return shown(obj.watch_label or obj.watch_key or "-")

    @admin.display(description=_("path"))
    def path_display(self, obj: OutboxEntry) -> str:
        payload = obj.payload if isinstance(obj.payload, dict) else {}
        return path_html(str(payload.get("pathname", "")), escaped=bool(payload.get("escaped")))

    @admin.display(description=_("last error"))
    def error_display(self, obj: OutboxEntry) -> str:
        return shorten(shown(obj.last_error), ERROR_CHARS)

    @admin.display(description=_("last error"))
    def error_full(self, obj: OutboxEntry) -> str:
        return shown(obj.last_error)

    @admin.display(description=_("event"))
    def payload_display(self, obj: OutboxEntry) -> str:
        import json

        return shown(json.dumps(obj.payload, indent=1, sort_keys=True, ensure_ascii=False))

    # -- the page: counts per state and per watch ---------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        summary = OutboxEntry.objects.summary()
        oldest = summary["oldest_pending"]
        age = (timezone.now() - oldest).total_seconds() if oldest is not None else None
        context = {
            "outbox_states": [
                (label, summary["states"].get(value, 0), value) for value, label in HandoffState.choices
            ],
            "outbox_watches": [
                (
                    shown(label or key or "-"),
                    counts.get("pending", 0),
                    counts.get("failed", 0),
                    counts.get("dead", 0),
                )
                for label, key, counts in summary["watches"]
            ],
            "outbox_oldest_age": None if age is None else round(age),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    # -- actions ----------------------------------------------------------------------------

    @admin.action(description=_("Retry the selected failed or dead rows now"), permissions=["change"])
    def retry_rows(self, request: HttpRequest, queryset: QuerySet[OutboxEntry]) -> None:
        count = queryset.retry()  # type: ignore[attr-defined]
        self.message_user(
            request,
            ngettext("%(n)d row will be handed off again.", "%(n)d rows will be handed off again.", count)
            % {"n": count},
            messages.SUCCESS,
        )

    # -- permissions: rows are the daemon's; staff only retry (change) or discard (delete) ----

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A row's page is read-only; "change" is what the retry action asks for.
        return obj is None and super().has_change_permission(request)
