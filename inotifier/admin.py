"""Admin for watches (with settings watches and daemon health beside them) and the event log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .admin_tools import OwnFiltersOnly, path_html, shorten, show_time, shown
from .conf import app_settings
from .eventlog_admin import EventLogAdmin
from .forms import WatchPathForm
from .masks import describe_mask
from .models import ConfigVersion, DaemonStatus, EventLog, WatchPath, WatchState, Watermark
from .outbox import OutboxEntry
from .outbox_admin import OutboxEntryAdmin
from .specs import settings_specs
from .states import UNKNOWN, UNKNOWN_LABEL, State
from .watermark_admin import WatermarkAdmin

STATE_COLORS = {
    State.ACTIVE.value: "#1a7f37",
    State.MISSING.value: "#9a6700",
    State.ERROR.value: "#cf222e",
    UNKNOWN: "#6e7781",
}
STATE_LABELS: dict[str, Any] = {**dict(State.choices), UNKNOWN: UNKNOWN_LABEL}
#: Characters of a state's reason shown in the list (the whole on hover and in the form).
REASON_LIMIT = 120


def states_with_liveness() -> QuerySet[WatchState]:
    """Return WatchState rows annotated with ``daemon_alive``, in the query that reads them.

    One query for the whole page however many rows: the liveness of each
    row's daemon is a subquery, not one query per watch.
    """
    alive = DaemonStatus.objects.alive().filter(host=OuterRef("host"))
    return WatchState.objects.annotate(daemon_alive=Exists(alive)).order_by("host")


def shown_state(state: WatchState) -> str:
    """Return the state to show: the stored one while its daemon lives, else UNKNOWN."""
    alive = getattr(state, "daemon_alive", None)
    if alive is None:  # not annotated: ask (one query)
        alive = DaemonStatus.objects.alive().filter(host=state.host).exists()
    return state.state if alive else UNKNOWN


def state_badge(state: str, message: str = "", host: str = "") -> str:
    """Return an escaped coloured label for a watch state (message as tooltip)."""
    name = STATE_LABELS.get(state, state)
    label = f"{shown(host)}: {name}" if host else name
    return format_html(
        '<span class="inotifier-state inotifier-state-{}" style="color:{};font-weight:bold" '
        'title="{}">{}</span>',
        state,
        STATE_COLORS.get(state, "inherit"),
        shown(message),
        label,
    )


def state_html(s: WatchState, show_host: bool) -> str:
    """Return the badge of one WatchState and, for missing/error, its reason as visible text.

    When the daemon that wrote the row is not alive the row says nothing
    about now: the badge is grey *unknown*, the last report in its tooltip.
    """
    host = s.host if show_host else ""
    current = shown_state(s)
    if current == UNKNOWN:
        last = _("Last reported: %(state)s") % {"state": STATE_LABELS.get(s.state, s.state)}
        if s.message:
            last = f"{last}: {s.message}"
        return state_badge(UNKNOWN, last, host)
    badge = state_badge(current, s.message, host)
    if current == State.ACTIVE.value or not s.message:
        return badge
    text = shown(s.message)
    return format_html(
        '{}<div class="inotifier-state-reason" title="{}">{}</div>', badge, text, shorten(text, REASON_LIMIT)
    )


def states_html(states: list[WatchState], show_host: bool) -> str:
    if not states:
        return format_html(
            '<span class="inotifier-state-pending" title="{}">{}</span>',
            _("No daemon has reported this watch yet."),
            _("pending"),
        )
    return format_html_join(mark_safe("<br>"), "{}", ((state_html(s, show_host),) for s in states))


class StateFilter(admin.SimpleListFilter):
    """Filter by state as shown: a stored state counts only while its daemon is alive."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [*State.choices, (UNKNOWN, UNKNOWN_LABEL), ("pending", _("pending"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is None:
            return queryset
        states = WatchState.objects.filter(watch=OuterRef("pk"))
        alive_hosts = DaemonStatus.objects.alive().values("host")
        if value == "pending":
            return queryset.filter(~Exists(states))
        if value == UNKNOWN:
            return queryset.filter(Exists(states.exclude(host__in=alive_hosts)))
        if value in State.values:
            return queryset.filter(Exists(states.filter(state=value, host__in=alive_hosts)))
        return queryset.none()  # not a choice of this filter


