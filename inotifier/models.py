"""WatchPath (watches edited in the admin), the ConfigVersion counter, status rows and EventLog."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, router, transaction
from django.db.models import F
from django.utils.translation import gettext_lazy as _

from .announce import after_commit, notify
from .batches import DELETE_BATCH, BatchDeleteQuerySet
from .conf import app_settings
from .escaping import escape_path, printable, unescape_path  # noqa: F401  (escape_path: its old home)
from .masks import ALL_EVENTS, describe_mask
from .specs import (
    SpecError,
    parse_excludes,
    validate_allowed_root,
    validate_catch_up,
    validate_mask,
    validate_path,
    validate_processor_allowed,
    validate_settle,
)
from .states import State, near_watch_limit


class ConfigVersion(models.Model):
    """The one-row counter that moves on every change to watches; daemons poll it."""

    version = models.BigIntegerField(_("version"), default=0)
    changed = models.DateTimeField(_("changed"), auto_now=True)

    class Meta:
        verbose_name = _("configuration version")
        verbose_name_plural = _("configuration version")

    def __str__(self) -> str:
        return str(self.version)

    @classmethod
    def bump(cls, using: str | None = None) -> None:
        """Move the counter by one and NOTIFY, once the current transaction commits (at once outside one).

        Every daemon then reconciles: at once on PostgreSQL (``NOTIFY
        inotifier_config``), else at its next poll. Nothing is locked until the
        caller's commit, and a transaction that changes many rows moves it once.
        After changing ``inotifier_watchpath`` with raw SQL, call this (or run
        ``UPDATE inotifier_configversion SET version = version + 1``).
        """
        using = using or router.db_for_write(cls)
        after_commit("inotifier-config-version", lambda: cls.bump_now(using), using)

    @classmethod
    def bump_now(cls, using: str | None = None) -> int:
        """Move the counter and NOTIFY in one short transaction of its own; return the new version."""
        using = using or router.db_for_write(cls)
        rows = cls.objects.using(using)
        with transaction.atomic(using=using):
            if not rows.filter(pk=1).update(version=F("version") + 1):
                _obj, created = rows.get_or_create(pk=1, defaults={"version": 1})
                if not created:
                    rows.filter(pk=1).update(version=F("version") + 1)
            version = cls.current(using)
            notify(using, str(version))  # delivered by PostgreSQL when this transaction commits
        return version

    @classmethod
    def current(cls, using: str | None = None) -> int:
        """Return the counter's value (0 before the first change)."""
        rows = cls.objects.using(using) if using else cls.objects
        value = rows.filter(pk=1).values_list("version", flat=True).first()
        return int(value or 0)


class WatchPathQuerySet(models.QuerySet["WatchPath"]):
    """Queryset whose bulk writes move the ConfigVersion counter (they send no model signals)."""

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        if rows:
            ConfigVersion.bump(self.db)
        return rows

    update.alters_data = True  # type: ignore[attr-defined]

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        if result[0]:
            ConfigVersion.bump(self.db)
        return result

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[WatchPath]:  # type: ignore[override]
        created: list[WatchPath] = list(super().bulk_create(objs, *args, **kwargs))
        if created:
            ConfigVersion.bump(self.db)
        return created

    def bulk_update(self, objs: Any, fields: Any, *args: Any, **kwargs: Any) -> int:
        rows = super().bulk_update(objs, fields, *args, **kwargs)
        if rows:
            ConfigVersion.bump(self.db)
        return rows

    def enabled_for_host(self, host: str) -> WatchPathQuerySet:
        """Return the enabled rows a daemon on ``host`` must watch."""
        return self.filter(enabled=True).filter(models.Q(host="") | models.Q(host=host))


