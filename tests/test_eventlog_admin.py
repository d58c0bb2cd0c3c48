"""The event log admin: read-only list, filters, search, date hierarchy, charts, escaping."""

from __future__ import annotations

import random
import re
import time
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models import Max, Min, Q, QuerySet
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inotifier import eventlog_admin
from inotifier.eventlog_admin import (
    EstimatedCountPaginator,
    IndexProbingQuerySet,
    chart_series,
    distinct_values,
    estimate_count,
)
from inotifier.masks import BITS
from inotifier.models import EventLog, WatchPath

CHANGELIST = "admin:inotifier_eventlog_changelist"
HOSTILE = "/srv/in/<script>alert(1)</script>"
IN_CREATE = BITS["IN_CREATE"]
IN_DELETE = BITS["IN_DELETE"]
IN_ISDIR = BITS["IN_ISDIR"]


def event(pathname: str, when: datetime | None = None, **fields: Any) -> EventLog:
    fields.setdefault("maskname", "IN_CREATE")
    fields.setdefault("mask", IN_CREATE)
    fields.setdefault("host", "alpha")
    fields.setdefault("is_dir", "IN_ISDIR" in fields["maskname"])
    return EventLog.objects.create(
        timestamp=when or timezone.now() - timedelta(minutes=1), pathname=pathname, **fields
    )


@pytest.fixture
def rows(db: Any, tmp_path: Any) -> dict[str, Any]:
    """A small, varied event log: two hosts, a row watch, a settings watch, a directory."""
    watch = WatchPath.objects.create(path=str(tmp_path), mask=IN_CREATE)
    now = timezone.now()
    return {
        "watch": watch,
        "file": event("/srv/in/report.csv", watch=watch, watch_label=str(tmp_path)),
        "dir": event(
            "/srv/in/batch-7",
            maskname="IN_CREATE|IN_ISDIR",
            mask=IN_CREATE | IN_ISDIR,
            watch_label="/srv/in",
        ),
        "deleted": event(
            "/srv/in/old.csv",
            maskname="IN_DELETE",
            mask=IN_DELETE,
            host="beta",
            watch_label="/srv/in",
            when=now - timedelta(hours=3),
        ),
        "moved": event(
            "/srv/in/new-name.csv",
            maskname="IN_MOVED_TO",
            mask=BITS["IN_MOVED_TO"],
            src_pathname="/srv/in/old-name.csv",
            watch_label="/srv/in",
            when=now - timedelta(days=3),
        ),
    }


def listed(client: Client, **params: Any) -> list[EventLog]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200, response.content[:2000]
    return list(response.context["cl"].result_list)


def test_list_shows_time_event_path_watch_host(admin_client: Client, rows: dict[str, Any]) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    for header in (
        "column-timestamp",
        "column-maskname",
        "column-path_display",
        "column-watch_display",
        "column-host",
    ):
        assert header in html
    for row in rows.values():
        if isinstance(row, EventLog):
            assert row.pathname in html
    assert "/srv/in/old-name.csv" in html  # where a move came from
    assert rows["watch"].path in html
    # Newest first.
    assert [r.pk for r in response.context["cl"].result_list] == [
        rows[k].pk for k in ("file", "dir", "deleted", "moved")
    ] or [r.pk for r in response.context["cl"].result_list] == [
        rows[k].pk for k in ("dir", "file", "deleted", "moved")
    ]


def test_filters(admin_client: Client, rows: dict[str, Any], settings: Any) -> None:
    settings.INOTIFIER_WATCH_PATHS = [
        ["/srv/in", "IN_CREATE", "inotifier.event_processors.AllEventsSignaler"]
    ]
    response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    for choice in (
        "?event=IN_CREATE",
        "?event=IN_DELETE",
        "?event=IN_MOVED_TO",
        "?kind=dir",
        "?kind=file",
        "?host=alpha",
        "?host=beta",
        f"?watch=r{rows['watch'].pk}",
        "?watch=s%3A%2Fsrv%2Fin",
    ):
        assert choice in html, choice
    assert {r.pk for r in listed(admin_client, event="IN_CREATE")} == {
        rows["file"].pk,
        rows["dir"].pk,
    }
    assert [r.pk for r in listed(admin_client, event="IN_DELETE")] == [rows["deleted"].pk]
    assert [r.pk for r in listed(admin_client, kind="dir")] == [rows["dir"].pk]
    assert rows["dir"].pk not in {r.pk for r in listed(admin_client, kind="file")}
    assert [r.pk for r in listed(admin_client, host="beta")] == [rows["deleted"].pk]
    assert [r.pk for r in listed(admin_client, watch=f"r{rows['watch'].pk}")] == [rows["file"].pk]
    assert {r.pk for r in listed(admin_client, watch="s:/srv/in")} == {
        rows["dir"].pk,
        rows["deleted"].pk,
        rows["moved"].pk,
    }
    assert listed(admin_client, event="IN_CREATE", kind="file", host="alpha") == [rows["file"]]
    # A value with no rows (a host gone, a watch removed from settings) shows nothing, not all.
    assert listed(admin_client, host="nobody") == []
    assert listed(admin_client, watch="s:/gone") == []
    assert listed(admin_client, event="IN_ACCESS") == []


