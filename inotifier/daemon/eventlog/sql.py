"""Rows as SQL: values adapted once per row, written by COPY (PostgreSQL) or multi-row INSERT."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from ...masks import IN_ISDIR
from .rows import Row, escape_pair

#: EventLog columns written, in the order of the value tuples.
INSERT_FIELDS = (
    "timestamp",
    "pathname",
    "src_pathname",
    "escaped",
    "mask",
    "maskname",
    "is_dir",
    "watch",
    "watch_label",
    "host",
)


def row_values(batch: list[Row], host: str, connection: Any) -> list[tuple[Any, ...]]:
    """Return the database values of ``batch`` (in INSERT_FIELDS order).

    Kept to a few microseconds per row (ASCII names need no escaping at all):
    when the daemon writes from its own thread, this shares the GIL with the
    read loop (bench 3a).
    """
    when = time_formatter(connection)
    labels: dict[str, str] = {}
    values: list[tuple[Any, ...]] = []
    append = values.append
    for ts, pathname, src, mask, maskname, (watch_id, label) in batch:
        if pathname.isascii() and (not src or src.isascii()):
            path_text, src_text, escaped = pathname, src, False
        else:
            path_text, src_text, escaped = escape_pair(pathname, src)
        label_text = labels.get(label)
        if label_text is None:
            label_text = labels[label] = escape_pair(label, "")[0][:4096]
        append(
            (
                when(ts),
                path_text,
                src_text,
                escaped,
                mask,
                maskname[:64],
                bool(mask & IN_ISDIR),
                watch_id,
                label_text,
                host,
            )
        )
    return values


def insert_rows(connection: Any, model: Any, values: list[tuple[Any, ...]], batch_size: int) -> None:
    """INSERT ``values`` as multi-row statements: the SQL bulk_create emits, without models.

    Building one model instance per row (and bulk_create's per-field
    preparation) cost the loop a third of its rate when the writer was a
    thread. Values are already adapted for the database.
    """
    opts = model._meta
    fields = [opts.get_field(name) for name in INSERT_FIELDS]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw = cursor.cursor
            if hasattr(raw, "copy"):  # psycopg 3: COPY is several times cheaper than INSERT
                sql = f"COPY {quote(opts.db_table)} ({columns}) FROM STDIN"
                # Through Django's debug cursor when queries are being logged, so
                # CaptureQueriesContext and connection.queries see the statement.
                debug = getattr(cursor, "debug_sql", None)
                logged = debug(sql) if debug is not None else contextlib.nullcontext()
                # wrap_database_errors: driver errors become Django's (an outage is
                # an OperationalError, as from cursor.execute).
                with logged, connection.wrap_database_errors, raw.copy(sql) as copy:
                    for row in values:
                        copy.write_row(row)
                return
    per_statement = max(1, min(batch_size, connection.ops.bulk_batch_size(fields, values)))
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start : start + per_statement]
            sql = f"INSERT INTO {quote(opts.db_table)} ({columns}) VALUES " + ", ".join(
                [row_sql] * len(chunk)
            )
            cursor.execute(sql, [value for row in chunk for value in row])


def time_formatter(connection: Any) -> Callable[[float], Any]:
    """Return ``f(ts) -> value`` for the timestamp column of ``connection``.

    With USE_TZ on SQLite (connection time zone UTC) or PostgreSQL, the text is
    built from a per-second prefix cache (rows of a batch share their second):
    Django's datetime adaptation costs several microseconds per row. It writes
    what Django writes (``YYYY-MM-DD HH:MM:SS[.ffffff]``, ``+00:00`` on PostgreSQL).
    """
    postgres = connection.vendor == "postgresql"
    fast = settings.USE_TZ and (
        postgres or (connection.vendor == "sqlite" and connection.timezone_name == "UTC")
    )
    if not fast:
        adapt = connection.ops.adapt_datetimefield_value
        if settings.USE_TZ:
            return lambda ts: adapt(datetime.fromtimestamp(ts, UTC))
        return lambda ts: adapt(datetime.fromtimestamp(ts))
    suffix = "+00:00" if postgres else ""
    prefixes: dict[int, str] = {}

    def when(ts: float) -> str:
        second = int(ts)
        micro = round((ts - second) * 1_000_000)
        if micro >= 1_000_000:
            second += 1
            micro -= 1_000_000
        prefix = prefixes.get(second)
        if prefix is None:
            if len(prefixes) > 4096:
                prefixes.clear()
            prefix = prefixes[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"{prefix}.{micro:06d}{suffix}" if micro else prefix + suffix

    return when
