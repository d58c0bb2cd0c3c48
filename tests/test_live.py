"""Watches edited in the database reach the running daemon (a real subprocess) live."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inotifier.masks import BITS
from inotifier.models import ConfigVersion, DaemonStatus, WatchPath, WatchState

from .conftest import DaemonProcess, wait_for

pytestmark = pytest.mark.daemon

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
IN_CREATE = BITS["IN_CREATE"]
IN_DELETE = BITS["IN_DELETE"]


def probe(daemon: DaemonProcess, directory: Path, name: str, timeout: float = 10.0) -> float:
    """Create ``directory/name`` and return how long until a receiver saw it."""
    started = time.monotonic()
    (directory / name).touch()
    daemon.record.wait_path(directory / name, timeout=timeout)
    return time.monotonic() - started


def keep_probing(daemon: DaemonProcess, directory: Path, prefix: str, timeout: float) -> float:
    """Touch new files until one is seen; return the seconds it took."""
    started = time.monotonic()
    i = 0

    def seen() -> bool:
        nonlocal i
        i += 1
        (directory / f"{prefix}{i}").touch()
        return any(p.startswith(str(directory / prefix)) for p in daemon.record.paths())

    wait_for(seen, timeout, interval=0.05)
    return time.monotonic() - started


def wait_applied(timeout: float = 5.0) -> None:
    """Wait until the daemon reports it applied the current config version."""
    version = ConfigVersion.current()
    wait_for(lambda: DaemonStatus.objects.filter(version_applied__gte=version).exists(), timeout)


def state_of(row: WatchPath) -> WatchState | None:
    return WatchState.objects.filter(watch=row).first()


def test_row_added_through_the_orm_is_live_within_the_poll_interval(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    daemon.start()
    row = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)
    # Poll interval is 0.5 s in these tests: live well within 0.5 s + reconcile time.
    took = keep_probing(daemon, watch_dir, "orm", timeout=5)
    assert took < 2.0
    wait_for(lambda: (s := state_of(row)) is not None and s.state == "active", 5)


def test_reload_makes_a_new_row_live_within_a_second(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.env_extra["INOTIFIER_POLL_INTERVAL"] = "30"  # only the reload can make it fast
    daemon.start()
    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)
    started = time.monotonic()
    result = daemon.manage("inotifier_reload")
    assert result.returncode == 0, result.stderr
    assert "Configuration version bumped" in result.stdout
    assert "SIGHUP sent to the local daemon" in result.stdout
    keep_probing(daemon, watch_dir, "reload", timeout=5)
    assert time.monotonic() - started < 1.0 + 1.5  # the command's own start-up included


def test_reload_without_a_daemon_still_bumps(daemon: DaemonProcess) -> None:
    before = ConfigVersion.current()
    result = daemon.manage("inotifier_reload")
    assert result.returncode == 0
    assert "No daemon runs on this host" in result.stdout
    assert ConfigVersion.current() == before + 1


def test_disable_delete_mask_change_and_queryset_update(daemon: DaemonProcess, watch_dir: Path) -> None:
    a, b = watch_dir / "a", watch_dir / "b"
    a.mkdir()
    b.mkdir()
    row_a = WatchPath.objects.create(path=str(a), mask=IN_CREATE, processor=SIGNALER)
    row_b = WatchPath.objects.create(path=str(b), mask=IN_CREATE, processor=SIGNALER)
    daemon.start()
    probe(daemon, a, "a1")
    probe(daemon, b, "b1")
    # Disabled through a queryset update (no model signal): picked up through the counter.
    WatchPath.objects.filter(pk=row_a.pk).update(enabled=False)
    wait_applied()
    assert not WatchState.objects.filter(watch=row_a).exists()
    (a / "a2").touch()
    probe(daemon, b, "b2")  # b is still live, and a's file came first
    assert str(a / "a2") not in daemon.record.paths()
    # A mask change applies: deletions of b are now reported.
    row_b.mask = IN_CREATE | IN_DELETE
    row_b.save()
    wait_for(lambda: (s := state_of(row_b)) is not None and s.mask == IN_CREATE | IN_DELETE, 5)
    (b / "b1").unlink()
    wait_for(lambda: ("IN_DELETE", str(b / "b1"), "IN_DELETE") in daemon.record.events(), 5)
    # Deleted: stops delivering.
    row_b.delete()  # (its WatchState rows cascade at once: wait for the daemon instead)
    wait_applied()
    (b / "b3").touch()
    row_c = WatchPath.objects.create(path=str(a), mask=IN_CREATE, processor=SIGNALER)
    keep_probing(daemon, a, "a3-", timeout=5)
    assert str(b / "b3") not in daemon.record.paths()
    assert state_of(row_c) is not None


def test_row_for_another_host_is_ignored(daemon: DaemonProcess, watch_dir: Path) -> None:
    daemon.env_extra["INOTIFIER_HOSTNAME"] = "here"
    other = watch_dir / "other"
    other.mkdir()
    WatchPath.objects.create(path=str(other), mask=IN_CREATE, processor=SIGNALER, host="there")
    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER, host="here")
    daemon.start()
    (other / "not-mine").touch()
    probe(daemon, watch_dir, "mine")
    time.sleep(0.3)
    assert str(other / "not-mine") not in daemon.record.paths()
    assert list(WatchState.objects.values_list("host", flat=True).distinct()) == ["here"]


def test_bad_rows_are_reported_and_the_others_keep_working(daemon: DaemonProcess, watch_dir: Path) -> None:
    missing = WatchPath.objects.create(path=str(watch_dir / "later"), mask=IN_CREATE, processor=SIGNALER)
    not_allowed = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor="os.system")
    broken = WatchPath.objects.create(
        path=str(watch_dir), mask=IN_CREATE, processor="tests.testapp.receivers.NotAProcessor"
    )
    daemon.env_extra["INOTIFIER_PROCESSORS"] = f"{SIGNALER},tests.testapp.receivers.NotAProcessor"
    good = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)
    daemon.start()
    probe(daemon, watch_dir, "works")
    wait_for(lambda: WatchState.objects.count() == 4, 5)
    states = {s.watch_id: s for s in WatchState.objects.all()}
    assert states[good.pk].state == "active"
    assert states[missing.pk].state == "missing"
    assert states[not_allowed.pk].state == "error"
    assert "not in INOTIFIER_PROCESSORS" in states[not_allowed.pk].message
    assert states[broken.pk].state == "error"
    assert "is not a pyinotify.ProcessEvent subclass" in states[broken.pk].message
    # The missing path appears: watched within the poll interval.
    (watch_dir / "later").mkdir()
    wait_for(lambda: state_of(missing).state == "active", 5)  # type: ignore[union-attr]
    keep_probing(daemon, watch_dir / "later", "inside", timeout=5)


def test_status_shows_daemon_and_watches(daemon: DaemonProcess, watch_dir: Path) -> None:
    row = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=SIGNALER)
    daemon.watch_paths = [[str(watch_dir), "IN_DELETE", SIGNALER]]
    pid = daemon.start()
    probe(daemon, watch_dir, "counted")
    wait_for(lambda: (s := state_of(row)) is not None and s.events >= 1 and s.last_event, 5)
    status = DaemonStatus.objects.get()
    assert status.pid == pid and status.running
    assert status.version_applied == ConfigVersion.current()
    result = daemon.manage("inotifier_status")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(f"pid {pid}" in line and "config version" in line for line in lines)
    table = [line for line in lines if str(watch_dir) in line]
    assert len(table) == 2
    assert any(line.startswith("ACTIVE") and "settings" in line and "IN_DELETE" in line for line in table)
    assert any(line.startswith("ACTIVE") and "admin" in line and "IN_CREATE" in line for line in table)
    daemon.stop()
    result = daemon.manage("inotifier_status")
    assert result.returncode == 3
    assert not DaemonStatus.objects.get().running