def test_search_by_path(admin_client: Client, rows: dict[str, Any]) -> None:
    assert [r.pk for r in listed(admin_client, q="REPORT")] == [rows["file"].pk]
    assert listed(admin_client, q="no-such-file") == []


def test_date_hierarchy(admin_client: Client, db: Any) -> None:
    event("/a", when=datetime(2024, 5, 3, 10, tzinfo=UTC))
    event("/b", when=datetime(2024, 5, 3, 23, tzinfo=UTC))
    event("/c", when=datetime(2024, 5, 20, 8, tzinfo=UTC))
    event("/d", when=datetime(2024, 6, 1, 8, tzinfo=UTC))
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "timestamp__month=5" in html and "timestamp__month=6" in html
    html = admin_client.get(
        reverse(CHANGELIST), {"timestamp__year": 2024, "timestamp__month": 5}
    ).content.decode()
    assert "timestamp__day=3" in html and "timestamp__day=20" in html
    assert "timestamp__day=1&" not in html
    day = listed(admin_client, timestamp__year=2024, timestamp__month=5, timestamp__day=3)
    assert sorted(r.pathname for r in day) == ["/a", "/b"]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])
def test_datetimes_and_min_max_probes_match_django(db: Any, tz: str) -> None:
    start = datetime(2023, 12, 30, 22, 45, tzinfo=UTC)
    for i in range(60):
        event(f"/p{i}", when=start + timedelta(hours=i * 13, minutes=i * 7))
    with timezone.override(zoneinfo.ZoneInfo(tz)):
        fast = IndexProbingQuerySet(EventLog)
        slow = EventLog.objects.all()
        for kind in ("year", "month", "day"):
            assert fast.datetimes("timestamp", kind) == list(slow.datetimes("timestamp", kind)), kind
            assert fast.datetimes("timestamp", kind, "DESC") == list(
                slow.datetimes("timestamp", kind, "DESC")
            )
            filtered = fast.filter(pathname__endswith="7")
            assert filtered.datetimes("timestamp", kind) == list(
                slow.filter(pathname__endswith="7").datetimes("timestamp", kind)
            )
        assert fast.aggregate(first=Min("timestamp"), last=Max("timestamp")) == slow.aggregate(
            first=Min("timestamp"), last=Max("timestamp")
        )
        assert fast.none().aggregate(first=Min("timestamp")) == {"first": None}
        with CaptureQueriesContext(connection) as queries:
            fast.aggregate(first=Min("timestamp"), last=Max("timestamp"))
            fast.datetimes("timestamp", "month")
        assert all("LIMIT 1" in q["sql"] for q in queries.captured_queries)
    assert IndexProbingQuerySet(EventLog).filter(pk=-1).datetimes("timestamp", "day") == []


def test_list_page_never_counts_or_scans_the_whole_table(admin_client: Client, rows: dict[str, Any]) -> None:
    for params in (
        {},
        {"event": "IN_CREATE"},
        {"host": "alpha"},
        {"q": "csv"},
        {"timestamp__year": timezone.now().year},
    ):
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(reverse(CHANGELIST), params).status_code == 200
        for q in queries.captured_queries:
            sql = q["sql"].upper()
            if "INOTIFIER_EVENTLOG" not in sql:
                continue
            assert "DISTINCT" not in sql, sql
            assert "MIN(" not in sql and "MAX(" not in sql, sql  # index probes instead
            if "COUNT(" in sql:
                # Either capped (a LIMIT inside) or a chart over a time range.
                assert "LIMIT" in sql or '"TIMESTAMP" >=' in sql, sql


