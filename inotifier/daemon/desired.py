"""The desired state: which watches this host should hold, and the processors they run."""

from __future__ import annotations

from typing import Any

from django.db import connections

from ..escaping import get_logger
from ..specs import ROW_FIELDS, RowSpecs, SpecError, WatchSpec, load_processor
from .dbguard import DatabaseGuard

logger = get_logger("inotifier.daemon")


class DesiredState:
    """Settings entries plus the enabled WatchPath rows for this host, and the version counter.

    Without a database (``guard`` None) only the settings count. During an
    outage the rows last read are kept, so the active watches stay as they are.
    """

    def __init__(self, hostname: str, guard: DatabaseGuard | None) -> None:
        self.hostname = hostname
        self.guard = guard
        self.row_specs = RowSpecs()
        self._rows: list[tuple[Any, ...]] = []  # last rows read; kept through an outage

    def version(self) -> int | None:
        """Return the ConfigVersion counter, or None when it cannot be read now."""
        if self.guard is None:
            return None
        from ..models import ConfigVersion

        _done, version = self.guard.call(ConfigVersion.current)
        return version

    def specs(self, force: bool = False) -> dict[str, WatchSpec]:
        """Return the desired watches by key; ``force`` re-validates every row (a full resync)."""
        if force:
            self.row_specs.clear()
        if self.guard is not None:
            done, rows = self.guard.call(self._read_rows, force=True)
            if done and rows is not None:
                self._rows = rows
        return self.row_specs.build(self._rows)

    def _read_rows(self) -> list[tuple[Any, ...]]:
        from ..models import WatchPath

        # Plain tuples straight from the cursor: with thousands of rows, model
        # instances (or even values_list's converters) dominate the reconcile (bench 5).
        query = WatchPath.objects.enabled_for_host(self.hostname).values_list(*ROW_FIELDS)
        sql, params = query.query.sql_with_params()
        with connections[query.db].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def processor(self, spec: WatchSpec) -> tuple[Any, str]:
        """Import and instantiate the processor of ``spec``; (None, why) when it cannot be used.

        Rows only reach this with a processor from the allowlist (checked when
        their spec was built): nothing else is ever imported for a row. A
        processor with ``inotifier_bind`` (TaskDispatcher) is told its watch.
        """
        try:
            cls = load_processor(spec.processor)
            processor = cls()
            bind = getattr(processor, "inotifier_bind", None)
            if callable(bind):
                bind(spec.key, spec.label, spec.watch_id, self.hostname)
            return processor, ""
        except SpecError as exc:
            return None, str(exc)
        except Exception as exc:
            logger.exception("processor %s failed to start", spec.processor)
            return None, f"processor {spec.processor!r} failed to start: {type(exc).__name__}: {exc}"
