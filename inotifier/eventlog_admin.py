"""Read-only admin of the event log: index-only queries on big tables and server-side SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import CharField, Count, F, Max, Min, QuerySet
from django.db.models.functions import Substr, TruncMinute
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import EventLog, WatchPath
from .specs import settings_specs

#: Up to this many rows are counted exactly; beyond it the count is estimated.
EXACT_COUNT_LIMIT = 10_000
#: Most distinct values a filter lists (each found by one index probe).
MAX_FILTER_CHOICES = 100
#: Most buckets ``EventLogQuerySet.datetimes`` probes before falling back to Django's query.
MAX_DATE_PROBES = 400


# -- counting -------------------------------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """A paginator that never runs a full COUNT(*) on a large table.

    It counts at most EXACT_COUNT_LIMIT + 1 rows. Past that it uses the
    planner's estimate on PostgreSQL (``reltuples`` for the whole table,
    EXPLAIN for a filtered list) and elsewhere shows as many pages as the limit
    allows.
    """

    @cached_property
    def count(self) -> int:
        """Return the exact count up to EXACT_COUNT_LIMIT, an estimate beyond."""
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        if qs.query.is_sliced:
            return qs.count()  # already bounded
        exact = qs.order_by().values("pk")[: EXACT_COUNT_LIMIT + 1].count()
        if exact <= EXACT_COUNT_LIMIT:
            return int(exact)
        return max(EXACT_COUNT_LIMIT + 1, estimate_count(qs) or 0)


def estimate_count(qs: QuerySet[Any]) -> int | None:
    """Return the planner's row estimate for ``qs`` on PostgreSQL, None elsewhere."""
    connection = connections[qs.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        if not qs.query.where:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [qs.model._meta.db_table],
            )
            row = cursor.fetchone()
            if row and row[0] and row[0] > 0:
                return int(row[0])
        sql, params = qs.order_by().values("pk").query.sql_with_params()
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        import json

        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def distinct_values(qs: QuerySet[Any], field: str, limit: int = MAX_FILTER_CHOICES) -> list[Any]:
    """Return the distinct values of ``field`` in ``qs``, sorted, by one index probe each.

    ``SELECT DISTINCT`` reads the whole table; on an indexed column with few
    distinct values, "the smallest value greater than the last one", asked
    once per value, reads a handful of index pages instead (a skip scan).
    """
    values: list[Any] = []
    base = qs.order_by(field).values_list(field, flat=True)
    last: Any = None
    for _i in range(limit):
        probe = base if last is None else base.filter(**{f"{field}__gt": last})
        found = list(probe.exclude(**{f"{field}__isnull": True})[:1])
        if not found:
            break
        last = found[0]
        values.append(last)
    return values


# -- a queryset whose date hierarchy queries use the index ---------------------------------


def _truncate(value: datetime, kind: str) -> datetime:
    if kind == "year":
        return value.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if kind == "month":
        return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def _next(start: datetime, kind: str) -> datetime:
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1)


