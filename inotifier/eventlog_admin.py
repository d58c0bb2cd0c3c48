"""Read-only admin of the event log: cheap counts on big tables and a server-side SVG chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncHour, TruncMinute
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .models import EventLog

#: Up to this many rows are counted exactly; beyond it the count is estimated.
EXACT_COUNT_LIMIT = 10_000


class EstimatedCountPaginator(Paginator):
    """A paginator that never runs a full COUNT(*) on a large table.

    It counts at most EXACT_COUNT_LIMIT + 1 rows. Past that it uses the planner's
    estimate on PostgreSQL (``reltuples`` for the whole table, EXPLAIN for a
    filtered list) and, elsewhere, shows as many pages as the limit allows.
    """

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        qs = self.object_list
        capped = qs.order_by()[: EXACT_COUNT_LIMIT + 1]
        exact = capped.count() if hasattr(capped, "count") else len(capped)
        if exact <= EXACT_COUNT_LIMIT:
            return int(exact)
        estimate = estimate_count(qs)
        return max(EXACT_COUNT_LIMIT + 1, estimate or 0)


def estimate_count(qs: QuerySet[Any]) -> int | None:
    """Return the planner's row estimate for ``qs`` on PostgreSQL, None elsewhere."""
    connection = connections[qs.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = qs.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        if not qs.query.where:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [qs.model._meta.db_table],
            )
            row = cursor.fetchone()
            if row and row[0] and row[0] > 0:
                return int(row[0])
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            import json

            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


def bars_svg(series: list[tuple[datetime, int]], width: int, height: int, label_every: int,
             fmt: str, title: str) -> str:
    """Return an SVG bar chart (escaped) of ``series`` of (bucket start, count)."""
    top = max((c for _t, c in series), default=0) or 1
    n = len(series) or 1
    bar_w = width / n
    chart_h = height - 18
    parts = []
    for i, (bucket, count) in enumerate(series):
        h = round(chart_h * count / top, 1)
        x = round(i * bar_w, 1)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690">'
                "<title>{}: {}</title></rect>",
                x, round(chart_h - h, 1), max(round(bar_w - 1, 1), 1), h,
                timezone.localtime(bucket).strftime(fmt), count,
            )
        )
        if i % label_every == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10" fill="#666">{}</text>',
                    x, height - 4, timezone.localtime(bucket).strftime(fmt),
                )
            )
    body = format_html("".join(["{}"] * len(parts)), *parts) if parts else ""
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="inotifier-chart" role="img" '
        'width="{}" height="{}" viewBox="0 0 {} {}"><title>{}</title>{}'
        '<text x="{}" y="10" font-size="10" text-anchor="end" fill="#666">max {}</text></svg>',
        width, height, width, height, title, body, width - 2, top,
    )


def histogram(qs: QuerySet[EventLog], since: datetime, step: timedelta, buckets: int,
              trunc: Any) -> list[tuple[datetime, int]]:
    """Return ``buckets`` (start, count) pairs of events per ``step`` since ``since``."""
    counts = {
        row["bucket"]: row["n"]
        for row in qs.filter(timestamp__gte=since)
        .order_by()
        .annotate(bucket=trunc("timestamp"))
        .values("bucket")
        .annotate(n=Count("id"))
    }
    normalised = {}
    for key, value in counts.items():
        if key is not None:
            if timezone.is_naive(key):  # USE_TZ = False
                key = timezone.make_aware(key, UTC)
            normalised[key.replace(second=0, microsecond=0)] = value
    return [(since + i * step, normalised.get(since + i * step, 0)) for i in range(buckets)]


def charts(qs: QuerySet[EventLog]) -> dict[str, str]:
    """Return the SVG charts: events per minute (last hour) and per hour (last day)."""
    now = timezone.now().replace(second=0, microsecond=0)
    minute_start = now - timedelta(minutes=59)
    hour_now = now.replace(minute=0)
    hour_start = hour_now - timedelta(hours=23)
    per_minute = histogram(qs, minute_start, timedelta(minutes=1), 60, TruncMinute)
    per_hour = histogram(qs, hour_start, timedelta(hours=1), 24, TruncHour)
    return {
        "per_minute": bars_svg(per_minute, 600, 110, 10, "%H:%M", str(_("Events per minute, last hour"))),
        "per_hour": bars_svg(per_hour, 480, 110, 4, "%H:00", str(_("Events per hour, last day"))),
        "total_hour": str(sum(c for _b, c in per_minute)),
        "total_day": str(sum(c for _b, c in per_hour)),
    }


class EventLogAdmin(admin.ModelAdmin):
    """Browse recorded events; rows are written by the daemon only."""

    list_display = ("timestamp", "maskname", "path_display", "watch_display", "host")
    list_filter = ("maskname", "is_dir", "host", "watch")
    search_fields = ("pathname",)
    date_hierarchy = "timestamp"
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 100
    list_select_related = ("watch",)
    change_list_template = "admin/inotifier/eventlog/change_list.html"
    readonly_fields = (
        "timestamp", "maskname", "mask", "pathname", "src_pathname", "escaped", "is_dir",
        "watch", "watch_label", "host",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("path"), ordering="pathname")
    def path_display(self, obj: EventLog) -> str:
        if obj.src_pathname:
            return format_html("{} <small>({} {})</small>", obj.pathname, _("from"), obj.src_pathname)
        return format_html("{}", obj.pathname)

    @admin.display(description=_("watch"))
    def watch_display(self, obj: EventLog) -> str:
        if obj.watch_id and obj.watch is not None:
            return str(obj.watch.path)
        return obj.watch_label or "-"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = dict(extra_context or {})
        extra_context["inotifier_charts"] = charts(EventLog.objects.all())
        return super().changelist_view(request, extra_context)
