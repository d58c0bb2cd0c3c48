"""WatchLease: which daemon holds an exclusive watch, since when and until when (the database's clock)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.db import models, transaction
from django.db.models import Case, F, Min, Q, When
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from .escaping import printable

#: ``expires`` of a lease nobody holds: long past, so anyone may take it.
FREE = datetime(1970, 1, 1, tzinfo=UTC)


class WatchLeaseQuerySet(models.QuerySet["WatchLease"]):
    """The leases, taken, renewed and released with conditional writes the database decides."""

    def acquire(
        self, ids: Iterable[int], holder: str, token: str, seconds: float
    ) -> tuple[set[int], float | None]:
        """Renew the leases ``token`` holds among ``ids`` and take those free or expired.

        Return the ids ``token`` holds now, and the seconds until the first
        lease held by another daemon expires (None: none is). Each lease is one
        conditional UPDATE against the database's clock (``Now()``): of two
        daemons racing for an expired lease, the row lock lets one win, and
        the other's condition no longer holds when it runs. A first holder's
        row is inserted free, the unique watch deciding a race between inserts.
        """
        wanted = sorted(set(ids))
        if not wanted:
            return set(), None
        until = Now() + timedelta(seconds=seconds)
        with transaction.atomic(using=self.db):
            rows = self.filter(watch_id__in=wanted)
            missing = set(wanted) - set(rows.values_list("watch_id", flat=True))
            if missing:
                WatchLease.objects.using(self.db).bulk_create(
                    [WatchLease(watch_id=i, holder="", token="", since=FREE, expires=FREE) for i in missing],
                    ignore_conflicts=True,
                )
            rows.filter(Q(token=token) | Q(expires__lt=Now())).update(
                holder=holder,
                token=token,
                since=Case(When(token=token, then=F("since")), default=Now()),
                expires=until,
            )
            held = set(rows.filter(token=token).values_list("watch_id", flat=True))
            others = rows.exclude(token=token).aggregate(first=Min("expires"), now=Min(Now()))
        first, now = others["first"], others["now"]
        wait = max(0.0, (first - now).total_seconds()) if first is not None and now is not None else None
        return held, wait

    def release(self, token: str, ids: Iterable[int] | None = None) -> int:
        """Free the leases ``token`` holds (among ``ids``, or all); return how many were freed."""
        rows = self.filter(token=token)
        if ids is not None:
            rows = rows.filter(watch_id__in=list(ids))
        return rows.update(holder="", token="", since=FREE, expires=FREE)

    def held(self) -> WatchLeaseQuerySet:
        """Return the leases held now (by the database's clock)."""
        return self.exclude(token="").filter(expires__gte=Now())


class WatchLease(models.Model):
    """Who holds an exclusive WatchPath: written by the daemons only, read by the admin."""

    # No database constraint: a daemon may take the lease of a row deleted a moment
    # ago; the ORM still cascades when a WatchPath is deleted.
    watch = models.OneToOneField(
        "inotifier.WatchPath",
        verbose_name=_("watch"),
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="lease",
        db_constraint=False,
    )
    holder = models.CharField(
        _("holder"), max_length=255, blank=True, help_text=_("The host name of the daemon holding it.")
    )
    #: Which process holds it: two daemons given the same host name by mistake are still two.
    token = models.CharField(_("token"), max_length=32, blank=True)
    since = models.DateTimeField(_("held since"))
    expires = models.DateTimeField(_("expires"))

    objects = WatchLeaseQuerySet.as_manager()

    class Meta:
        verbose_name = _("watch lease")
        verbose_name_plural = _("watch leases")

    def __str__(self) -> str:
        who = printable(self.holder, backslash=False) if self.holder else "nobody"
        return f"watch {self.watch_id}: {who}"
