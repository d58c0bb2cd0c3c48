"""Server time of the admin event-log list page over a big EventLog table (SQLite, PostgreSQL).

Usage::

    python bench/admin_eventlog.py                       # SQLite and PostgreSQL, 1 000 000 rows
    python bench/admin_eventlog.py --db sqlite --rows 200000 --runs 5
    python bench/admin_eventlog.py --db postgres --spread 3600   # every row in the last hour
    python bench/admin_eventlog.py --pg-url postgres://postgres@127.0.0.1:5432/postgres
    python bench/admin_eventlog.py --rows 100000 --watches 10000   # the "By watch" filter at scale

Each database gets a scratch database of its own (a SQLite file in the system
temp directory; ``inotifier_bench_admin`` on the PostgreSQL server, created and
dropped here), migrated and filled with ``--rows`` events spread evenly over
the last ``--spread`` seconds (default: the default retention, 7 days), and
``--watches`` admin watches (``WatchPath`` rows, each with a reported state and
a last event) that the "By watch" filter chooses from. Then the
list page is requested in this process through Django's test client, ``--runs``
times per URL, after one warm-up request: the figure is the time spent in
Django handling the request (no network, no browser). The first request of all
is reported separately (cold caches), and the size of each page. ``run()`` is the entry point for other
harnesses; it returns ``{url label: median ms}`` plus ``median_ms`` for the plain
list page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

PG_BENCH_DB = "inotifier_bench_admin"
MASKS = [
    ("IN_CREATE", 0x100, False),
    ("IN_CLOSE_WRITE", 0x8, False),
    ("IN_MOVED_TO", 0x80, False),
    ("IN_DELETE", 0x200, False),
    ("IN_CREATE|IN_ISDIR", 0x40000100, True),
]
HOSTS = ["ingest-1", "ingest-2", "ingest-3"]
LABELS = [f"/srv/spool/in{i}" for i in range(5)]


def setup_django(database_url: str) -> None:
    """Point the test settings at ``database_url`` and set Django up."""
    os.environ["DATABASE_URL"] = database_url
    # The generated rows' watches, as settings entries (the watch filter lists them).
    os.environ["INOTIFIER_WATCH_PATHS"] = json.dumps(
        [[label, "IN_CREATE", "inotifier.event_processors.AllEventsSignaler"] for label in LABELS]
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def fill(rows: int, spread: float, seed: int = 7) -> float:
    """Replace the event log with ``rows`` generated events; return seconds taken."""
    from django.db import connection, transaction

    from inotifier.models import EventLog

    started = time.perf_counter()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    table = EventLog._meta.db_table
    columns = (
        "timestamp",
        "pathname",
        "src_pathname",
        "escaped",
        "mask",
        "maskname",
        "is_dir",
        "watch_label",
        "host",
    )

    def generate() -> Any:
        # Oldest first, as the daemon writes them.
        for i in range(rows):
            ts = now - timedelta(seconds=spread * (1 - (i + rng.random()) / rows))
            maskname, mask, is_dir = MASKS[rng.randrange(len(MASKS))]
            label = LABELS[i % len(LABELS)]
            name = f"{label}/batch-{i // 1000:05}/file-{i:07}.dat"
            yield ts, name, "", False, mask, maskname, is_dir, label, HOSTS[i % len(HOSTS)]

    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            raw = cursor.cursor
            with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in generate():
                    copy.write_row(row)
        connection.set_autocommit(True)
        with connection.cursor() as cursor:
            # What autovacuum does soon after a bulk load; without it PostgreSQL
            # cannot use index-only scans and its estimates are blind.
            cursor.execute(f"VACUUM ANALYZE {table}")
    else:
        adapt = connection.ops.adapt_datetimefield_value
        placeholders = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
        batch: list[Any] = []
        with transaction.atomic(), connection.cursor() as cursor:
            for row in generate():
                batch.append((adapt(row[0]), *row[1:]))
                if len(batch) == 50_000:
                    cursor.executemany(sql, batch)
                    batch.clear()
            if batch:
                cursor.executemany(sql, batch)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return time.perf_counter() - started


def fill_watches(count: int) -> float:
    """Replace the admin watches with ``count`` rows, each reported active with a last event."""
    from django.db import transaction

    from inotifier.models import WatchPath, WatchState

    started = time.perf_counter()
    now = datetime.now(UTC)
    with transaction.atomic():
        WatchState.objects.all().delete()
        WatchPath.objects.all().delete()
        rows = WatchPath.objects.bulk_create(
            WatchPath(path=f"/srv/watched/w{i:06}", mask=0x100) for i in range(count)
        )
        WatchState.objects.bulk_create(
            (
                WatchState(
                    host=HOSTS[0],
                    key=f"row:{row.pk}",
                    watch=row,
                    path=row.path,
                    state="active",
                    last_event=now - timedelta(seconds=i),
                )
                for i, row in enumerate(rows)
            ),
            batch_size=1000,
        )
    return time.perf_counter() - started


def urls() -> list[tuple[str, dict[str, Any]]]:
    """Return the list pages measured: (label, query parameters)."""
    today = datetime.now(UTC)
    return [
        ("list", {}),
        ("page 50", {"p": 50}),
        ("event filter", {"event": "IN_DELETE"}),
        ("host filter", {"host": "ingest-2"}),
        ("settings watch filter", {"watch": f"s:{LABELS[1]}"}),
        ("directory filter", {"kind": "dir"}),
        (
            "date: today",
            {
                "timestamp__year": today.year,
                "timestamp__month": today.month,
                "timestamp__day": today.day,
            },
        ),
        ("search", {"q": "file-0012345"}),
        *_watch_urls(),
    ]


def _watch_urls() -> list[tuple[str, dict[str, Any]]]:
    from inotifier.models import WatchPath

    last = WatchPath.objects.order_by("-pk").values_list("pk", flat=True).first()
    return [("row watch filter", {"watch": f"r{last}"})] if last else []


def measure(runs: int) -> dict[str, Any]:
    """Request each list page ``runs`` times; return timings (ms) and query counts."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    user, _created = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    url = reverse("admin:inotifier_eventlog_changelist")
    pages = urls()
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {label: [] for label, _params in pages}
    shown: dict[str, int] = {}
    size: dict[str, int] = {}
    for label, params in pages:  # the first request of each page: cold caches
        started = time.perf_counter()
        response = client.get(url, params)
        first[label] = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.content[:500]
        shown[label] = response.context_data["cl"].result_count
        size[label] = len(response.content)
    for _ in range(runs):  # then rounds over every page, so drift hits them all alike
        for label, params in pages:
            started = time.perf_counter()
            client.get(url, params)
            times[label].append((time.perf_counter() - started) * 1000)
    results: dict[str, Any] = {}
    for label, params in pages:
        with CaptureQueriesContext(connection) as queries:
            client.get(url, params)
        slowest = max(queries.captured_queries, key=lambda q: float(q["time"]))
        results[label] = {
            "first_ms": first[label],
            "median_ms": statistics.median(times[label]),
            "max_ms": max(times[label]),
            "queries": len(queries.captured_queries),
            "slowest_query_ms": float(slowest["time"]) * 1000,
            "slowest_query": slowest["sql"][:160],
            "shown": shown[label],
            "kib": size[label] / 1024,
        }
    return results


