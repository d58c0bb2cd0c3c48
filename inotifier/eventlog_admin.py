"""Read-only admin of the event log: index-only queries on big tables and server-side SVG charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import F, Max, Min, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .admin_tools import (
    EARLIEST,
    LATEST,
    OwnFiltersOnly,
    QueryTimeout,
    admin_query_timeout,
    path_html,
    query_budget,
    shorten,
    show_time,
    shown,
)
from .models import EventLog, EventLogQuerySet, WatchPath, WatchState
from .specs import settings_specs

#: Up to this many rows are counted exactly; beyond it the count is estimated.
EXACT_COUNT_LIMIT = 10_000
#: Most distinct values a filter lists (each found by one index probe).
MAX_FILTER_CHOICES = 100
#: Most buckets ``IndexProbingQuerySet.datetimes`` probes before falling back to Django's query.
MAX_DATE_PROBES = 400
#: The "By watch" filter lists every admin watch up to this many, else the most recently active.
MAX_WATCH_CHOICES = 20
#: Largest value of a BigAutoField (a signed 64-bit integer).
MAX_ID = 2**63 - 1


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


# EARLIEST and LATEST (admin_tools): bounds no event's timestamp is outside of. A
# probe bounded by them reads the (timestamp, id) index in order on SQLite, whose
# planner otherwise prefers the index of an equality filter (host, event) and
# sorts every match for LIMIT 1.


class IndexProbingQuerySet(EventLogQuerySet):
    """EventLog queryset for the admin: Min/Max and ``datetimes()`` without full scans.

    Django's ``date_hierarchy`` asks for ``Min``/``Max`` of the date field
    (SQLite cannot take both from an index in one query) and for
    ``datetimes(field, "day")`` (a ``SELECT DISTINCT`` over every row of the
    month). Here both are answered by ordered ``LIMIT 1`` probes on the
    (timestamp, id) index: two for Min/Max, one per bucket that holds rows.

    ``probe_base``, when set (the admin sets it to the list before the search
    was applied), answers those questions instead of the queryset itself: a
    substring search cannot use an index, and probing with it would read the
    table once per probe. The date links then show the days with events rather
    than the days with matching events.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe_base: QuerySet[EventLog] | None = None

    def _clone(self) -> Any:
        clone = super()._clone()  # type: ignore[misc]
        clone.probe_base = self.probe_base
        return clone

    def _probe_ok(self) -> bool:
        query = self.query
        return not (query.is_sliced or query.distinct or query.combinator or query.group_by)

    def _probe_qs(self) -> QuerySet[EventLog]:
        return self.probe_base if self.probe_base is not None else self

    def _edge(self, name: str, last: bool, lower: Any = None) -> Any:
        """Return the smallest (``last``: largest) value of column ``name``, at least ``lower``."""
        qs = self._probe_qs().exclude(**{f"{name}__isnull": True})
        field = self.model._meta.get_field(name)
        if lower is not None:
            qs = qs.filter(**{f"{name}__gte": lower})
        if getattr(field, "get_internal_type", lambda: "")() == "DateTimeField":
            use_tz = settings.USE_TZ
            if lower is None and not last:
                qs = qs.filter(**{f"{name}__gte": EARLIEST if use_tz else EARLIEST.replace(tzinfo=None)})
            if last:
                qs = qs.filter(**{f"{name}__lte": LATEST if use_tz else LATEST.replace(tzinfo=None)})
            ordering: tuple[str, ...] = (f"-{name}", "-pk") if last else (name, "pk")
        else:
            ordering = (f"-{name}",) if last else (name,)
        found = list(qs.order_by(*ordering).values_list(name, flat=True)[:1])
        return found[0] if found else None

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Answer plain ``Min``/``Max`` of a column with one index probe each; else aggregate."""
        if args or not kwargs or not self._probe_ok():
            return super().aggregate(*args, **kwargs)
        plan = {}
        for key, agg in kwargs.items():
            sources = (
                [e for e in agg.get_source_expressions() if e is not None]  # filter slot: None
                if isinstance(agg, (Min, Max))
                else []
            )
            name = str(getattr(sources[0], "name", "")) if sources else ""
            if (
                len(sources) != 1
                or not isinstance(sources[0], F)
                or not name
                or "__" in name
                or getattr(agg, "filter", None) is not None
                or getattr(agg, "distinct", False)
                or getattr(agg, "default", None) is not None
            ):
                return super().aggregate(*args, **kwargs)
            plan[key] = (name, isinstance(agg, Max))
        return {key: self._edge(name, last) for key, (name, last) in plan.items()}

    def datetimes(self, field_name: str, kind: Any, order: Any = "ASC", tzinfo: Any = None) -> Any:
        """Return the year/month/day buckets holding rows, by one index probe per bucket.

        Like ``QuerySet.datetimes`` the values are truncated in the current time
        zone; unlike it, a list is returned (the admin only iterates over it).
        """
        if kind not in ("year", "month", "day") or not self._probe_ok():
            return super().datetimes(field_name, kind, order, tzinfo)
        use_tz = settings.USE_TZ
        tz = (tzinfo or timezone.get_current_timezone()) if use_tz else None
        buckets: list[datetime] = []
        lower: datetime | None = None
        for _i in range(MAX_DATE_PROBES):
            value = self._edge(field_name, last=False, lower=lower)
            if value is None:
                break
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


def range_counts(using: str, ranges: list[tuple[datetime, datetime]]) -> list[int]:
    """Return the number of events with ``start <= timestamp < end`` for each range.

    One statement of ``SELECT COUNT(*) ... UNION ALL ...``: each part counts one
    range of the timestamp index (no grouping, no per-row function, one round
    trip), so the cost is that of reading the index entries in the ranges.
    """
    if not ranges:
        return []
    connection = connections[using]
    qn = connection.ops.quote_name
    table = qn(EventLog._meta.db_table)
    column = qn(str(EventLog._meta.get_field("timestamp").column))
    adapt = connection.ops.adapt_datetimefield_value
    parts = []
    params: list[Any] = []
    for index, (start, end) in enumerate(ranges):
        parts.append(f"SELECT {index}, COUNT(*) FROM {table} WHERE {column} >= %s AND {column} < %s")
        params += [adapt(start), adapt(end)]
    counts = [0] * len(ranges)
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        for index, n in cursor.fetchall():
            counts[int(index)] = int(n)
    return counts


def chart_series(
    qs: QuerySet[EventLog], now: datetime | None = None
) -> tuple[list[tuple[datetime, int]], list[tuple[datetime, int]]]:
    """Return (per minute over the last hour, per hour over the last day), oldest first.

    Buckets are (start, count) over every event (whatever the list shows);
    hours are the current time zone's. One statement counts them, reading each
    index entry once: the last hour's part of the hourly buckets is summed from
    the minutes.
    """
    now = now or timezone.now()
    minute_now = now.replace(second=0, microsecond=0)
    minute_start = minute_now - timedelta(minutes=59)
    if settings.USE_TZ:
        # Local hours, stepped in absolute time (a DST change keeps them aligned).
        hour_now = timezone.localtime(minute_now).replace(minute=0).astimezone(UTC)
    else:
        hour_now = minute_now.replace(minute=0)
    hour_start = hour_now - timedelta(hours=23)
    minutes = [minute_start + timedelta(minutes=i) for i in range(61)]
    hours = [hour_start + timedelta(hours=i) for i in range(24)]
    # hours[22] (the previous hour) starts before the minute window and ends
    # inside it (hour_now - 60 min < minute_start <= hour_now): count only its head.
    ranges = list(pairwise(minutes)) + list(pairwise(hours[:23])) + [(hours[22], minute_start)]
    counts = range_counts(qs.db, ranges)
    per_minute = list(zip(minutes[:60], counts[:60], strict=True))
    hourly = [*counts[60:82], counts[82], 0]
    for start, n in per_minute:
        hourly[22 if start < hour_now else 23] += n
    per_hour = list(zip(hours, hourly, strict=True))
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
    """Return an SVG bar chart of ``series`` of (bucket start, count); all text escaped.

    A band at the top holds the scale ("max N"), one at the bottom the time
    labels; the bars live between them, so no text covers a bar.
    """
    top = max((c for _t, c in series), default=0) or 1
    n = len(series) or 1
    bar_w = width / n
    header, footer = 14, 16
    base = height - footer  # y of the bars' bottom
    chart_h = base - header
    bars = []
    labels = []
    for i, (bucket, count) in enumerate(series):
        h = round(chart_h * count / top, 1)
        x = round(i * bar_w, 1)
        when = _local(bucket).strftime(fmt)
        bars.append((x, round(base - h, 1), max(round(bar_w - 1, 1), 1), h, when, count))
        if i % label_every == 0:
            labels.append((x, height - 3, when))
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="inotifier-chart" role="img" '
        'width="{}" height="{}" viewBox="0 0 {} {}"><title>{}</title>'
        '<text x="{}" y="10" font-size="10" text-anchor="end" fill="#666">{}</text>'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc" stroke-width="1"/>{}{}</svg>',
        width,
        height,
        width,
        height,
        title,
        width - 2,
        _("max %(n)s") % {"n": top},
        base + 0.5,
        width,
        base + 0.5,
        format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}: {}</title></rect>',
            bars,
        ),
        format_html_join("", '<text x="{}" y="{}" font-size="10" fill="#666">{}</text>', labels),
    )


def charts(qs: QuerySet[EventLog], now: datetime | None = None) -> dict[str, str]:
    """Return the SVG charts and totals: events per minute (last hour), per hour (last day)."""
    per_minute, per_hour = chart_series(qs, now)
    return {
        "per_minute": bars_svg(per_minute, 600, 110, 10, "%H:%M", str(_("Events per minute, last hour"))),
        "per_hour": bars_svg(per_hour, 480, 110, 4, "%H:00", str(_("Events per hour, last day"))),
        "total_hour": str(sum(c for _b, c in per_minute)),
        "total_day": str(sum(c for _b, c in per_hour)),
    }


class PageCharts:
    """The charts of the list page, computed when the template first reads one of them.

    Not a SimpleLazyObject: an error report that prints the view's locals
    (Django 4.2's AdminEmailHandler, for a refused lookup) would compute them.
    """

    @cached_property
    def values(self) -> dict[str, str]:
        return charts(EventLog.objects.all())

    def __getitem__(self, key: str) -> str:
        return self.values[key]


# -- filters ----------------------------------------------------------------------------


class KeepValueFilter(admin.SimpleListFilter):
    """A filter whose choices come from the data, that still applies a value no longer listed.

    Django skips a filter without choices, so a link to a host or watch that has
    no rows (any more) would silently show everything instead of nothing.
    """

    def choices_from_data(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        choices = self.choices_from_data(request, model_admin)
        value = self.value()
        if value and value not in {str(v) for v, _label in choices}:
            choices.append((value, shown(value, backslash=True)))
        return choices


class EventTypeFilter(KeepValueFilter):
    """Filter by event name, whether it happened to a file or a directory."""

    title = _("event")
    parameter_name = "event"

    def choices_from_data(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names: dict[str, None] = {}
        for value in distinct_values(EventLog.objects.all(), "maskname"):
            names.setdefault(str(value).split("|", 1)[0], None)
        return [(name, shown(name)) for name in sorted(names)]

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
        if value is not None:  # not one of the two choices: nothing matches it
            return queryset.none()
        return queryset


class HostFilter(KeepValueFilter):
    """Filter by the host whose daemon saw the event."""

    title = _("host")
    parameter_name = "host"

    def choices_from_data(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(h, shown(h)) for h in distinct_values(EventLog.objects.all(), "host")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is not None:
            return queryset.filter(host=value)
        return queryset


def row_watch_id(value: str | None) -> int | None:
    """Return the WatchPath id of a ``r<pk>`` filter value, None unless it can be a valid id.

    ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` fails) and within
    a BigAutoField: a larger number would overflow the database driver.
    """
    if not value or not value.startswith("r"):
        return None
    digits = value[1:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    number = int(digits)
    return number if 0 < number <= MAX_ID else None


def short_path(path: str) -> str:
    """Return a path as a filter choice shows it: printable, at most 80 characters."""
    return shorten(shown(path, backslash=True), 80)


def recent_watches(limit: int) -> list[int]:
    """Return the ids of up to ``limit`` admin watches, the one with the latest event first.

    Read from the daemons' WatchState rows (one per watch and host, a small
    table), not from the event log: one short query whatever the log's size.
    """
    ids: dict[int, None] = {}
    latest = (
        WatchState.objects.filter(watch__isnull=False, last_event__isnull=False)
        .order_by("-last_event")
        .values_list("watch_id", flat=True)
    )
    for watch_id in latest[: limit * 5]:  # a watch may have a row per host
        ids.setdefault(int(watch_id), None)
        if len(ids) == limit:
            break
    return list(ids)


class WatchFilter(KeepValueFilter):
    """Filter by watch: a WatchPath row (``r<pk>``) or a settings entry (``s:<path>``).

    Up to MAX_WATCH_CHOICES admin watches are all listed; beyond that, the
    most recently active ones and the one selected (a list of 10 000 watches
    made the page 945 KiB), with a note pointing to the watch list, whose
    *last event* links open the events of any watch.
    """

    title = _("watch")
    parameter_name = "watch"
    template = "admin/inotifier/eventlog/watch_filter.html"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        self.bounded = False
        self.watch_list_url = reverse(f"{model_admin.admin_site.name}:inotifier_watchpath_changelist")
        self.max_choices = MAX_WATCH_CHOICES
        super().__init__(request, params, model, model_admin)

    def choices_from_data(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        everything = WatchPath.objects.order_by("path", "pk").values_list("pk", "path")
        rows = list(everything[: MAX_WATCH_CHOICES + 1])
        if len(rows) > MAX_WATCH_CHOICES:
            self.bounded = True
            ids = recent_watches(MAX_WATCH_CHOICES)
            selected = row_watch_id(self.value())
            if selected is not None and selected not in ids:
                ids.append(selected)
            paths = dict(WatchPath.objects.filter(pk__in=ids).values_list("pk", "path"))
            rows = [(pk, paths[pk]) for pk in ids if pk in paths]
        choices = [(f"r{pk}", short_path(path)) for pk, path in rows]
        labels = sorted({spec.label for spec in settings_specs() if spec.label})
        choices += [(f"s:{label}", f"{short_path(label)} ({_('settings')})") for label in labels]
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if not value:
            return queryset
        if value.startswith("s:"):
            return queryset.filter(watch__isnull=True, watch_label=value[2:])
        watch_id = row_watch_id(value)
        if watch_id is not None:
            return queryset.filter(watch_id=watch_id)
        return queryset.none()


# -- the admin --------------------------------------------------------------------------


#: Set on a request whose list ran out of its time budget: the list is shown empty.
OUT_OF_BUDGET = "inotifier_out_of_budget"


class EventLogAdmin(OwnFiltersOnly):
    """Browse recorded events; rows are written by the daemon only (delete with permission).

    Every query of the list page reads an index range: counts stop at
    EXACT_COUNT_LIMIT, filters list their values by index probes, the date
    hierarchy probes the timestamp index, and only the time column sorts.
    Only the page's own filters are accepted (``OwnFiltersOnly``), and each
    query of the list gets INOTIFIER_ADMIN_QUERY_TIMEOUT seconds: the
    substring search, the one query that reads every row, is stopped past it
    and the page says so instead of holding a worker and the database.
    """

    list_display = ("timestamp_display", "maskname_display", "path_display", "watch_display", "host_display")
    list_display_links = ("timestamp_display",)
    list_filter = (EventTypeFilter, KindFilter, WatchFilter, HostFilter)
    search_fields = ("pathname",)
    search_help_text = _("Part of the path (case-insensitive).")
    date_hierarchy = "timestamp"
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    sortable_by = ("timestamp_display",)
    list_per_page = 100
    list_select_related = ("watch",)
    change_list_template = "admin/inotifier/eventlog/change_list.html"
    fields = (
        "timestamp_display",
        "maskname_display",
        "mask",
        "pathname_display",
        "src_pathname_display",
        "escaped",
        "is_dir",
        "watch_display",
        "watch_label_display",
        "host_display",
    )
    readonly_fields = fields
    if hasattr(admin, "ShowFacets"):  # Django >= 5.0: counting per choice is a full scan each
        show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request: HttpRequest) -> QuerySet[EventLog]:
        qs = IndexProbingQuerySet(self.model, using=EventLog.objects.db)
        ordering = self.get_ordering(request)
        if ordering:
            qs = qs.order_by(*ordering)
        if getattr(request, OUT_OF_BUDGET, False):
            return qs.none()
        return qs

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        searched, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term and isinstance(searched, IndexProbingQuerySet) and searched is not queryset:
            searched.probe_base = queryset  # the date hierarchy probes without the search
        return searched, may_have_duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("time"), ordering="timestamp")
    def timestamp_display(self, obj: EventLog) -> str:
        return show_time(obj.timestamp)

    @admin.display(description=_("event"))
    def maskname_display(self, obj: EventLog) -> str:
        return shown(obj.maskname)

    @admin.display(description=_("path"))
    def path_display(self, obj: EventLog) -> str:
        """Return the path (and where a move came from) printable, long ones shortened."""
        changed = obj.escaped or any(
            shown(text, backslash=True) != text for text in (obj.pathname, obj.src_pathname) if text
        )
        note = (
            format_html(
                ' <small class="inotifier-escaped" title="{}">{}</small>',
                _(
                    "Shown escaped: bytes that are not UTF-8 and control or invisible characters "
                    "as \\xNN or \\uNNNN, a backslash as \\\\."
                ),
                _("(escaped)"),
            )
            if changed
            else ""
        )
        path = path_html(obj.pathname, escaped=obj.escaped)
        if obj.src_pathname:
            moved = format_html(str(_("(from {})")), path_html(obj.src_pathname, escaped=obj.escaped))
            return format_html("{} <small>{}</small>{}", path, moved, note)
        return format_html("{}{}", path, note)

    @admin.display(description=_("path"))
    def pathname_display(self, obj: EventLog) -> str:
        return shown(obj.pathname, backslash=not obj.escaped)

    @admin.display(description=_("moved from"))
    def src_pathname_display(self, obj: EventLog) -> str:
        return shown(obj.src_pathname, backslash=not obj.escaped) or "-"

    @admin.display(description=_("watch label"))
    def watch_label_display(self, obj: EventLog) -> str:
        return shown(obj.watch_label, backslash=True) or "-"

    @admin.display(description=_("host"), ordering="host")
    def host_display(self, obj: EventLog) -> str:
        return shown(obj.host)

    @admin.display(description=_("watch"))
    def watch_display(self, obj: EventLog) -> str:
        if obj.watch_id and obj.watch is not None:
            return path_html(obj.watch.path, 80)
        return path_html(obj.watch_label, 80) if obj.watch_label else "-"

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
        EventLog.objects.filter(pk__in=queryset.order_by().values("pk")).delete_in_batches()

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """Show the list, each of its queries within the time budget; an empty list past it.

        The page is rendered inside the budget (its queries run while the
        template is rendered). A list that runs out is shown again without
        rows, its filters and search kept, with a message saying how to narrow
        it; if even that page runs out, a short page says so (HTTP 503). POSTs
        (actions: deleting in batches) are not limited.
        """
        extra_context = dict(extra_context or {})
        # Lazy: computed only when the list page is rendered (not for actions or redirects).
        extra_context["inotifier_charts"] = PageCharts()
        seconds = admin_query_timeout()
        if request.method not in ("GET", "HEAD") or seconds is None:
            return super().changelist_view(request, extra_context)
        using = EventLog.objects.db
        try:
            return self._rendered_changelist(request, extra_context, using, seconds)
        except QueryTimeout:
            pass
        setattr(request, OUT_OF_BUDGET, True)
        extra_context["inotifier_out_of_budget"] = f"{seconds:g}"
        try:
            return self._rendered_changelist(request, extra_context, using, seconds)
        except QueryTimeout:
            return SimpleTemplateResponse(
                "admin/inotifier/eventlog/out_of_budget.html",
                {
                    **self.admin_site.each_context(request),
                    "title": _("The event log took too long"),
                    "seconds": f"{seconds:g}",
                    "opts": self.model._meta,
                },
                status=503,
            )

    def _rendered_changelist(
        self, request: HttpRequest, extra_context: dict[str, Any], using: str, seconds: float
    ) -> HttpResponse:
        with query_budget(using, seconds):
            response = super().changelist_view(request, extra_context)
            render = getattr(response, "render", None)
            if callable(render):
                response = render()
        return response
