"""The reconcile diff, and the daemon applying it in place (driven in-process with tick())."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from inotifier.daemon.reconcile import Plan, UpdateKind, diff, update_kind
from inotifier.daemon.runner import Daemon
from inotifier.masks import BITS
from inotifier.models import WatchPath
from inotifier.specs import WatchSpec
from tests.testapp.receivers import ListProcessor

from .conftest import pump

LIST = "tests.testapp.receivers.ListProcessor"
IN_CREATE = BITS["IN_CREATE"]
IN_DELETE = BITS["IN_DELETE"]


def spec(key: str, path: str = "/a", **kw: Any) -> WatchSpec:
    kw.setdefault("mask", IN_CREATE)
    kw.setdefault("processor", LIST)
    return WatchSpec(key=key, path=path, **kw)


class TestDiff:
    def test_add_remove_update_unchanged(self) -> None:
        actual = {"row:1": spec("row:1"), "row:2": spec("row:2", "/b"), "row:3": spec("row:3", "/c")}
        desired = {
            "row:1": spec("row:1"),
            "row:2": spec("row:2", "/b", mask=IN_CREATE | IN_DELETE),
            "row:4": spec("row:4", "/d"),
        }
        plan = diff(desired, actual)
        assert [s.key for s in plan.add] == ["row:4"]
        assert plan.remove == ["row:3"]
        assert [s.key for s in plan.update] == ["row:2"]
        assert plan.unchanged == ["row:1"]
        assert plan.touched == 3

    def test_nothing_changed(self) -> None:
        actual = {f"row:{i}": spec(f"row:{i}", f"/p{i}") for i in range(100)}
        plan = diff(dict(actual), actual)
        assert plan.touched == 0
        assert len(plan.unchanged) == 100

    @pytest.mark.parametrize(
        ("change", "kind"),
        [
            ({"mask": IN_DELETE}, UpdateKind.REMASK),
            ({"processor": "inotifier.event_processors.CreateSignaler"}, UpdateKind.SWAP),
            ({"event_log": False}, UpdateKind.SWAP),
            ({"recursive": True}, UpdateKind.REBUILD),
            ({"auto_add": True}, UpdateKind.REBUILD),
            ({"excludes": ("*.tmp",)}, UpdateKind.REBUILD),
            ({"path": "/other"}, UpdateKind.REBUILD),
            ({"error": "broken"}, UpdateKind.REBUILD),
        ],
    )
    def test_update_kind(self, change: dict[str, Any], kind: UpdateKind) -> None:
        old = spec("row:1")
        new = WatchSpec(**{**old.__dict__, **change})
        assert diff({"row:1": new}, {"row:1": old}).update == [new]
        assert update_kind(old, new) == kind

    def test_empty(self) -> None:
        assert diff({}, {}) == Plan()


@pytest.fixture
def live(in_process: Any, settings: Any) -> Iterator[Daemon]:
    """A Daemon in this process on real inotify and the test database, driven by tick()."""
    ListProcessor.seen.clear()
    settings.INOTIFIER_WATCH_PATHS = []
    settings.INOTIFIER_PROCESSORS = [LIST]
    yield in_process(use_database=True)


def seen_paths() -> list[str]:
    return [e.pathname for e in ListProcessor.seen]


def test_rows_become_watches_and_unchanged_ones_are_untouched(live: Daemon, watch_dir: Path) -> None:
    a, b = watch_dir / "a", watch_dir / "b"
    a.mkdir()
    b.mkdir()
    row_a = WatchPath.objects.create(path=str(a), mask=IN_CREATE, processor=LIST)
    plan = live.reconcile()
    assert [s.key for s in plan.add] == [f"row:{row_a.pk}"]
    watch_a = live.watches[f"row:{row_a.pk}"]
    wd_a = watch_a.paths[str(a)]
    row_b = WatchPath.objects.create(path=str(b), mask=IN_CREATE, processor=LIST)
    plan = live.reconcile()
    assert plan.touched == 1
    assert plan.unchanged == [f"row:{row_a.pk}"]
    assert live.watches[f"row:{row_a.pk}"] is watch_a  # same object, same kernel watch
    assert watch_a.paths[str(a)] == wd_a
    (a / "1").touch()
    (b / "2").touch()
    pump(live, lambda: {str(a / "1"), str(b / "2")} <= set(seen_paths()))
    key_b = f"row:{row_b.pk}"
    row_b.delete()
    plan = live.reconcile()
    assert plan.remove == [key_b]
    ListProcessor.seen.clear()
    (b / "3").touch()
    (a / "4").touch()
    pump(live, lambda: str(a / "4") in seen_paths())
    assert str(b / "3") not in seen_paths()


def test_mask_change_is_applied_in_place(live: Daemon, watch_dir: Path) -> None:
    row = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST)
    live.reconcile()
    watch = live.watches[f"row:{row.pk}"]
    wd = watch.paths[str(watch_dir)]
    WatchPath.objects.filter(pk=row.pk).update(mask=IN_CREATE | IN_DELETE)
    plan = live.reconcile()
    assert [s.key for s in plan.update] == [f"row:{row.pk}"]
    assert live.watches[f"row:{row.pk}"] is watch
    assert watch.paths[str(watch_dir)] == wd
    (watch_dir / "x").touch()
    (watch_dir / "x").unlink()
    pump(live, lambda: [e.maskname for e in ListProcessor.seen] == ["IN_CREATE", "IN_DELETE"])


def test_recursive_and_exclude(live: Daemon, watch_dir: Path) -> None:
    for sub in ("keep/deep", "skip/deep", "node_modules/x"):
        (watch_dir / sub).mkdir(parents=True)
    row = WatchPath.objects.create(
        path=str(watch_dir),
        mask=IN_CREATE,
        processor=LIST,
        recursive=True,
        auto_add=True,
        exclude="skip\n*/node_modules",
    )
    live.reconcile()
    watch = live.watches[f"row:{row.pk}"]
    # Excluded subtrees cost no kernel watch.
    assert sorted(watch.paths) == sorted(
        [str(watch_dir), str(watch_dir / "keep"), str(watch_dir / "keep/deep")]
    )
    (watch_dir / "keep/deep/f").touch()
    (watch_dir / "skip/deep/g").touch()
    (watch_dir / "skip/h").touch()
    pump(live, lambda: str(watch_dir / "keep/deep/f") in seen_paths())
    assert not [p for p in seen_paths() if "/skip" in p]
    # Dropping the exclude rebuilds the watch and picks up the subtrees.
    WatchPath.objects.filter(pk=row.pk).update(exclude="")
    live.reconcile()
    watch = live.watches[f"row:{row.pk}"]
    assert str(watch_dir / "skip/deep") in watch.paths
    assert str(watch_dir / "node_modules/x") in watch.paths


def test_recursive_auto_add_new_tree(live: Daemon, watch_dir: Path) -> None:
    row = WatchPath.objects.create(
        path=str(watch_dir), mask=IN_CREATE, processor=LIST, recursive=True, auto_add=True
    )
    live.reconcile()
    deep = watch_dir / "n1" / "n2" / "n3"
    deep.mkdir(parents=True)
    (deep / "file").write_text("x")
    pump(live, lambda: str(deep / "file") in seen_paths())
    watch = live.watches[f"row:{row.pk}"]
    assert str(deep) in watch.paths
    (deep / "later").touch()
    pump(live, lambda: str(deep / "later") in seen_paths())


def test_disabled_and_other_host_rows_are_not_watched(live: Daemon, watch_dir: Path) -> None:
    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST, enabled=False)
    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST, host="elsewhere")
    mine = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST, host="testhost")
    live.reconcile()
    assert list(live.watches) == [f"row:{mine.pk}"]


def test_two_watches_on_one_directory_share_the_kernel_watch(live: Daemon, watch_dir: Path) -> None:
    one = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST)
    two = WatchPath.objects.create(path=str(watch_dir), mask=IN_DELETE, processor=LIST)
    live.reconcile()
    assert len(live.table.nodes) == 1
    (watch_dir / "f").touch()
    (watch_dir / "f").unlink()
    pump(live, lambda: len(ListProcessor.seen) == 2)
    assert sorted(e.maskname for e in ListProcessor.seen) == ["IN_CREATE", "IN_DELETE"]
    two.delete()
    live.reconcile()
    assert len(live.table.nodes) == 1  # still watched for the other row
    ListProcessor.seen.clear()
    (watch_dir / "g").touch()
    (watch_dir / "g").unlink()
    pump(live, lambda: [e.maskname for e in ListProcessor.seen] == ["IN_CREATE"])
    one.delete()
    live.reconcile()
    assert len(live.table.nodes) == 0


def test_bad_rows_are_reported_and_others_keep_working(live: Daemon, watch_dir: Path) -> None:
    good = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST)
    missing = WatchPath.objects.create(path=str(watch_dir / "nope"), mask=IN_CREATE, processor=LIST)
    evil = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor="os.system")
    live.reconcile()
    states = {k: (w.state, w.message) for k, w in live.watches.items()}
    assert states[f"row:{good.pk}"] == ("active", "")
    assert states[f"row:{missing.pk}"][0] == "missing"
    assert states[f"row:{evil.pk}"][0] == "error"
    assert "not in INOTIFIER_PROCESSORS" in states[f"row:{evil.pk}"][1]
    assert live.watches[f"row:{evil.pk}"].processor is None  # never imported
    (watch_dir / "ok").touch()
    pump(live, lambda: str(watch_dir / "ok") in seen_paths())
    (watch_dir / "nope").mkdir()
    live.watchset.check_missing()
    assert live.watches[f"row:{missing.pk}"].state == "active"


def test_unchanged_watch_loses_nothing_through_100_reconciles(live: Daemon, watch_dir: Path) -> None:
    steady = WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST)
    other = watch_dir / "other"
    other.mkdir()
    live.reconcile()
    expected = []
    for i in range(100):
        # Churn another watch on every round while files keep arriving in the steady one.
        if i % 2:
            WatchPath.objects.create(path=str(other), mask=IN_CREATE, processor=LIST)
        else:
            WatchPath.objects.filter(path=str(other)).delete()
        name = watch_dir / f"f{i:03d}"
        name.touch()
        expected.append(str(name))
        plan = live.reconcile()
        assert f"row:{steady.pk}" in plan.unchanged
        live.tick(timeout=0)
    pump(live, lambda: set(expected) <= set(seen_paths()))
    mine = [p for p in seen_paths() if p in set(expected)]
    assert mine == expected  # every one, in order, none twice


def test_settings_watches_sit_beside_rows(live: Daemon, watch_dir: Path) -> None:
    with override_settings(INOTIFIER_WATCH_PATHS=[(str(watch_dir), "IN_CREATE", LIST)]):
        row = WatchPath.objects.create(path=str(watch_dir), mask=IN_DELETE, processor=LIST)
        live.reconcile()
        assert sorted(live.watches) == sorted(["settings:0", f"row:{row.pk}"])
        assert live.watches["settings:0"].spec.source == "settings"


def test_status_rows_do_not_bump_the_version(live: Daemon, watch_dir: Path) -> None:
    from inotifier.models import ConfigVersion, DaemonStatus, WatchState

    WatchPath.objects.create(path=str(watch_dir), mask=IN_CREATE, processor=LIST)
    live.reconcile()
    before = ConfigVersion.current()
    live.status.write(force=True)
    assert ConfigVersion.current() == before
    status = DaemonStatus.objects.get(host="testhost")
    assert status.version_applied == before
    assert status.pid == os.getpid()
    state = WatchState.objects.get(host="testhost")
    assert (state.state, state.kernel_watches) == ("active", 1)