class WatchPath(models.Model):
    """A directory watched by the daemon, edited in the admin."""

    path = models.CharField(
        _("path"),
        max_length=4096,
        help_text=_("Absolute path of the directory (or file) to watch."),
    )
    mask = models.PositiveIntegerField(
        _("events"),
        default=ALL_EVENTS,
        help_text=_("The inotify events to report, as an integer of pyinotify bits."),
    )
    processor = models.CharField(
        _("processor"),
        max_length=255,
        default="inotifier.event_processors.AllEventsSignaler",
        help_text=_("Dotted path of the pyinotify ProcessEvent class that handles the events."),
    )
    enabled = models.BooleanField(
        _("enabled"), default=True, help_text=_("Disabled watches are not watched.")
    )
    recursive = models.BooleanField(
        _("recursive"), default=False, help_text=_("Also watch every subdirectory.")
    )
    auto_add = models.BooleanField(
        _("auto add"),
        default=False,
        help_text=_("Watch subdirectories created after the watch was set up."),
    )
    exclude = models.TextField(
        _("exclude"),
        blank=True,
        help_text=_(
            "Glob patterns, one per line, of paths not to watch or report "
            "(a pattern without '/' matches the last part of the path). "
            "An excluded directory costs no kernel watch."
        ),
    )
    host = models.CharField(
        _("host"),
        max_length=255,
        blank=True,
        db_index=True,
        help_text=_("Only the daemon on this host watches it; blank means every daemon."),
    )
    event_log = models.BooleanField(
        _("log events"),
        default=True,
        help_text=_("Record this watch's events in the event log (when INOTIFIER_EVENT_LOG is on)."),
    )
    # Nullable: a row inserted with raw SQL that does not name the column (written before
    # it existed) is NULL, read as False; Django 4.2 has no database default to give it.
    exclusive = models.BooleanField(
        _("one daemon at a time"),
        null=True,
        default=False,
        help_text=_(
            "Of the daemons that would watch this path, only one does at a time (the holder of its "
            "lease); another takes over when it stops or is lost (within INOTIFIER_LEASE_TIMEOUT)."
        ),
    )
    # Nullable for the reason ``exclusive`` is: NULL reads as the default.
    settle = models.FloatField(
        _("settle (seconds)"),
        null=True,
        blank=True,
        default=0.0,
        help_text=_(
            "Hold the events of a path until it has been quiet this long, then deliver them "
            "collapsed, one per event type (0: deliver at once). A file written in many chunks "
            "gives one IN_CLOSE_WRITE."
        ),
    )
    settle_max = models.FloatField(
        _("settle at most (seconds)"),
        null=True,
        blank=True,
        help_text=_(
            "A path that never stops changing is delivered after this long anyway (blank: 10 x settle)."
        ),
    )
    catch_up = models.CharField(  # noqa: DJ001 (NULL from raw inserts reads as "", off)
        _("catch up"),
        max_length=8,
        null=True,
        blank=True,
        default="",
        choices=[
            ("", _("no: only what happens while watched")),
            ("changed", _("changed: files created or modified since last watched")),
            ("all", _("all: every file present (a spool directory)")),
        ],
        help_text=_(
            "What the watch delivers at each start (daemon start, re-enabled, directory back, "
            "queue overflow), as IN_CREATE / IN_CLOSE_WRITE events with event.synthetic set."
        ),
    )
    description = models.TextField(_("description"), blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    objects = WatchPathQuerySet.as_manager()

    class Meta:
        verbose_name = _("watch path")
        verbose_name_plural = _("watch paths")
        ordering = ("path", "pk")

    def __str__(self) -> str:
        # Shown by the admin (titles, breadcrumbs, messages): control characters made visible.
        return printable(self.path)

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        ConfigVersion.bump(self._state.db)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        using = kwargs.get("using") or self._state.db
        result = super().delete(*args, **kwargs)
        ConfigVersion.bump(using)
        return result

    @property
    def events_display(self) -> str:
        """Return the mask as event names."""
        return describe_mask(int(self.mask or 0))

    @property
    def exclude_patterns(self) -> tuple[str, ...]:
        """Return the exclude patterns, one per line of ``exclude``."""
        return parse_excludes(self.exclude)

    def is_for_this_host(self) -> bool:
        """Return True when the daemon of this host watches this row."""
        return not self.host or self.host == app_settings.hostname

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}

        def check(field: str, func: Any, *args: Any) -> Any:
            try:
                return func(*args)
            except SpecError as exc:
                errors.setdefault(field, []).append(str(exc))
                return None

        path = check("path", validate_path, self.path)
        if path is not None:
            self.path = path
            check("path", validate_allowed_root, path)
            if "path" not in errors and self.enabled and self.is_for_this_host() and not os.path.exists(path):
                errors["path"] = [str(_("This path does not exist on this host."))]
        if self.mask is not None:
            check("mask", validate_mask, int(self.mask))
        if self.processor:
            check("processor", validate_processor_allowed, self.processor)
        settle = check("settle", validate_settle, self.settle or 0, self.settle_max)
        if settle is None and "settle" in errors and "settle_max" in str(errors["settle"]):
            errors["settle_max"] = errors.pop("settle")
        check("catch_up", validate_catch_up, self.catch_up)
        if errors:
            raise ValidationError(errors)


def heartbeat_limit() -> float:
    """Return the seconds after which a daemon that wrote no heartbeat counts as not alive.

    Three poll intervals, at least 30 s: the daemon writes its heartbeat every 10 s
    when nothing changes, and at every poll when something does.
    """
    return max(30.0, 3 * float(app_settings.INOTIFIER_POLL_INTERVAL))