def run(
    database_url: str,
    rows: int = 1_000_000,
    runs: int = 15,
    spread: float = 7 * 86400,
    refill: bool = True,
    watches: int = 0,
) -> dict[str, float]:
    """Fill and measure one database in this process; return ``{label: median ms}``.

    Django can be set up once per process: call it once (a subprocess per database).
    """
    setup_django(database_url)
    from django.core.management import call_command
    from django.db import connection

    from inotifier.models import EventLog

    call_command("migrate", verbosity=0)
    if refill or EventLog.objects.count() != rows:
        seconds = fill(rows, spread)
        print(f"  filled {rows:,} rows in {seconds:.1f} s", file=sys.stderr)
    if watches:
        seconds = fill_watches(watches)
        print(f"  made {watches:,} watches in {seconds:.1f} s", file=sys.stderr)
    load_before = os.getloadavg()[0]
    results = measure(runs)
    load_after = os.getloadavg()[0]
    print(
        f"\n{connection.vendor}: {rows:,} rows over the last {spread / 3600:g} h, "
        f"{watches:,} admin watches, {runs} runs per page (ms; server time in this process; "
        f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"{'page':<24}{'median':>9}{'max':>9}{'first':>9}{'queries':>9}{'slowest q':>11}{'shown':>10}"
        f"{'KiB':>8}"
    )
    for label, r in results.items():
        print(
            f"{label:<24}{r['median_ms']:>9.1f}{r['max_ms']:>9.1f}{r['first_ms']:>9.1f}"
            f"{r['queries']:>9}{r['slowest_query_ms']:>11.1f}{r['shown']:>10,}{r['kib']:>8.0f}"
        )
    worst = max(results.items(), key=lambda kv: kv[1]["slowest_query_ms"])
    print(f"slowest query ({worst[0]}): {worst[1]['slowest_query']}")
    out = {label: float(r["median_ms"]) for label, r in results.items()}
    out["median_ms"] = out["list"]
    return out


def _pg_admin_url(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def prepare_postgres(server_url: str) -> str:
    """(Re)create the scratch PostgreSQL database; return its URL."""
    import psycopg

    with psycopg.connect(_pg_admin_url(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    return _pg_admin_url(server_url, PG_BENCH_DB)


def drop_postgres(server_url: str) -> None:
    """Drop the scratch PostgreSQL database."""
    import psycopg

    with psycopg.connect(_pg_admin_url(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--spread",
        type=float,
        default=7 * 86400,
        help="seconds the rows are spread over, ending now (default 7 days)",
    )
    parser.add_argument(
        "--pg-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server to create the scratch database on",
    )
    parser.add_argument(
        "--watches", type=int, default=0, help="admin watches (WatchPath rows) to create (default 0)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run(args.child, args.rows, args.runs, args.spread, watches=args.watches)
        return 0

    import subprocess

    status = 0
    targets = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    for target in targets:
        if target == "sqlite":
            path = os.path.join(tempfile.gettempdir(), "inotifier-bench-admin.sqlite3")
            url = f"sqlite:///{path}"
        else:
            url = prepare_postgres(args.pg_url)
        try:
            # One process per database: Django is set up once per process.
            status |= subprocess.call(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    url,
                    "--rows",
                    str(args.rows),
                    "--runs",
                    str(args.runs),
                    "--spread",
                    str(args.spread),
                    "--watches",
                    str(args.watches),
                ],
                cwd=REPO,
            )
        finally:
            if not args.keep:
                if target == "sqlite":
                    for suffix in ("", "-wal", "-shm"):
                        if os.path.exists(path + suffix):
                            os.remove(path + suffix)
                else:
                    drop_postgres(args.pg_url)
    return status


if __name__ == "__main__":
    sys.exit(main())
