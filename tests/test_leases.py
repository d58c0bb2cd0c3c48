"""Leases of exclusive watches: the conditional writes, and daemons in this process sharing one row."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from inotifier.daemon.exclusive import lease_timeout
from inotifier.daemon.runner import Daemon
from inotifier.masks import BITS
from inotifier.models import ConfigVersion, WatchLease, WatchPath
from tests.testapp.receivers import ListProcessor

from .conftest import pump

LIST = "tests.testapp.receivers.ListProcessor"
IN_CREATE = BITS["IN_CREATE"]


def row(path: Path | str, **kw: Any) -> WatchPath:
    kw.setdefault("exclusive", True)
    return WatchPath.objects.create(path=str(path), mask=IN_CREATE, processor=LIST, **kw)


# -- the queries ------------------------------------------------------------------------------


def test_one_token_holds_a_lease_until_it_expires_or_is_released(transactional_db: Any) -> None:
    a, b = row("/srv/a"), row("/srv/b")
    leases = WatchLease.objects
    held, wait = leases.acquire([a.pk, b.pk], "files-1", "token-1", 1.5)
    assert held == {a.pk, b.pk} and wait is None
    since = WatchLease.objects.get(pk=a.pk).since
    # Another daemon gets nothing while the leases run, and learns when the first one ends.
    held, wait = leases.acquire([a.pk, b.pk], "files-2", "token-2", 1.5)
    assert held == set()
    assert wait is not None and 0 < wait <= 1.5
    # The holder renews: same "since", a later expiry.
    held, _ = leases.acquire([a.pk], "files-1", "token-1", 1.5)
    assert held == {a.pk}
    assert WatchLease.objects.get(pk=a.pk).since == since
    # A namesake process (same host name, another token) is another holder.
    assert leases.acquire([a.pk], "files-1", "token-3", 1.5)[0] == set()
    # Released: free for the next one at once; expired: free too.
    assert leases.release("token-1", [b.pk]) == 1
    assert leases.acquire([b.pk], "files-2", "token-2", 1.5)[0] == {b.pk}
    time.sleep(1.6)  # a's lease (renewed, then left) ends by the database's clock
    assert leases.acquire([a.pk], "files-2", "token-2", 1.5)[0] == {a.pk}
    lease = WatchLease.objects.get(pk=a.pk)
    assert (lease.holder, lease.token) == ("files-2", "token-2")
    assert lease.since > since
    assert set(WatchLease.objects.held().values_list("pk", flat=True)) == {a.pk}  # b's ran out too
    # The lease goes with its watch.
    a.delete()
    assert not WatchLease.objects.filter(pk=a.pk).exists()


@pytest.mark.parametrize("value", [0, 0.5, -1, "30", None, True, float("inf")])
def test_a_bad_lease_timeout_is_named(value: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="INOTIFIER_LEASE_TIMEOUT must be a number of seconds"):
        lease_timeout(value)


def test_a_bad_lease_timeout_stops_the_daemon_at_start(transactional_db: Any) -> None:
    with (
        override_settings(INOTIFIER_LEASE_TIMEOUT="soon"),
        pytest.raises(ImproperlyConfigured, match="'soon'"),
    ):
        Daemon(install_signal_handlers=False, hostname="files-1")


# -- daemons of two hosts in this process, on the test database ---------------------------------


@pytest.fixture
def pair(transactional_db: Any, settings: Any) -> Any:
    """Make daemons in this process (real inotify, the test database), closed at the end."""
    settings.INOTIFIER_WATCH_PATHS = []
    settings.INOTIFIER_PROCESSORS = [LIST]
    settings.INOTIFIER_POLL_INTERVAL = 60.0
    ListProcessor.seen.clear()
    made: list[Daemon] = []

    def make(host: str, lease: float = 30.0) -> Daemon:
        with override_settings(INOTIFIER_LEASE_TIMEOUT=lease):
            daemon = Daemon(install_signal_handlers=False, hostname=host)
        made.append(daemon)
        return daemon.start()

    yield make
    for daemon in made:
        daemon.close()


def holds(daemon: Daemon, watch: WatchPath) -> bool:
    return f"row:{watch.pk}" in daemon.watches


def test_of_two_daemons_one_holds_an_exclusive_watch_and_the_other_takes_it_at_a_clean_stop(
    pair: Any, watch_dir: Path
) -> None:
    shared = row(watch_dir)
    plain = row(watch_dir, exclusive=False)
    first, second = pair("files-1"), pair("files-2")
    assert holds(first, shared) and not holds(second, shared)
    assert holds(first, plain) and holds(second, plain)  # a shared watch is everyone's
    version = ConfigVersion.current()
    first.close()
    assert ConfigVersion.current() == version + 1  # released, and announced
    second.reconcile()
    assert holds(second, shared)
    lease = WatchLease.objects.get(pk=shared.pk)
    assert lease.holder == "files-2" and lease.expires > timezone.now()


def test_turning_exclusive_on_and_off_applies_in_place(pair: Any, watch_dir: Path) -> None:
    watch = row(watch_dir, exclusive=False)
    first, second = pair("files-1"), pair("files-2")
    assert holds(first, watch) and holds(second, watch)
    WatchPath.objects.filter(pk=watch.pk).update(exclusive=True)
    first.reconcile()
    second.reconcile()
    assert holds(first, watch) and not holds(second, watch)
    WatchPath.objects.filter(pk=watch.pk).update(exclusive=False)
    first.reconcile()
    assert not WatchLease.objects.held().exists()  # freed once no longer wanted
    second.reconcile()
    assert holds(first, watch) and holds(second, watch)


def test_a_stalled_holder_whose_lease_was_taken_delivers_nothing_more(pair: Any, watch_dir: Path) -> None:
    shared = row(watch_dir)
    first = pair("files-1", lease=1.5)
    second = pair("files-2", lease=1.5)
    assert holds(first, shared) and not holds(second, shared)
    (watch_dir / "before").touch()
    pump(first, lambda: ListProcessor.seen)
    # The first daemon's loop stalls (no tick) past its lease; the second takes over.
    pump(second, lambda: holds(second, shared), timeout=10)
    (watch_dir / "during").touch()
    pump(second, lambda: any(e.name == "during" for e in ListProcessor.seen))
    ListProcessor.seen.clear()
    # The first wakes up with "during" queued: its lease is gone, so the watch goes, undelivered.
    first.tick(timeout=0.2)
    first.tick(timeout=0.2)
    assert not holds(first, shared)
    assert ListProcessor.seen == []


def test_the_admin_shows_who_holds_an_exclusive_watch_and_since_when(
    admin_client: Client, watch_dir: Path
) -> None:
    shared = row(watch_dir)
    free = row(watch_dir / "nobody")
    plain = row(watch_dir / "plain", exclusive=False)
    now = timezone.now()
    WatchLease.objects.create(
        watch=shared,
        holder="<b>files-1</b>\x1b[2J",
        token="t",
        since=now,
        expires=now + timezone.timedelta(60),
    )
    page = admin_client.get(reverse("admin:inotifier_watchpath_changelist")).content.decode()
    assert "&lt;b&gt;files-1&lt;/b&gt;\\x1b[2J since " in page
    assert "<b>files-1</b>" not in page and "\x1b" not in page
    assert page.count('class="inotifier-lease-free"') == 1  # the exclusive row nobody holds
    change = admin_client.get(reverse("admin:inotifier_watchpath_change", args=[shared.pk])).content.decode()
    assert 'name="exclusive"' in change and "since" in change
    assert free.pk and plain.pk