class DaemonStatusQuerySet(models.QuerySet["DaemonStatus"]):
    """Daemon status rows, with the question every reader asks: which daemons are alive?"""

    def alive(self) -> DaemonStatusQuerySet:
        """Return the daemons that say they run and wrote a heartbeat recently."""
        from django.utils import timezone

        cutoff = timezone.now() - timedelta(seconds=heartbeat_limit())
        return self.filter(running=True, heartbeat__gte=cutoff)

    def alive_hosts(self) -> set[str]:
        """Return the host names of the daemons that are alive."""
        return set(self.alive().values_list("host", flat=True))


class DaemonStatus(models.Model):
    """What the daemon of one host reports about itself; written by the daemon only."""

    host = models.CharField(_("host"), max_length=255, unique=True)
    pid = models.IntegerField(_("pid"), null=True, blank=True)
    running = models.BooleanField(_("running"), default=False)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    heartbeat = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    version_applied = models.BigIntegerField(_("config version applied"), default=0)
    kernel_watches = models.IntegerField(_("kernel watches"), default=0)
    kernel_watch_limit = models.IntegerField(
        _("kernel watch limit"),
        null=True,
        blank=True,
        help_text=_("The inotify watch limit in force for the daemon (unknown: empty)."),
    )
    kernel_watch_limit_name = models.CharField(
        _("kernel watch limit sysctl"),
        max_length=64,
        blank=True,
        help_text=_("The sysctl that sets it: fs.inotify.max_user_watches, or user.max_inotify_watches."),
    )
    events = models.BigIntegerField(_("events"), default=0)
    errors = models.BigIntegerField(_("processor errors"), default=0)
    overflows = models.IntegerField(_("queue overflows"), default=0)
    queue_peak = models.IntegerField(_("queue peak"), default=0)
    log_dropped = models.BigIntegerField(_("event log rows dropped"), default=0)
    progress = models.CharField(_("progress"), max_length=255, blank=True)
    message = models.TextField(_("message"), blank=True)

    objects = DaemonStatusQuerySet.as_manager()

    class Meta:
        verbose_name = _("daemon status")
        verbose_name_plural = _("daemon status")
        ordering = ("host",)

    def __str__(self) -> str:
        return f"{printable(self.host, backslash=False)} (pid {self.pid})"

    def is_alive(self) -> bool:
        """Return True when the daemon says it runs and its heartbeat is recent (``heartbeat_limit``)."""
        from django.utils import timezone

        if not self.running or self.heartbeat is None:
            return False
        return (timezone.now() - self.heartbeat).total_seconds() < heartbeat_limit()

    def near_watch_limit(self) -> bool:
        """Return True when its kernel watches are at 90 % of the limit or more."""
        return near_watch_limit(self.kernel_watches, self.kernel_watch_limit)

    def watch_limit_share(self) -> float | None:
        """Return its kernel watches as a share of the limit (None: the limit is unknown)."""
        if not self.kernel_watch_limit:
            return None
        return self.kernel_watches / self.kernel_watch_limit


