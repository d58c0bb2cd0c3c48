"""What the inotifier admin pages share: only their own filters, a query time budget, safe display."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ChangeList
from django.db import connections, transaction
from django.db.utils import OperationalError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from .conf import app_settings
from .escaping import printable

#: Bounds no recorded time is outside of. The date hierarchy refuses a year
#: outside them (far years overflow Python's datetime once converted to UTC).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

# -- only the page's own filters ---------------------------------------------------


def filter_parameters(model_admin: admin.ModelAdmin, request: HttpRequest | None) -> set[str]:
    """Return the query parameters the list filters and date hierarchy of ``model_admin`` produce.

    A ``SimpleListFilter`` produces its ``parameter_name``; a field filter
    (``"enabled"``, ``"host"``) produces ``<field>__isnull`` and ``<field>__exact``
    (Django's boolean and choices filters) or ``<field>`` (its all-values
    filter), ``<field>__<target>__exact`` for a relation (its related-field
    filters); the date hierarchy produces ``<field>__year``, ``__month`` and
    ``__day``. Equality lookups only: each is one index probe at most.
    """
    names: set[str] = set()
    list_filter = model_admin.get_list_filter(request) if request is not None else model_admin.list_filter
    for item in list_filter:
        if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
            names.add(str(item.parameter_name))
            continue
        path = str(item[0] if isinstance(item, (list, tuple)) else item)
        field = get_fields_from_path(model_admin.model, path)[-1]
        target = getattr(field, "target_field", None) if field.is_relation else None
        if target is not None:
            names.add(f"{path}__{target.name}__exact")
        else:
            names |= {path, f"{path}__exact"}
        names.add(f"{path}__isnull")
    if model_admin.date_hierarchy:
        names |= {f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")}
    return names


class BoundedChangeList(ChangeList):
    """A change list that answers out-of-range date hierarchy values as invalid, not with a crash.

    Django turns ``?<field>__year=abc`` into "invalid parameters" (a redirect to
    ``?e=1``) but lets ``?<field>__year=99999999999`` (OverflowError) or
    ``?<field>__year=9999`` (the year after is out of range) escape as a 500.
    """

    def get_filters(self, request: HttpRequest) -> Any:
        try:
            result = super().get_filters(request)
        except (ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc
        if self.date_hierarchy:
            params = result[2]
            for suffix in ("gte", "lt"):
                value = params.get(f"{self.date_hierarchy}__{suffix}")
                if isinstance(value, list):  # Django >= 5.0 keeps lists of values
                    value = value[-1] if value else None
                if isinstance(value, datetime) and not _within_bounds(value):
                    raise IncorrectLookupParameters(f"{self.date_hierarchy} out of range")
        return result


def _within_bounds(value: datetime) -> bool:
    if timezone.is_naive(value):
        return EARLIEST.replace(tzinfo=None) <= value <= LATEST.replace(tzinfo=None)
    return EARLIEST <= value <= LATEST


class OwnFiltersOnly(admin.ModelAdmin):
    """A model admin whose list accepts only the filters it offers.

    Django accepts any lookup on a local field in a list's query string, so
    ``?path__regex=(.*)*x`` runs a catastrophic regular expression (on SQLite
    inside the database's own lock, where no timeout can stop it). Here every
    parameter that is not one of the page's own filters is refused with
    HTTP 400, as Django refuses lookups through relations, before any query
    runs; so is a value holding a NUL character, which no stored text holds and
    which PostgreSQL cannot even be asked about.
    """

    def lookup_allowed(self, lookup: str, value: str | None, request: HttpRequest | None = None) -> bool:
        """Return True only for the list's own filter parameters with a value free of NUL."""
        if value is not None and "\x00" in str(value):
            return False
        return lookup in filter_parameters(self, request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        """Return the change list class that refuses out-of-range dates cleanly."""
        return BoundedChangeList


# -- a time budget for list queries ---------------------------------------------------


class QueryTimeout(Exception):
    """A statement ran out of its time budget and was stopped by the database."""


def admin_query_timeout() -> float | None:
    """Return INOTIFIER_ADMIN_QUERY_TIMEOUT in seconds, or None when there is no budget."""
    value = app_settings.INOTIFIER_ADMIN_QUERY_TIMEOUT
    if not value:
        return None
    seconds = float(value)
    return seconds if seconds > 0 and math.isfinite(seconds) else None


def _cancelled(exc: BaseException) -> bool:
    """Return True when ``exc`` (or what it wraps) is PostgreSQL's 'statement timeout'."""
    for candidate in (exc, exc.__cause__):
        if getattr(candidate, "sqlstate", None) == "57014":  # query_canceled
            return True
        diag = getattr(candidate, "pgcode", None)  # psycopg2
        if diag == "57014":
            return True
    return False


@contextmanager
def query_budget(using: str, seconds: float | None) -> Iterator[None]:
    """Give every statement run inside at most ``seconds``; raise QueryTimeout for one that overruns.

    PostgreSQL: a transaction with ``statement_timeout`` set locally (restored
    on the way out, so an enclosing transaction keeps its own). SQLite: a
    progress handler that interrupts a statement (and the reading of its rows)
    once it has run for ``seconds``. Other databases: no budget.
    """
    if seconds is None:
        yield
        return
    connection = connections[using]
    if connection.vendor == "postgresql":
        # Inside a transaction of the caller's (ATOMIC_REQUESTS, a test), SET LOCAL
        # would outlive this block: put the previous value back. Otherwise the
        # COMMIT ends it.
        enclosed = connection.in_atomic_block
        try:
            with transaction.atomic(using=using):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT current_setting('statement_timeout'), "
                        "set_config('statement_timeout', %s, true)",
                        [str(max(1, round(seconds * 1000)))],
                    )
                    previous = cursor.fetchone()[0]
                yield
                if enclosed:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
        except Exception as exc:
            if _cancelled(exc):
                raise QueryTimeout(str(exc)) from exc
            raise
        return
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    deadline = [math.inf]
    fired = [False]

    def on_progress() -> int:
        if time.monotonic() > deadline[0]:
            fired[0] = True
            return 1  # non-zero: SQLite stops the statement ("interrupted")
        return 0

    def per_statement(execute: Any, sql: Any, params: Any, many: Any, context: Any) -> Any:
        deadline[0] = time.monotonic() + seconds
        return execute(sql, params, many, context)

    # Called every N virtual machine instructions: about every 0.1 ms of work.
    raw.set_progress_handler(on_progress, 5000)
    try:
        with connection.execute_wrapper(per_statement):
            yield
    except (OperationalError, sqlite3.OperationalError) as exc:
        if fired[0] and "interrupt" in str(exc):
            raise QueryTimeout(str(exc)) from exc
        raise
    finally:
        try:
            raw.set_progress_handler(None, 0)
        except sqlite3.Error:  # the connection was closed meanwhile: nothing to remove
            pass


# -- showing what the file system and the daemons wrote --------------------------------


def shown(text: str | None, *, backslash: bool = False) -> str:
    """Return ``text`` with control and invisible characters made visible (``printable``).

    ``backslash`` doubles literal backslashes too: for paths, so that a name
    that contains ``\\x0a`` and one that contains a newline read differently.
    """
    return printable(str(text or ""), backslash=backslash)


def shorten(text: str, limit: int) -> str:
    """Return ``text`` cut in the middle to at most ``limit`` characters (the end of a path matters)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return f"{text[:head]}…{text[-tail:]}"


def path_html(path: str, limit: int = 160, *, escaped: bool = False) -> str:
    """Return a path as escaped HTML: printable, shortened in the middle, the whole in a tooltip.

    ``escaped`` is for event log rows whose stored text is already escaped
    losslessly (backslashes doubled): they are not doubled again.
    """
    text = shown(path, backslash=not escaped)
    short = shorten(text, limit)
    if short == text:
        return format_html("{}", text)
    return format_html('<span class="inotifier-path" title="{}">{}</span>', text, short)


def show_time(value: datetime | None) -> str:
    """Return a time in the current time zone with seconds (``2024-05-03 10:00:07``), or "-"."""
    if value is None:
        return "-"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")