def test_search_is_not_repeated_in_the_date_hierarchy_probes(
    admin_client: Client, rows: dict[str, Any]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert [r.pk for r in listed(admin_client, q="report")] == [rows["file"].pk]
    probes = [q["sql"] for q in queries.captured_queries if q["sql"].endswith("LIMIT 1")]
    assert probes
    assert not [sql for sql in probes if "LIKE" in sql.upper()]
    searched = [q["sql"] for q in queries.captured_queries if "LIKE" in q["sql"].upper()]
    assert len(searched) == 2  # the capped count and the page itself


def test_paginator_counts_exactly_up_to_a_limit(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventlog_admin, "EXACT_COUNT_LIMIT", 30)
    now = timezone.now()
    EventLog.objects.bulk_create(
        EventLog(timestamp=now, pathname=f"/p{i}", mask=1, maskname="IN_ACCESS", host="h") for i in range(45)
    )
    assert EstimatedCountPaginator(EventLog.objects.filter(pk__lt=0), 10).count == 0
    assert EstimatedCountPaginator(EventLog.objects.all()[:20], 10).count == 20
    assert EstimatedCountPaginator(EventLog.objects.filter(pathname__startswith="/p1"), 10).count == 11
    big = EstimatedCountPaginator(EventLog.objects.all(), 10).count
    if connection.vendor == "postgresql":
        assert big >= 31  # the planner's estimate, never below what was counted
    else:
        assert big == 31


@pytest.mark.postgres_only
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_estimated_count_on_postgresql(transactional_db: Any) -> None:
    now = timezone.now()
    EventLog.objects.bulk_create(
        EventLog(timestamp=now, pathname=f"/p{i}", mask=1, maskname="IN_ACCESS", host=f"h{i % 2}")
        for i in range(3000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inotifier_eventlog")
    whole = estimate_count(EventLog.objects.all())
    assert whole is not None and 2000 <= whole <= 4500
    half = estimate_count(EventLog.objects.filter(host="h1"))
    assert half is not None and 700 <= half <= 2300


def test_filter_choices_come_from_index_probes(db: Any) -> None:
    for host in ("b", "a", "c", "a", "b"):
        event(f"/{host}", host=host)
    with CaptureQueriesContext(connection) as queries:
        assert distinct_values(EventLog.objects.all(), "host") == ["a", "b", "c"]
    assert len(queries.captured_queries) == 4  # one per value, one to find the end
    assert all("LIMIT 1" in q["sql"] for q in queries.captured_queries)


def test_chart(admin_client: Client, db: Any) -> None:
    now = timezone.now()
    for minutes in (0, 1, 1, 30):
        event(f"/recent{minutes}", when=now - timedelta(minutes=minutes, seconds=1))
    event("/three-hours", when=now - timedelta(hours=3))
    event("/two-days", when=now - timedelta(days=2))
    event("/future", when=now + timedelta(hours=2))  # a clock ahead on another host
    per_minute, per_hour = chart_series(EventLog.objects.all(), now)
    assert len(per_minute) == 60 and len(per_hour) == 24
    assert sum(n for _t, n in per_minute) == 4
    assert sum(n for _t, n in per_hour) == 5
    minute_of = {t: n for t, n in per_minute}
    assert minute_of[(now - timedelta(minutes=1, seconds=1)).replace(second=0, microsecond=0)] == 2
    assert per_minute[-1][0] == now.replace(second=0, microsecond=0)

    response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    charts = html[html.index('id="inotifier-charts"') : html.index("</figure>", html.index("per hour"))]
    assert charts.count("<svg") == 2
    assert "Events per minute, last hour (4)" in html
    assert "Events per hour, last day (5)" in html
    assert len(re.findall(r"<rect ", charts)) == 60 + 24
    assert "<script" not in html.split('id="inotifier-charts"')[1].split("</svg>")[0]
    assert not re.search(r"<script[^>]+src=\"(https?:)?//", html)  # nothing from a CDN


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
@pytest.mark.parametrize("minute", [0, 1, 30, 59])
def test_chart_counts_match_a_direct_count(db: Any, tz: str, minute: int) -> None:
    now = datetime(2024, 7, 1, 15, minute, 42, tzinfo=UTC)
    rng = random.Random(minute)
    EventLog.objects.bulk_create(
        EventLog(
            timestamp=now - timedelta(seconds=rng.uniform(-600, 26 * 3600)),
            pathname=f"/r{i}",
            mask=IN_CREATE,
            maskname="IN_CREATE",
            host="h",
        )
        for i in range(400)
    )
    with timezone.override(zoneinfo.ZoneInfo(tz)):
        per_minute, per_hour = chart_series(EventLog.objects.all(), now)
    for series, step in ((per_minute, timedelta(minutes=1)), (per_hour, timedelta(hours=1))):
        for start, n in series:
            end = min(start + step, now.replace(second=0, microsecond=0) + timedelta(minutes=1))
            assert n == EventLog.objects.filter(timestamp__gte=start, timestamp__lt=end).count(), start


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "America/New_York"])
def test_chart_hours_follow_the_current_time_zone(db: Any, tz: str) -> None:
    now = datetime(2024, 3, 10, 12, 20, tzinfo=UTC)  # a DST change in New York that day
    event("/x", when=now - timedelta(minutes=10))
    event("/y", when=now - timedelta(hours=20))
    with timezone.override(zoneinfo.ZoneInfo(tz)):
        _per_minute, per_hour = chart_series(EventLog.objects.all(), now)
        assert sum(n for _t, n in per_hour) == 2
        for start, _n in per_hour:
            assert timezone.localtime(start).minute == 0
        assert per_hour[-1][0] <= now < per_hour[-1][0] + timedelta(hours=1)


def test_read_only(admin_client: Client, rows: dict[str, Any]) -> None:
    row = rows["file"]
    response = admin_client.get(reverse(CHANGELIST))
    assert reverse("admin:inotifier_eventlog_add") not in response.content.decode()
    assert admin_client.get(reverse("admin:inotifier_eventlog_add")).status_code == 403
    change_url = reverse("admin:inotifier_eventlog_change", args=[row.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert row.pathname in page.content.decode()
    response = admin_client.post(change_url, {"pathname": "/tampered", "host": "x"})
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.pathname == "/srv/in/report.csv"


def staff(codenames: list[str]) -> Client:
    user = User.objects.create_user("op", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="inotifier", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def test_view_permission_cannot_delete(rows: dict[str, Any]) -> None:
    client = staff(["view_eventlog"])
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "delete_selected" not in response.content.decode()
    delete_url = reverse("admin:inotifier_eventlog_delete", args=[rows["file"].pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    response = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [rows["file"].pk], "post": "yes"},
    )
    assert EventLog.objects.filter(pk=rows["file"].pk).exists()


def test_delete_with_permission(rows: dict[str, Any]) -> None:
    client = staff(["view_eventlog", "delete_eventlog"])
    selected = [rows["file"].pk, rows["dir"].pk]
    confirm = client.post(reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": selected})
    assert confirm.status_code == 200
    assert "2 events" in confirm.content.decode()
    done = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": selected, "post": "yes"},
    )
    assert done.status_code == 302
    assert not EventLog.objects.filter(pk__in=selected).exists()
    assert EventLog.objects.count() == 2
    one = reverse("admin:inotifier_eventlog_delete", args=[rows["moved"].pk])
    assert client.post(one, {"post": "yes"}).status_code == 302
    assert EventLog.objects.count() == 1


def test_hostile_file_name_is_text_never_markup(admin_client: Client, db: Any) -> None:
    row = event(
        HOSTILE,
        maskname="IN_MOVED_TO",
        mask=BITS["IN_MOVED_TO"],
        src_pathname="/srv/in/<img src=x onerror=alert(2)>",
        watch_label="<b>label</b>",
        host="<i>host</i>",
    )
    pages = [
        admin_client.get(reverse(CHANGELIST)),
        admin_client.get(reverse(CHANGELIST), {"q": "script"}),
        admin_client.get(reverse("admin:inotifier_eventlog_change", args=[row.pk])),
        admin_client.post(reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [row.pk]}),
    ]
    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert "<script>alert(1)</script>" not in html
        assert "<img src=x" not in html
        assert "<b>label</b>" not in html and "<i>host</i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].content.decode()
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[0].content.decode()


def test_non_utf8_name_is_shown_escaped(admin_client: Client, db: Any) -> None:
    event("/srv/in/caf\\xe9.txt", escaped=True)
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "/srv/in/caf\\xe9.txt" in html
    assert "(escaped)" in html


def test_queryset_is_the_probing_one(admin_client: Client, db: Any) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    assert isinstance(response.context["cl"].queryset, IndexProbingQuerySet)
    assert isinstance(response.context["cl"].queryset, QuerySet)


@override_settings(USE_TZ=True)
def test_empty_log(admin_client: Client, db: Any) -> None:
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "Events per minute, last hour (0)" in response.content.decode()


# -- issue 11: only the page's own filters, bounded time, values that are not ids ---------


def fill(count: int, days_ago: int = 3) -> None:
    """Insert ``count`` events in one statement (the ORM would take seconds), ``days_ago`` days old."""
    table = EventLog._meta.db_table
    columns = "timestamp, pathname, src_pathname, escaped, mask, maskname, is_dir, watch_label, host"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT now() - make_interval(days => %s, secs => i), "
                f"'/srv/in/file-' || i || '.dat', '', false, 256, 'IN_CREATE', false, '/srv/in', 'alpha' "
                f"FROM generate_series(1, %s) AS i",
                [days_ago, count],
            )
        else:
            cursor.execute(
                f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %s) "
                f"INSERT INTO {table} ({columns}) SELECT "
                f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-{int(days_ago)} days', '-' || i || ' seconds'), "
                f"'/srv/in/file-' || i || '.dat', '', 0, 256, 'IN_CREATE', 0, '/srv/in', 'alpha' FROM s",
                [count],
            )


@pytest.mark.parametrize(
    "params",
    [
        {"pathname__regex": "(.*)*x"},
        {"pathname__iregex": "(.*)*x"},
        {"watch_label__regex": "(a+)+$"},
        {"watch__path__regex": "(.*)*x"},
        {"watch__path__iregex": "(.*)*x"},
        {"host__regex": "(.*)*x"},
        {"pathname__contains": "x"},  # a full scan outside the search (and its time budget)
        {"id__gt": "1"},
        {"timestamp__gte": "2020-01-01"},
        {"escaped": "1"},
        {"event": "IN_CREATE", "maskname__regex": "(.*)*x"},  # one bad parameter among good ones
    ],
)
def test_lookups_other_than_the_pages_filters_are_refused_before_any_query(
    admin_client: Client, rows: dict[str, Any], params: dict[str, str]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(CHANGELIST), params)
    assert response.status_code == 400
    for q in queries.captured_queries:
        assert "inotifier_eventlog" not in q["sql"].lower(), q["sql"]


def test_every_link_the_list_offers_is_accepted(
    admin_client: Client, rows: dict[str, Any], settings: Any
) -> None:
    settings.INOTIFIER_WATCH_PATHS = [
        ["/srv/in", "IN_CREATE", "inotifier.event_processors.AllEventsSignaler"]
    ]
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    links = set(re.findall(r'href="(\?[^"]*)"', html))
    assert {link.split("=")[0] for link in links} >= {
        "?event",
        "?kind",
        "?watch",
        "?host",
        "?timestamp__year",
    }
    for link in links:
        response = admin_client.get(reverse(CHANGELIST) + link.replace("&amp;", "&"))
        assert response.status_code == 200, link
    day = timezone.localtime(rows["file"].timestamp)
    params = {"timestamp__year": day.year, "timestamp__month": day.month, "timestamp__day": day.day}
    assert rows["file"] in listed(admin_client, q="report", o="1", p="1", **params)


@pytest.mark.parametrize(
    "value",
    [
        "r99999999999999999999",
        "r9223372036854775808",
        "r0",
        "r-1",
        "r\u00b2",
        "r\u0661",
        "rabc",
        "r",
        "x12",
        "12",
    ],
)
def test_a_watch_value_that_is_no_valid_id_gives_an_empty_list(
    admin_client: Client, rows: dict[str, Any], value: str
) -> None:
    assert listed(admin_client, watch=value) == []


def test_the_largest_id_is_still_a_watch(admin_client: Client, rows: dict[str, Any]) -> None:
    assert listed(admin_client, watch="r9223372036854775807") == []
    assert listed(admin_client, watch=f"r{rows['watch'].pk}") == [rows["file"]]


def test_a_kind_that_is_not_a_choice_gives_an_empty_list(admin_client: Client, rows: dict[str, Any]) -> None:
    assert listed(admin_client, kind="bogus") == []
    assert len(listed(admin_client)) == 4


@pytest.mark.parametrize("name", ["host", "event", "watch", "kind"])
def test_a_nul_character_in_a_filter_value_is_a_bad_request(
    admin_client: Client, rows: dict[str, Any], name: str
) -> None:
    # PostgreSQL refuses NUL in text outright: the query would fail with a 500.
    value = "s:/srv/\x00" if name == "watch" else "a\x00b"
    assert admin_client.get(reverse(CHANGELIST), {name: value}).status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"timestamp__year": "99999999999"},
        {"timestamp__year": "9999"},
        {"timestamp__year": "9999", "timestamp__month": "12"},
        {"timestamp__year": "9999", "timestamp__month": "12", "timestamp__day": "31"},
        {"timestamp__year": "1"},
        {"timestamp__year": "2024", "timestamp__month": "99999999999999999999"},
    ],
)
@override_settings(TIME_ZONE="Asia/Kolkata")
def test_an_out_of_range_date_is_invalid_not_a_crash(
    admin_client: Client, rows: dict[str, Any], params: dict[str, str]
) -> None:
    response = admin_client.get(reverse(CHANGELIST), params)
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")  # Django's answer to "invalid parameters"
    assert admin_client.get(response["Location"]).status_code == 200