class WatchState(models.Model):
    """The state of one watch in the daemon of one host; written by the daemon only."""

    # Kept for code written against the first release; ``inotifier.states.State`` is the vocabulary.
    ACTIVE = State.ACTIVE.value
    MISSING = State.MISSING.value
    ERROR = State.ERROR.value
    STATE_CHOICES = State.choices

    host = models.CharField(_("host"), max_length=255)
    key = models.CharField(_("key"), max_length=64)
    # No database constraint: the daemon may write the state of a row deleted a
    # moment ago; the ORM still cascades when a WatchPath is deleted.
    watch = models.ForeignKey(
        WatchPath,
        verbose_name=_("watch"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="states",
        db_constraint=False,
    )
    source = models.CharField(_("source"), max_length=16, default="admin")
    path = models.CharField(_("path"), max_length=4096)
    mask = models.PositiveIntegerField(_("events"), default=0)
    processor = models.CharField(_("processor"), max_length=255, blank=True)
    state = models.CharField(_("state"), max_length=16, choices=State.choices)
    message = models.TextField(_("message"), blank=True)
    kernel_watches = models.IntegerField(_("kernel watches"), default=0)
    events = models.BigIntegerField(_("events"), default=0)
    errors = models.BigIntegerField(_("processor errors"), default=0)
    last_event = models.DateTimeField(_("last event"), null=True, blank=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("watch state")
        verbose_name_plural = _("watch states")
        ordering = ("host", "path")
        constraints = [models.UniqueConstraint(fields=["host", "key"], name="inotifier_watchstate_host_key")]

    def __str__(self) -> str:
        return f"{printable(self.path)} on {printable(self.host, backslash=False)}: {self.state}"


class Watermark(models.Model):
    """How far one host's daemon has delivered one watch: what ``catch_up="changed"`` starts from.

    Written by the daemon only (with the heartbeat and at a clean stop), never
    past an event not yet handed on; a file changed at or after ``mark`` is
    delivered again at the watch's next start.
    """

    host = models.CharField(_("host"), max_length=255)
    key = models.CharField(_("key"), max_length=300, help_text=_("The watch's identity on that host."))
    path = models.CharField(_("path"), max_length=4096)
    mark = models.DateTimeField(_("delivered up to"))
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("catch-up watermark")
        verbose_name_plural = _("catch-up watermarks")
        ordering = ("host", "path")
        constraints = [models.UniqueConstraint(fields=["host", "key"], name="inotifier_watermark_host_key")]

    def __str__(self) -> str:
        host = printable(self.host, backslash=False)
        return f"{printable(self.path)} on {host}: {self.mark:%Y-%m-%d %H:%M:%S}"


class EventLogQuerySet(BatchDeleteQuerySet["EventLog"]):
    """Event log rows: deleted in short statements, pruned to the retention settings."""

    oldest_first = ("timestamp", "id")

    def prune(
        self,
        max_age: float | None = None,
        max_rows: int | None = None,
        batch: int = DELETE_BATCH,
        deadline: float | None = None,
    ) -> tuple[int, bool]:
        """Delete rows older than ``max_age`` seconds, then beyond the newest ``max_rows``.

        None means the setting (INOTIFIER_EVENT_LOG_MAX_AGE / _MAX_ROWS), 0 no
        limit. Return (deleted, done): ``done`` is False when ``deadline``
        (``time.monotonic()``) passed first (call again to go on). What
        ``inotifier_prune_events`` runs, and the daemon a little at a time.
        """
        from django.utils import timezone

        if max_age is None:
            max_age = float(app_settings.INOTIFIER_EVENT_LOG_MAX_AGE or 0)
        if max_rows is None:
            max_rows = int(app_settings.INOTIFIER_EVENT_LOG_MAX_ROWS or 0)
        deleted = 0
        if max_age and max_age > 0:
            cutoff = timezone.now() - timedelta(seconds=max_age)
            n, done = self.filter(timestamp__lt=cutoff).delete_in_batches(batch, deadline)
            deleted += n
            if not done:
                return deleted, False
        if max_rows and max_rows > 0:
            # The newest row beyond the first max_rows: it and everything older goes.
            first_gone = list(
                self.order_by("-timestamp", "-id").values_list("timestamp", "id")[max_rows : max_rows + 1]
            )
            if first_gone:
                ts, pk = first_gone[0]
                older = self.filter(timestamp__lte=ts).exclude(timestamp=ts, id__gt=pk)
                n, done = older.delete_in_batches(batch, deadline)
                deleted += n
                if not done:
                    return deleted, False
        return deleted, True


class EventLog(models.Model):
    """One inotify event recorded by the daemon (when INOTIFIER_EVENT_LOG is on)."""

    # Indexed by Meta.indexes (newest first), which also serves range filters.
    timestamp = models.DateTimeField(_("time"))
    pathname = models.TextField(_("path"))
    src_pathname = models.TextField(_("moved from"), blank=True)
    escaped = models.BooleanField(
        _("escaped"),
        default=False,
        help_text=_(
            "The file name was not valid UTF-8: backslashes are doubled and each "
            "undecodable byte is written as \\xNN (see EventLog.raw_pathname)."
        ),
    )
    mask = models.PositiveIntegerField(_("mask"))
    maskname = models.CharField(_("event"), max_length=64)
    is_dir = models.BooleanField(_("directory"), default=False)
    watch = models.ForeignKey(
        WatchPath,
        verbose_name=_("watch"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        db_constraint=False,
    )
    watch_label = models.CharField(_("watch label"), max_length=4096, blank=True)
    host = models.CharField(_("host"), max_length=255)

    objects = EventLogQuerySet.as_manager()

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ("-timestamp", "-id")
        # Plain B-tree indexes (no PostgreSQL _like twins: filters are equality),
        # each ending in the time so a filtered list is read newest first.
        indexes = [
            models.Index(fields=["-timestamp", "-id"], name="inotifier_eventlog_recent"),
            models.Index(fields=["maskname", "-timestamp"], name="inotifier_eventlog_event"),
            models.Index(fields=["host", "-timestamp"], name="inotifier_eventlog_host"),
        ]

    def __str__(self) -> str:
        # An escaped name has its backslashes doubled already.
        return f"{printable(self.maskname)} {printable(self.pathname, backslash=not self.escaped)}"

    def raw_pathname(self) -> bytes:
        """Return the path as the bytes the file system holds (undoing the escaping)."""
        return unescape_path(self.pathname) if self.escaped else os.fsencode(self.pathname)


# Imported last: its model names WatchPath by string, and it is one of this app's models.
from .leases import WatchLease  # noqa: E402, F401

# The outbox's model lives in its own module; imported here so that Django registers it.
from .outbox import OutboxEntry  # noqa: E402, F401
