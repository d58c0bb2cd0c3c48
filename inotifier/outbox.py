"""The outbox: one row per event handed to a task queue, from the daemon's buffer to the engine."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import Count, Min
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .batches import DELETE_BATCH, BatchDeleteQuerySet
from .conf import app_settings
from .handoff import Pending, build_payload
from .states import HandoffState

#: The states of a row that is not done yet (counted by the admin and the status).
OPEN_STATES = (HandoffState.PENDING, HandoffState.FAILED, HandoffState.DEAD)


class OutboxQuerySet(BatchDeleteQuerySet["OutboxEntry"]):
    """Outbox rows: the due ones, the counts the admin and the status show, the retention."""

    def due(self, state: str, now: datetime | None = None) -> OutboxQuerySet:
        """Return the rows of ``state`` (pending or failed) due now, oldest first.

        One state at a time: an index range scan of ``inotifier_outbox_due`` that is
        already in order (with both states, the planner sorts every due row).
        """
        return self.filter(state=state, next_attempt__lte=now or timezone.now()).order_by(
            "next_attempt", "id"
        )

    def summary(self) -> dict[str, Any]:
        """Return the counts per state, per watch and state, and the oldest pending row's time.

        ``{"states": {state: n}, "watches": [(label, key, {state: n})], "oldest_pending": datetime|None}``;
        done rows are counted in ``states`` only.
        """
        states = dict.fromkeys(HandoffState.values, 0)
        for row in self.values("state").annotate(n=Count("id")).order_by():
            states[row["state"]] = row["n"]
        per_watch: dict[tuple[str, str], dict[str, int]] = {}
        rows = (
            self.filter(state__in=OPEN_STATES)
            .values("watch_label", "watch_key", "state")
            .annotate(n=Count("id"))
            .order_by("watch_label", "watch_key")
        )
        for row in rows:
            counts = per_watch.setdefault(
                (row["watch_label"], row["watch_key"]), dict.fromkeys(OPEN_STATES, 0)
            )
            counts[row["state"]] = row["n"]
        oldest = self.filter(state__in=(HandoffState.PENDING, HandoffState.FAILED)).aggregate(
            oldest=Min("created")
        )["oldest"]
        return {
            "states": states,
            "watches": [(label, key, counts) for (label, key), counts in per_watch.items()],
            "oldest_pending": oldest,
        }

    def retry(self) -> int:
        """Make failed and dead rows pending again, due now, their attempts reset; return how many."""
        return self.filter(state__in=(HandoffState.FAILED, HandoffState.DEAD)).update(
            state=HandoffState.PENDING, attempts=0, next_attempt=timezone.now(), last_error=""
        )

    def prune(
        self,
        max_age: float | None = None,
        max_rows: int | None = None,
        batch: int = DELETE_BATCH,
        deadline: float | None = None,
    ) -> tuple[int, bool]:
        """Delete done rows older than ``max_age`` seconds, then beyond the newest ``max_rows`` done rows.

        None means the setting (INOTIFIER_OUTBOX_MAX_AGE / _MAX_ROWS), 0 no
        limit; pending, failed and dead rows are never pruned. Return (deleted,
        done), ``done`` False when ``deadline`` (``time.monotonic()``) passed first.
        """
        if max_age is None:
            max_age = float(app_settings.INOTIFIER_OUTBOX_MAX_AGE or 0)
        if max_rows is None:
            max_rows = int(app_settings.INOTIFIER_OUTBOX_MAX_ROWS or 0)
        done_rows = self.filter(state=HandoffState.DONE)
        deleted = 0
        if max_age and max_age > 0:
            cutoff = timezone.now() - timedelta(seconds=max_age)
            n, finished = done_rows.filter(done__lt=cutoff).delete_in_batches(batch, deadline)
            deleted += n
            if not finished:
                return deleted, False
        if max_rows and max_rows > 0:
            # Ids grow with time: the done rows beyond the newest max_rows are those below this id.
            first_gone = list(done_rows.order_by("-id").values_list("id", flat=True)[max_rows : max_rows + 1])
            if first_gone:
                n, finished = done_rows.filter(id__lte=first_gone[0]).delete_in_batches(batch, deadline)
                deleted += n
                if not finished:
                    return deleted, False
        return deleted, True


class OutboxEntry(models.Model):
    """One event handed to a task: written by the daemon, handed to the engine by its dispatcher."""

    created = models.DateTimeField(_("created"), default=timezone.now)
    task = models.CharField(_("task"), max_length=255, help_text=_("Dotted path of the task called."))
    payload = models.JSONField(_("event"), help_text=_("The event dict the task gets (JSON)."))
    watch = models.ForeignKey(
        "inotifier.WatchPath",
        verbose_name=_("watch"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="outbox_entries",
        db_constraint=False,
    )
    watch_key = models.CharField(_("watch key"), max_length=64, blank=True)
    watch_label = models.CharField(_("watch label"), max_length=4096, blank=True)
    host = models.CharField(_("host"), max_length=255, help_text=_("The daemon that wrote the row."))
    state = models.CharField(
        _("state"), max_length=16, choices=HandoffState.choices, default=HandoffState.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt = models.DateTimeField(_("next attempt"), default=timezone.now)
    last_error = models.TextField(_("last error"), blank=True)
    done = models.DateTimeField(_("handed off"), null=True, blank=True)

    objects = OutboxQuerySet.as_manager()

    class Meta:
        verbose_name = _("outbox entry")
        verbose_name_plural = _("outbox")
        ordering = ("-id",)
        indexes = [
            # The dispatcher's question: which rows are due?
            models.Index(fields=["state", "next_attempt", "id"], name="inotifier_outbox_due"),
            # The retention's: which done rows are old?
            models.Index(fields=["state", "done"], name="inotifier_outbox_done"),
            # The admin's counts per watch and state.
            models.Index(fields=["state", "watch_key"], name="inotifier_outbox_watch"),
        ]

    def __str__(self) -> str:
        from .escaping import printable

        pathname = self.payload.get("pathname", "") if isinstance(self.payload, dict) else ""
        return f"{self.task} {printable(str(pathname))} ({self.state})"


#: Columns the writer fills, in the order of its value tuples (the rest keep their defaults).
INSERT_FIELDS = (
    "created",
    "task",
    "payload",
    "watch",
    "watch_key",
    "watch_label",
    "host",
    "state",
    "attempts",
    "next_attempt",
    "last_error",
)


def write_rows(rows: Sequence[Pending], using: str = DEFAULT_DB_ALIAS) -> None:
    """Write ``rows`` to the outbox in one transaction, each with a fresh event id (a UUID).

    Multi-row INSERTs of values adapted once per batch: model instances and
    ``bulk_create`` cost about 130 us a row, five times the rest of the
    hand-off, in a thread that shares the GIL with the read loop. Raises
    DatabaseError with nothing written.
    """
    connection = connections[using]
    opts = OutboxEntry._meta
    fields = [opts.get_field(name) for name in INSERT_FIELDS]
    payload_field = cast(models.JSONField, fields[INSERT_FIELDS.index("payload")])
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    prep = payload_field.get_db_prep_save
    pending = HandoffState.PENDING.value
    values = []
    for row in rows:
        ref = row.ref
        payload = prep(build_payload(row, str(uuid.uuid4())), connection)
        names = (ref.task[:255], payload, ref.watch_id, ref.key[:64], ref.label[:4096], ref.host[:255])
        values.append((now, *names, pending, 0, now, ""))
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(getattr(field, "column", ""))) for field in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    per_statement = max(1, min(1000, connection.ops.bulk_batch_size(fields, values)))
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start : start + per_statement]
            sql = f"INSERT INTO {quote(opts.db_table)} ({columns}) VALUES " + ", ".join(
                [row_sql] * len(chunk)
            )
            cursor.execute(sql, [value for row in chunk for value in row])


class DirectSink:
    """The outbox outside the daemon: each row is written (and committed) at once.

    What a TaskDispatcher uses under pyinotify's own Notifier, in a shell or a
    test. Inside the caller's transaction, if any: durable once it commits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._appended = 0

    @property
    def committed(self) -> int:
        return self._appended

    def append(self, row: Pending) -> int:
        write_rows([row])
        with self._lock:
            seq = self._appended
            self._appended += 1
        return seq

    def used(self) -> None:
        pass


__all__ = ["DirectSink", "OutboxEntry", "OutboxQuerySet", "write_rows"]