class EventLogQuerySet(QuerySet[EventLog]):
    """EventLog queryset for the admin: Min/Max and ``datetimes()`` without full scans.

    Django's ``date_hierarchy`` asks for ``Min``/``Max`` of the date field
    (SQLite cannot take both from an index in one query) and for
    ``datetimes(field, "day")`` (a ``SELECT DISTINCT`` over every row of the
    month). Here both are answered by ordered ``LIMIT 1`` probes on the
    timestamp index: two for Min/Max, one per bucket that holds rows.
    """

    def _probe_ok(self) -> bool:
        query = self.query
        return not (query.is_sliced or query.distinct or query.combinator or query.group_by)

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Answer plain ``Min``/``Max`` of a column with two index probes; else aggregate."""
        if args or not kwargs or not self._probe_ok():
            return super().aggregate(*args, **kwargs)
        plan = {}
        for key, agg in kwargs.items():
            sources = agg.get_source_expressions() if isinstance(agg, (Min, Max)) else []
            if (
                len(sources) != 1
                or not isinstance(sources[0], F)
                or "__" in str(getattr(sources[0], "name", "__"))
                or getattr(agg, "filter", None) is not None
                or getattr(agg, "distinct", False)
                or getattr(agg, "default", None) is not None
            ):
                return super().aggregate(*args, **kwargs)
            name = str(getattr(sources[0], "name", ""))
            plan[key] = name if isinstance(agg, Min) else "-" + name
        result = {}
        for key, ordering in plan.items():
            name = ordering.lstrip("-")
            found = list(
                self.exclude(**{f"{name}__isnull": True})
                .order_by(ordering)
                .values_list(name, flat=True)[:1]
            )
            result[key] = found[0] if found else None
        return result

    def datetimes(self, field_name: str, kind: Any, order: Any = "ASC", tzinfo: Any = None) -> Any:
        """Return the year/month/day buckets holding rows, by one index probe per bucket.

        Like ``QuerySet.datetimes`` the values are truncated in the current time
        zone; unlike it, a list is returned (the admin only iterates over it).
        """
        if kind not in ("year", "month", "day") or not self._probe_ok():
            return super().datetimes(field_name, kind, order, tzinfo)
        use_tz = settings.USE_TZ
        tz = (tzinfo or timezone.get_current_timezone()) if use_tz else None
        base = (
            self.order_by(field_name)
            .values_list(field_name, flat=True)
            .exclude(**{f"{field_name}__isnull": True})
        )
        buckets: list[datetime] = []
        lower: datetime | None = None
        for _i in range(MAX_DATE_PROBES):
            probe = base if lower is None else base.filter(**{f"{field_name}__gte": lower})
            found = list(probe[:1])
            if not found:
                break
            value = found[0]
            if tz is not None and timezone.is_aware(value):
                local = timezone.localtime(value, tz).replace(tzinfo=None)
            else:
                local = value
            start = _truncate(local, kind)
            following = _next(start, kind)
            if tz is not None:
                buckets.append(timezone.make_aware(start, tz))
                lower = timezone.make_aware(following, tz)
            else:
                buckets.append(start)
                lower = following
        else:
            return super().datetimes(field_name, kind, order, tzinfo)
        return buckets[::-1] if order == "DESC" else buckets


# -- charts ---------------------------------------------------------------------------


def minute_counts(qs: QuerySet[EventLog], since: datetime, until: datetime) -> dict[datetime, int]:
    """Return {minute start: events} for ``since <= timestamp < until`` in one grouped query.

    Keys are aware UTC datetimes (naive local ones when USE_TZ is False). On
    SQLite the minute is cut from the stored text (its truncation functions are
    Python callbacks, one call per row); elsewhere the database truncates.
    """
    rows = qs.filter(timestamp__gte=since, timestamp__lt=until).order_by()
    connection = connections[qs.db]
    use_tz = settings.USE_TZ
    counts: dict[datetime, int] = {}
    if connection.vendor == "sqlite":
        grouped = (
            rows.annotate(bucket=Substr("timestamp", 1, 16, output_field=CharField()))
            .values("bucket")
            .annotate(n=Count("pk"))
        )
        for row in grouped:
            key = datetime.strptime(row["bucket"], "%Y-%m-%d %H:%M")
            if use_tz:
                key = key.replace(tzinfo=UTC)
            counts[key] = counts.get(key, 0) + row["n"]
        return counts
    tzinfo = UTC if use_tz else None
    for row in (
        rows.annotate(bucket=TruncMinute("timestamp", tzinfo=tzinfo))
        .values("bucket")
        .annotate(n=Count("pk"))
    ):
        key = row["bucket"]
        if key is None:
            continue
        if use_tz:
            key = key.astimezone(UTC) if timezone.is_aware(key) else key.replace(tzinfo=UTC)
        counts[key] = counts.get(key, 0) + row["n"]
    return counts


def chart_series(
    qs: QuerySet[EventLog], now: datetime | None = None
) -> tuple[list[tuple[datetime, int]], list[tuple[datetime, int]]]:
    """Return (per minute over the last hour, per hour over the last day), oldest first.

    Buckets are (start, count); hours are the current time zone's. One query
    over the last day of rows, grouped by minute, feeds both.
    """
    use_tz = settings.USE_TZ
    now = now or timezone.now()
    minute_now = now.replace(second=0, microsecond=0)
    minute_start = minute_now - timedelta(minutes=59)
    if use_tz:
        local = timezone.localtime(minute_now)
        hour_now = local.replace(minute=0).astimezone(UTC)
    else:
        hour_now = minute_now.replace(minute=0)
    hour_start = hour_now - timedelta(hours=23)
    counts = minute_counts(qs, min(hour_start, minute_start), minute_now + timedelta(minutes=1))
    per_minute = [
        (minute_start + timedelta(minutes=i), counts.get(minute_start + timedelta(minutes=i), 0))
        for i in range(60)
    ]
    hours = [0] * 24
    for key, n in counts.items():
        index = int((key - hour_start) // timedelta(hours=1))
        if 0 <= index < 24:
            hours[index] += n
    per_hour = [(hour_start + timedelta(hours=i), hours[i]) for i in range(24)]
    return per_minute, per_hour


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


def bars_svg(
    series: list[tuple[datetime, int]],
    width: int,
    height: int,
    label_every: int,
    fmt: str,
    title: str,
) -> str:
    """Return an SVG bar chart of ``series`` of (bucket start, count); all text escaped."""
    top = max((c for _t, c in series), default=0) or 1
    n = len(series) or 1
    bar_w = width / n
    chart_h = height - 18
    bars = []
    labels = []
    for i, (bucket, count) in enumerate(series):
        h = round(chart_h * count / top, 1)
        x = round(i * bar_w, 1)
        when = _local(bucket).strftime(fmt)
        bars.append((x, round(chart_h - h, 1), max(round(bar_w - 1, 1), 1), h, when, count))
        if i % label_every == 0:
            labels.append((x, height - 4, when))
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="inotifier-chart" role="img" '
        'width="{}" height="{}" viewBox="0 0 {} {}"><title>{}</title>{}{}'
        '<text x="{}" y="10" font-size="10" text-anchor="end" fill="#666">max {}</text></svg>',
        width,
        height,
        width,
        height,
        title,
        format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690">'
            "<title>{}: {}</title></rect>",
            bars,
        ),
        format_html_join("", '<text x="{}" y="{}" font-size="10" fill="#666">{}</text>', labels),
        width - 2,
        top,
    )


def charts(qs: QuerySet[EventLog], now: datetime | None = None) -> dict[str, str]:
    """Return the SVG charts and totals: events per minute (last hour), per hour (last day)."""
    per_minute, per_hour = chart_series(qs, now)
    return {
        "per_minute": bars_svg(
            per_minute, 600, 110, 10, "%H:%M", str(_("Events per minute, last hour"))
        ),
        "per_hour": bars_svg(per_hour, 480, 110, 4, "%H:00", str(_("Events per hour, last day"))),
        "total_hour": str(sum(c for _b, c in per_minute)),
        "total_day": str(sum(c for _b, c in per_hour)),
    }


# -- filters ----------------------------------------------------------------------------


class EventTypeFilter(admin.SimpleListFilter):
    """Filter by event name, whether it happened to a file or a directory."""

    title = _("event")
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names: dict[str, None] = {}
        for value in distinct_values(EventLog.objects.all(), "maskname"):
            names.setdefault(str(value).split("|", 1)[0], None)
        return [(name, name) for name in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value:
            return queryset.filter(maskname__in=[value, f"{value}|IN_ISDIR"])
        return queryset


class KindFilter(admin.SimpleListFilter):
    """Filter events on directories or on files."""

    title = _("directory or file")
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("dir", _("directory")), ("file", _("file"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value in ("dir", "file"):
            return queryset.filter(is_dir=value == "dir")
        return queryset


class HostFilter(admin.SimpleListFilter):
    """Filter by the host whose daemon saw the event."""

    title = _("host")
    parameter_name = "host"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(h, h) for h in distinct_values(EventLog.objects.all(), "host")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is not None:
            return queryset.filter(host=value)
        return queryset


class WatchFilter(admin.SimpleListFilter):
    """Filter by watch: a WatchPath row (``r<pk>``) or a settings entry (``s:<path>``)."""

    title = _("watch")
    parameter_name = "watch"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        rows = WatchPath.objects.order_by("path", "pk").values_list("pk", "path")
        choices = [(f"r{pk}", path) for pk, path in rows]
        labels = sorted({spec.label for spec in settings_specs() if spec.label})
        choices += [(f"s:{label}", f"{label} ({_('settings')})") for label in labels]
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if not value:
            return queryset
        if value.startswith("s:"):
            return queryset.filter(watch__isnull=True, watch_label=value[2:])
        if value.startswith("r") and value[1:].isdigit():
            return queryset.filter(watch_id=int(value[1:]))
        return queryset.none()


# -- the admin --------------------------------------------------------------------------


class EventLogAdmin(admin.ModelAdmin):
    """Browse recorded events; rows are written by the daemon only (delete with permission).

    Every query of the list page reads an index range: counts stop at
    EXACT_COUNT_LIMIT, filters list their values by index probes, the date
    hierarchy probes the timestamp index, and only the time column sorts.
    """

    list_display = ("timestamp", "maskname", "path_display", "watch_display", "host")
    list_display_links = ("timestamp",)
    list_filter = (EventTypeFilter, KindFilter, WatchFilter, HostFilter)
    search_fields = ("pathname",)
    search_help_text = _("Part of the path (case-insensitive).")
    date_hierarchy = "timestamp"
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    sortable_by = ("timestamp",)
    list_per_page = 100
    list_select_related = ("watch",)
    change_list_template = "admin/inotifier/eventlog/change_list.html"
    readonly_fields = (
        "timestamp",
        "maskname",
        "mask",
        "pathname",
        "src_pathname",
        "escaped",
        "is_dir",
        "watch",
        "watch_label",
        "host",
    )
    if hasattr(admin, "ShowFacets"):  # Django >= 5.0: counting per choice is a full scan each
        show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request: HttpRequest) -> QuerySet[EventLog]:
        qs = EventLogQuerySet(self.model, using=EventLog.objects.db)
        ordering = self.get_ordering(request)
        if ordering:
            qs = qs.order_by(*ordering)
        return qs

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("path"))
    def path_display(self, obj: EventLog) -> str:
        note = (
            format_html(
                ' <small title="{}">{}</small>',
                _("The name is not valid UTF-8: undecodable bytes are shown as \\xNN."),
                _("(escaped)"),
            )
            if obj.escaped
            else ""
        )
        if obj.src_pathname:
            return format_html(
                "{} <small>({} {})</small>{}", obj.pathname, _("from"), obj.src_pathname, note
            )
        return format_html("{}{}", obj.pathname, note)

    @admin.display(description=_("watch"))
    def watch_display(self, obj: EventLog) -> str:
        if obj.watch_id and obj.watch is not None:
            return str(obj.watch.path)
        return obj.watch_label or "-"

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        """Summarise instead of listing every event (a selection may hold a million rows)."""
        count = objs.count() if isinstance(objs, QuerySet) else len(objs)
        opts = self.model._meta
        name = opts.verbose_name if count == 1 else opts.verbose_name_plural
        summary = [ngettext("%(count)d event", "%(count)d events", count) % {"count": count}]
        perms_needed = set() if self.has_delete_permission(request) else {str(opts.verbose_name)}
        return summary, {name: count}, perms_needed, []

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Delete in batches of 1000 rows so a big selection holds no long lock."""
        ids = queryset.order_by().values_list("pk", flat=True)
        while True:
            batch = list(ids[:1000])
            if not batch:
                break
            EventLog.objects.filter(pk__in=batch).delete()
            if len(batch) < 1000:
                break

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        extra_context = dict(extra_context or {})
        extra_context["inotifier_charts"] = charts(EventLog.objects.all())
        return super().changelist_view(request, extra_context)
