"""Admin for watches (with settings watches and daemon health beside them) and the event log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .conf import app_settings
from .eventlog_admin import EventLogAdmin
from .forms import WatchPathForm
from .masks import describe_mask
from .models import ConfigVersion, DaemonStatus, EventLog, WatchPath, WatchState
from .specs import settings_specs

STATE_COLORS = {"active": "#1a7f37", "missing": "#9a6700", "error": "#cf222e"}


STATE_LABELS = dict(WatchState.STATE_CHOICES)


def state_badge(state: str, message: str = "", host: str = "") -> str:
    """Return an escaped coloured label for a watch state (message as tooltip)."""
    name = STATE_LABELS.get(state, state)
    label = f"{host}: {name}" if host else name
    return format_html(
        '<span class="inotifier-state inotifier-state-{}" style="color:{};font-weight:bold" '
        'title="{}">{}</span>',
        state, STATE_COLORS.get(state, "inherit"), message, label,
    )


def states_html(states: list[WatchState], show_host: bool) -> str:
    if not states:
        return format_html('<span class="inotifier-state-unknown" title="{}">{}</span>',
                           _("No daemon has reported this watch yet."), _("pending"))
    return format_html_join(
        mark_safe("<br>"), "{}",
        ((state_badge(s.state, s.message, s.host if show_host else ""),) for s in states),
    )


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [*WatchState.STATE_CHOICES, ("pending", _("pending"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value == "pending":
            return queryset.filter(states__isnull=True)
        if value:
            return queryset.filter(states__state=value).distinct()
        return queryset


@admin.register(WatchPath)
class WatchPathAdmin(admin.ModelAdmin):
    form = WatchPathForm
    list_display = (
        "path", "state", "events", "processor_display", "enabled", "recursive", "host_display",
        "kernel_watches", "last_event",
    )
    list_display_links = ("path",)
    list_filter = ("enabled", "recursive", "auto_add", StateFilter, "host", "processor")
    search_fields = ("path", "description", "processor", "host")
    readonly_fields = ("created", "updated", "current_state")
    actions = ("enable_watches", "disable_watches")
    change_list_template = "admin/inotifier/watchpath/change_list.html"
    fieldsets = (
        (None, {"fields": ("path", "mask", "processor", "enabled", "description")}),
        (_("Subdirectories"), {"fields": ("recursive", "auto_add", "exclude")}),
        (_("Where and how"), {"fields": ("host", "event_log")}),
        (_("Status"), {"fields": ("current_state", "created", "updated")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WatchPath]:
        return super().get_queryset(request).prefetch_related("states")

    @admin.display(description=_("events"))
    def events(self, obj: WatchPath) -> str:
        return describe_mask(int(obj.mask or 0)).replace("|", " | ")

    @admin.display(description=_("processor"), ordering="processor")
    def processor_display(self, obj: WatchPath) -> str:
        return format_html('<span title="{}">{}</span>', obj.processor, obj.processor.rsplit(".", 1)[-1])

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:  # nothing to show in "Status" before the row exists
            fieldsets = [fs for fs in fieldsets if "current_state" not in fs[1]["fields"]]
        return fieldsets

    @admin.display(description=_("host"), ordering="host")
    def host_display(self, obj: WatchPath) -> str:
        return obj.host or str(_("every host"))

    @admin.display(description=_("state"))
    def state(self, obj: WatchPath) -> str:
        states = list(obj.states.all())
        if not obj.enabled:
            return format_html('<span class="inotifier-state-disabled">{}</span>', _("disabled"))
        return states_html(states, show_host=len(states) > 1 or bool(obj.host == ""))

    @admin.display(description=_("kernel watches"))
    def kernel_watches(self, obj: WatchPath) -> int:
        return sum(s.kernel_watches for s in obj.states.all())

    @admin.display(description=_("last event"))
    def last_event(self, obj: WatchPath) -> Any:
        times = [s.last_event for s in obj.states.all() if s.last_event]
        return max(times) if times else "-"

    @admin.display(description=_("state"))
    def current_state(self, obj: WatchPath) -> str:
        if not obj.pk:
            return "-"
        states = list(obj.states.all())
        if not states:
            return str(_("No daemon has reported this watch yet."))
        return format_html_join(
            mark_safe("<br>"), "{} {} {}",
            (
                (
                    state_badge(s.state, "", s.host),
                    s.message,
                    ngettext("(%d kernel watch)", "(%d kernel watches)", s.kernel_watches)
                    % s.kernel_watches,
                )
                for s in states
            ),
        )

    @admin.action(description=_("Enable the selected watches"), permissions=["change"])
    def enable_watches(self, request: HttpRequest, queryset: QuerySet[WatchPath]) -> None:
        count = queryset.update(enabled=True)  # bumps the config version
        message = ngettext("%d watch enabled.", "%d watches enabled.", count)
        self.message_user(request, message % count, messages.SUCCESS)

    @admin.action(description=_("Disable the selected watches"), permissions=["change"])
    def disable_watches(self, request: HttpRequest, queryset: QuerySet[WatchPath]) -> None:
        count = queryset.update(enabled=False)  # bumps the config version
        message = ngettext("%d watch disabled.", "%d watches disabled.", count)
        self.message_user(request, message % count, messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = extra_context or {}
        extra_context.update(overview(request))
        return super().changelist_view(request, extra_context)


def overview(request: HttpRequest) -> dict[str, Any]:
    """Return the context of the 'whole picture' panel: daemons and settings watches."""
    states: dict[str, list[WatchState]] = {}
    for state in WatchState.objects.filter(source="settings").order_by("host"):
        states.setdefault(state.key, []).append(state)
    settings_rows = []
    for spec in settings_specs():
        settings_rows.append(
            {
                "path": spec.label,
                "events": describe_mask(spec.mask) if spec.mask else "-",
                "processor": spec.processor,
                "error": spec.error,
                "states": states_html(states.get(spec.key, []), show_host=True),
            }
        )
    return {
        "inotifier_settings_watches": settings_rows,
        "inotifier_daemons": list(DaemonStatus.objects.all()),
        "inotifier_version": ConfigVersion.current(),
        "inotifier_hostname": app_settings.hostname,
        "inotifier_poll_interval": app_settings.INOTIFIER_POLL_INTERVAL,
    }


@admin.register(DaemonStatus)
class DaemonStatusAdmin(admin.ModelAdmin):
    """The daemons as they report themselves: read-only."""

    list_display = (
        "host", "running_display", "pid", "started", "heartbeat", "version_display",
        "kernel_watches", "events", "errors", "overflows", "log_dropped", "progress",
    )
    list_filter = ("running",)
    search_fields = ("host",)
    readonly_fields = [f.name for f in DaemonStatus._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[DaemonStatus]:
        # The counter once in the page's query, not one query per daemon row.
        current = ConfigVersion.objects.filter(pk=1).values("version")[:1]
        return super().get_queryset(request).annotate(current_version=Subquery(current))

    @admin.display(description=_("running"), boolean=True)
    def running_display(self, obj: DaemonStatus) -> bool:
        return bool(obj.running and obj.is_alive())

    @admin.display(description=_("config version applied"))
    def version_display(self, obj: DaemonStatus) -> str:
        current = getattr(obj, "current_version", None) or 0
        if obj.version_applied == current:
            return str(obj.version_applied)
        return format_html("{} <em>({})</em>", obj.version_applied, _("current: %d") % current)


admin.site.register(EventLog, EventLogAdmin)