#: A search of many words matching every row and one matching none: every row is read and
#: each of its words compared, far longer than the budget below on both databases.
SLOW_SEARCH = "in " * 200 + "no-such-name"


@pytest.mark.parametrize("budget", [0.1])
def test_a_search_over_its_time_budget_gives_the_page_with_a_message(
    admin_client: Client, db: Any, settings: Any, budget: float
) -> None:
    fill(30_000)
    event("/srv/in/recent.txt")
    settings.INOTIFIER_ADMIN_QUERY_TIMEOUT = budget
    response = admin_client.get(reverse(CHANGELIST), {"q": SLOW_SEARCH, "host": "alpha"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="inotifier-out-of-budget"' in html
    assert "took longer than 0.1 s (INOTIFIER_ADMIN_QUERY_TIMEOUT) and was stopped" in html
    assert "Narrow it with a filter" in html
    assert list(response.context["cl"].result_list) == []
    # The search and the filter are kept, the rest of the page is there.
    assert 'value="in in in' in html
    assert "?host=alpha" in html and 'id="inotifier-charts"' in html
    # The budget ends with the page: a statement after it may run longer.
    count = EventLog.objects.filter(pathname__icontains="in").exclude(pathname__icontains="zz")
    for _word in range(100):
        count = count.filter(pathname__icontains="in")
    assert count.count() == 30_001
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone()[0] == "0"


def test_a_search_within_its_budget_answers_as_usual(
    admin_client: Client, rows: dict[str, Any], settings: Any
) -> None:
    settings.INOTIFIER_ADMIN_QUERY_TIMEOUT = 5.0
    response = admin_client.get(reverse(CHANGELIST), {"q": "report"})
    assert [r.pk for r in response.context["cl"].result_list] == [rows["file"].pk]
    assert "inotifier-out-of-budget" not in response.content.decode()


def test_a_page_over_budget_even_without_rows_answers_503(
    admin_client: Client, db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(30_000)
    settings.INOTIFIER_ADMIN_QUERY_TIMEOUT = 0.1

    def slow_charts(qs: QuerySet[EventLog], now: Any = None) -> dict[str, str]:
        EventLog.objects.filter(pathname__icontains="in").filter(
            *[Q(pathname__icontains="in")] * 200, pathname__icontains="no-such-name"
        ).count()
        return {}

    monkeypatch.setattr(eventlog_admin, "charts", slow_charts)
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 503
    html = response.content.decode()
    assert "Even without its rows, this page took longer than 0.1 s" in html
    assert admin_client.get(reverse("admin:index")).status_code == 200  # the connection still works


def test_actions_are_not_limited_by_the_budget(rows: dict[str, Any], settings: Any) -> None:
    settings.INOTIFIER_ADMIN_QUERY_TIMEOUT = 0.000_001
    client = staff(["view_eventlog", "delete_eventlog"])
    done = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [rows["file"].pk], "post": "yes"},
    )
    assert done.status_code == 302
    assert not EventLog.objects.filter(pk=rows["file"].pk).exists()


# -- issue 11: the "By watch" filter at 10 000 watches, control characters, seconds ---------


def test_the_watch_filter_lists_the_most_recently_active_watches_when_there_are_many(
    admin_client: Client, db: Any
) -> None:
    from inotifier.models import WatchState

    now = timezone.now()
    watches = WatchPath.objects.bulk_create(
        WatchPath(path=f"/srv/w{i:03}", mask=IN_CREATE) for i in range(60)
    )
    WatchState.objects.bulk_create(
        WatchState(
            host="alpha",
            key=f"row:{w.pk}",
            watch=w,
            path=w.path,
            state="active",
            last_event=now - timedelta(minutes=i),
        )
        for i, w in enumerate(watches)
    )
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    listed_ids = re.findall(r"\?watch=r(\d+)", html)
    assert listed_ids == [str(w.pk) for w in watches[:20]]  # newest event first
    assert 'id="inotifier-watch-filter-note"' in html
    assert reverse("admin:inotifier_watchpath_changelist") in html
    # The selected watch is listed even when it is not among the most active.
    oldest = watches[-1]
    response = admin_client.get(reverse(CHANGELIST), {"watch": f"r{oldest.pk}"})
    chosen = next(c for c in response.context["cl"].filter_specs if c.parameter_name == "watch")
    assert (f"r{oldest.pk}", oldest.path) in chosen.lookup_choices


def test_the_watch_filter_lists_every_watch_when_there_are_few(admin_client: Client, db: Any) -> None:
    watches = WatchPath.objects.bulk_create(
        WatchPath(path=f"/srv/w{i:03}", mask=IN_CREATE) for i in range(20)
    )
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert re.findall(r"\?watch=r(\d+)", html) == [str(w.pk) for w in watches]
    assert "inotifier-watch-filter-note" not in html


CONTROL_NAMES = {
    "newline": ("/srv/in/a\nFAKE 2024-01-01 root logged in", "/srv/in/a\\x0aFAKE 2024-01-01 root logged in"),
    "ansi": ("/srv/in/\x1b[31mred\x1b[0m", "/srv/in/\\x1b[31mred\\x1b[0m"),
    "osc": ("/srv/in/\x1b]0;pwned\x07", "/srv/in/\\x1b]0;pwned\\x07"),
    "rtl": ("/srv/in/invoice-\u202egpj.exe", "/srv/in/invoice-\\u202egpj.exe"),
    "backslash": ("/srv/in/a\\x0ab", "/srv/in/a\\\\x0ab"),  # reads differently from the newline
}


@pytest.mark.parametrize("case", sorted(CONTROL_NAMES))
def test_control_characters_in_names_are_shown_visibly(admin_client: Client, db: Any, case: str) -> None:
    raw, visible = CONTROL_NAMES[case]
    row = event(raw, src_pathname=raw + ".part", watch_label=raw, host=f"h{raw[-3:]}")
    pages = [
        admin_client.get(reverse(CHANGELIST)).content.decode(),
        admin_client.get(reverse("admin:inotifier_eventlog_change", args=[row.pk])).content.decode(),
    ]
    for html in pages:
        assert visible in html, case
        assert raw not in html, case
        assert "\x1b" not in html and "\u202e" not in html and "\x07" not in html
    assert f"{visible}.part" in pages[0] and "(escaped)" in pages[0]


def test_times_are_shown_with_seconds(admin_client: Client, db: Any) -> None:
    row = event("/srv/in/a", when=datetime(2024, 5, 3, 10, 0, 7, tzinfo=UTC))
    assert "2024-05-03 10:00:07" in admin_client.get(reverse(CHANGELIST)).content.decode()
    change = admin_client.get(reverse("admin:inotifier_eventlog_change", args=[row.pk]))
    assert "2024-05-03 10:00:07" in change.content.decode()


def test_the_budget_ends_with_the_page_outside_a_transaction(
    admin_client: Client, transactional_db: Any, settings: Any
) -> None:
    settings.INOTIFIER_ADMIN_QUERY_TIMEOUT = 0.001
    event("/srv/in/a")
    assert admin_client.get(reverse(CHANGELIST)).status_code in (200, 503)
    # Far longer than the budget: neither a statement_timeout nor a progress handler is left behind.
    if connection.vendor == "postgresql":
        sql = "SELECT count(*) FROM generate_series(1, 3000000)"
    else:
        sql = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000000) SELECT count(*) FROM s"
    with connection.cursor() as cursor:
        started = time.monotonic()
        cursor.execute(sql)
        assert cursor.fetchone()[0] == 3_000_000
    assert time.monotonic() - started > 0.01  # it did run longer than the budget