@admin.register(WatchPath)
class WatchPathAdmin(OwnFiltersOnly):
    """Watches edited in the admin, with what each daemon reports about them (if it is alive)."""

    form = WatchPathForm
    list_display = (
        "path_display",
        "state",
        "events",
        "processor_display",
        "enabled",
        "recursive",
        "host_display",
        "holder_display",
        "kernel_watches",
        "last_event",
    )
    list_display_links = ("path_display",)
    list_filter = ("enabled", "recursive", "auto_add", "exclusive", StateFilter, "host", "processor")
    search_fields = ("path", "description", "processor", "host")
    readonly_fields = ("created_display", "updated_display", "current_state", "holder_display")
    actions = ("enable_watches", "disable_watches")
    change_list_template = "admin/inotifier/watchpath/change_list.html"
    fieldsets = (
        (None, {"fields": ("path", "mask", "processor", "enabled", "description")}),
        (_("Subdirectories"), {"fields": ("recursive", "auto_add", "exclude")}),
        (_("Where and how"), {"fields": ("host", "exclusive", "event_log")}),
        (_("Delivery"), {"fields": ("settle", "settle_max", "catch_up")}),
        (_("Status"), {"fields": ("current_state", "holder_display", "created_display", "updated_display")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WatchPath]:
        return (
            super()
            .get_queryset(request)
            .select_related("lease")
            .prefetch_related(Prefetch("states", queryset=states_with_liveness()))
        )

    def get_list_display(self, request: HttpRequest) -> Any:
        """Return the columns; *last event* links to the watch's events for who may see them."""
        columns = list(super().get_list_display(request))
        events_admin = self.admin_site._registry.get(EventLog)
        if events_admin is not None and events_admin.has_view_permission(request):
            columns = ["last_event_link" if c == "last_event" else c for c in columns]
        return columns

    @admin.display(description=_("path"), ordering="path")
    def path_display(self, obj: WatchPath) -> str:
        return path_html(obj.path, 120)

    @admin.display(description=_("created"))
    def created_display(self, obj: WatchPath) -> str:
        return show_time(obj.created)

    @admin.display(description=_("updated"))
    def updated_display(self, obj: WatchPath) -> str:
        return show_time(obj.updated)

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
        return shown(obj.host) or str(_("every host"))

    @admin.display(description=_("held by"))
    def holder_display(self, obj: WatchPath) -> str:
        """Return who holds an exclusive watch's lease and since when ("-" for a shared watch)."""
        if not obj.exclusive:
            return "-"
        try:
            lease = obj.lease
        except ObjectDoesNotExist:
            lease = None
        if lease is None or not lease.holder or lease.expires < timezone.now():
            return format_html('<span class="inotifier-lease-free">{}</span>', _("nobody"))
        return format_html(
            '<span class="inotifier-lease" title="{}">{}</span>',
            _("lease renewed until %(time)s") % {"time": show_time(lease.expires)},
            _("%(host)s since %(time)s") % {"host": shown(lease.holder), "time": show_time(lease.since)},
        )

    @admin.display(description=_("state"))
    def state(self, obj: WatchPath) -> str:
        states = list(obj.states.all())
        if not obj.enabled:
            return format_html('<span class="inotifier-state-disabled">{}</span>', _("disabled"))
        return states_html(states, show_host=len(states) > 1 or bool(obj.host == ""))

    @admin.display(description=_("kernel watches"))
    def kernel_watches(self, obj: WatchPath) -> int:
        """Return the kernel watches held for this watch by daemons that are alive."""
        return sum(s.kernel_watches for s in obj.states.all() if shown_state(s) != UNKNOWN)

    @admin.display(description=_("last event"))
    def last_event(self, obj: WatchPath) -> str:
        times = [s.last_event for s in obj.states.all() if s.last_event]
        return show_time(max(times)) if times else "-"

    @admin.display(description=_("last event"))
    def last_event_link(self, obj: WatchPath) -> str:
        url = reverse(f"{self.admin_site.name}:inotifier_eventlog_changelist")
        return format_html(
            '<a href="{}?watch=r{}" title="{}">{}</a>',
            url,
            obj.pk,
            _("The events of this watch in the event log"),
            self.last_event(obj),
        )

    @admin.display(description=_("state"))
    def current_state(self, obj: WatchPath) -> str:
        if not obj.pk:
            return "-"
        states = list(states_with_liveness().filter(watch=obj))
        if not states:
            return str(_("No daemon has reported this watch yet."))
        return format_html_join(
            mark_safe("<br>"),
            "{} {} {}",
            (
                (
                    state_badge(shown_state(s), "", s.host),
                    shown(s.message)
                    if shown_state(s) != UNKNOWN
                    else _("(last reported: %(state)s %(message)s)")
                    % {"state": STATE_LABELS.get(s.state, s.state), "message": shown(s.message)},
                    ngettext("(%d kernel watch)", "(%d kernel watches)", s.kernel_watches) % s.kernel_watches,
                )
                for s in states
            ),
        )

    def save_model(self, request: HttpRequest, obj: WatchPath, form: Any, change: bool) -> None:
        """Save, then warn when another enabled watch has the same path on the same daemon."""
        super().save_model(request, obj, form, change)
        if not obj.enabled:
            return
        others = WatchPath.objects.filter(path=obj.path, enabled=True).exclude(pk=obj.pk)
        if obj.host:
            others = others.filter(Q(host="") | Q(host=obj.host))
        found = list(others.order_by("pk")[:5])
        if not found:
            return
        names = format_html_join(
            ", ",
            '<a href="{}">#{}</a> ({}, {})',
            (
                (
                    reverse(f"{self.admin_site.name}:inotifier_watchpath_change", args=[other.pk]),
                    other.pk,
                    other.processor.rsplit(".", 1)[-1],
                    shown(other.host) or _("every host"),
                )
                for other in found
            ),
        )
        message = ngettext(
            "Another enabled watch has this path: {}. Both are watched, and each gets every event.",
            "Other enabled watches have this path: {}. All are watched, and each gets every event.",
            len(found),
        )
        self.message_user(request, format_html(message, names), messages.WARNING)

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


def kernel_watches_html(d: DaemonStatus) -> str:
    """Return a daemon's kernel watches against its limit, with a red badge from 90 % on."""
    share = d.watch_limit_share()
    if share is None:
        return format_html("{}", d.kernel_watches)
    text = format_html("{} / {} ({}&nbsp;%)", d.kernel_watches, d.kernel_watch_limit, int(share * 100))
    if not d.near_watch_limit():
        return text
    name = shown(d.kernel_watch_limit_name) or "fs.inotify.max_user_watches"
    return format_html(
        '{} <span class="inotifier-limit-badge" style="color:#fff;background:#cf222e;padding:0 4px;'
        'border-radius:3px;white-space:nowrap" title="{}">{}</span>',
        text,
        _("Raise the sysctl %(name)s before new directories go unwatched.") % {"name": name},
        _("near the limit"),
    )


def daemon_row(d: DaemonStatus) -> dict[str, Any]:
    """Return what the overview shows of one daemon: its texts printable, times with seconds."""
    return {
        "host": shown(d.host),
        "alive": d.is_alive(),
        "running": d.running,
        "progress": shown(d.progress),
        "message": shown(d.message),
        "pid": d.pid,
        "started": show_time(d.started),
        "heartbeat": show_time(d.heartbeat),
        "version_applied": d.version_applied,
        "kernel_watches": kernel_watches_html(d),
        "near_watch_limit": d.near_watch_limit(),
        "events": d.events,
        "errors": d.errors,
        "overflows": d.overflows,
        "log_dropped": d.log_dropped,
    }


def overview(request: HttpRequest) -> dict[str, Any]:
    """Return the context of the 'whole picture' panel: daemons and settings watches."""
    states: dict[str, list[WatchState]] = {}
    for state in states_with_liveness().filter(source="settings"):
        states.setdefault(state.key, []).append(state)
    settings_rows = []
    for spec in settings_specs():
        settings_rows.append(
            {
                "path": path_html(spec.label),
                "events": describe_mask(spec.mask) if spec.mask else "-",
                "processor": shown(spec.processor),
                "error": shown(spec.error),
                "states": states_html(states.get(spec.key, []), show_host=True),
            }
        )
    return {
        "inotifier_settings_watches": settings_rows,
        "inotifier_daemons": [daemon_row(d) for d in DaemonStatus.objects.all()],
        "inotifier_version": ConfigVersion.current(),
        "inotifier_hostname": app_settings.hostname,
        "inotifier_poll_interval": app_settings.INOTIFIER_POLL_INTERVAL,
    }


@admin.register(DaemonStatus)
class DaemonStatusAdmin(OwnFiltersOnly):
    """The daemons as they report themselves: read-only; a stopped one's row may be deleted.

    Deleting is for a host that was decommissioned: its row and its watches'
    states go (a watch watched by every host would otherwise show that host as
    *unknown* for ever). A daemon that is alive would write its row again at
    its next heartbeat, so its row cannot be deleted: stop the daemon first.
    """

    list_display = (
        "host_display",
        "running_display",
        "pid",
        "started_display",
        "heartbeat_display",
        "version_display",
        "kernel_watches_display",
        "events",
        "errors",
        "overflows",
        "log_dropped",
        "progress_display",
    )
    list_display_links = ("host_display",)
    list_filter = ("running",)
    search_fields = ("host",)
    actions = None  # no bulk delete: rows are deleted one by one, from a stopped daemon's page
    fields = (
        "host_display",
        "pid",
        "running",
        "started_display",
        "heartbeat_display",
        "version_applied",
        "kernel_watches_display",
        "kernel_watch_limit_name",
        "events",
        "errors",
        "overflows",
        "queue_peak",
        "log_dropped",
        "progress_display",
        "message_display",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Allow deleting with the model permission, but never the row of a daemon that is alive."""
        if obj is not None and obj.is_alive():
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        """Name the daemon and count the watch states deleted with it."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        hosts = [obj.host for obj in objs]
        states = WatchState.objects.filter(host__in=hosts).count()
        if states:
            deleted = [
                *deleted,
                ngettext("%(count)d watch state", "%(count)d watch states", states) % {"count": states},
            ]
            model_count = {**model_count, str(WatchState._meta.verbose_name_plural): states}
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: DaemonStatus) -> None:
        """Delete the daemon's row and the watch states its host reported."""
        WatchState.objects.filter(host=obj.host).delete()
        super().delete_model(request, obj)

    @admin.display(description=_("host"), ordering="host")
    def host_display(self, obj: DaemonStatus) -> str:
        return shown(obj.host)

    @admin.display(description=_("started"), ordering="started")
    def started_display(self, obj: DaemonStatus) -> str:
        return show_time(obj.started)

    @admin.display(description=_("last heartbeat"), ordering="heartbeat")
    def heartbeat_display(self, obj: DaemonStatus) -> str:
        return show_time(obj.heartbeat)

    @admin.display(description=_("kernel watches"), ordering="kernel_watches")
    def kernel_watches_display(self, obj: DaemonStatus) -> str:
        return kernel_watches_html(obj)

    @admin.display(description=_("progress"))
    def progress_display(self, obj: DaemonStatus) -> str:
        return shown(obj.progress) or "-"

    @admin.display(description=_("message"))
    def message_display(self, obj: DaemonStatus) -> str:
        return shown(obj.message) or "-"

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
admin.site.register(OutboxEntry, OutboxEntryAdmin)
admin.site.register(Watermark, WatermarkAdmin)
