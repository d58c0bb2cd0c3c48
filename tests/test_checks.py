"""System checks and the validation shared by checks, the start command and the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from inotifier.checks import check_admin_settings, check_watch_paths
from inotifier.masks import ALL_EVENTS, BITS, MaskError, describe_mask, parse_mask

SIGNALER = "inotifier.event_processors.AllEventsSignaler"


def messages(**settings: Any) -> list[tuple[str, str]]:
    with override_settings(**settings):
        return [(m.id, m.msg) for m in check_watch_paths()]


def test_valid_settings_have_no_messages(tmp_path: Path) -> None:
    assert messages(INOTIFIER_WATCH_PATHS=[(str(tmp_path), "IN_CREATE", SIGNALER)]) == []
    assert messages(INOTIFIER_WATCH_PATHS=[(str(tmp_path), 256, SIGNALER, {"recursive": True})]) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/tmp", "INOTIFIER_WATCH_PATHS must be a list or tuple of (path, mask, processor) tuples, not str"),
        (42, "INOTIFIER_WATCH_PATHS must be a list or tuple of (path, mask, processor) tuples, not int"),
        (
            {"/tmp": 1},
            "INOTIFIER_WATCH_PATHS must be a list or tuple of (path, mask, processor) tuples, not dict",
        ),
        (["/tmp"], "INOTIFIER_WATCH_PATHS[0] is a str; expected a (path, mask, processor) 3-tuple: '/tmp'"),
        (
            [("/tmp", 256)],
            "INOTIFIER_WATCH_PATHS[0] has 2 items; expected a (path, mask, processor) 3-tuple: ('/tmp', 256)",
        ),
        (
            [("/tmp", 256, SIGNALER, {}, 1)],
            "INOTIFIER_WATCH_PATHS[0] has 5 items; expected a (path, mask, processor) 3-tuple: ('/tmp', 256, 'inotifier.event_processors.AllEventsSignaler', {}, 1)",
        ),
        ([(42, 256, SIGNALER)], "INOTIFIER_WATCH_PATHS[0]: path must be a string, not int"),
        ([("tmp/x", 256, SIGNALER)], "INOTIFIER_WATCH_PATHS[0]: path 'tmp/x' is not absolute"),
        ([("/tmp", 0, SIGNALER)], "INOTIFIER_WATCH_PATHS[0]: mask names no event (it is 0)"),
        ([("/tmp", "", SIGNALER)], "INOTIFIER_WATCH_PATHS[0]: mask names no event (it is 0)"),
        (
            [("/tmp", "IN_CREATE|IN_BOGUS", SIGNALER)],
            "INOTIFIER_WATCH_PATHS[0]: unknown event name 'IN_BOGUS'",
        ),
        (
            [("/tmp", 1 << 40, SIGNALER)],
            "INOTIFIER_WATCH_PATHS[0]: mask 0x10000000000 has bits outside the inotify events (0x10000000000)",
        ),
        ([("/tmp", -1, SIGNALER)], "INOTIFIER_WATCH_PATHS[0]: mask -1 is negative"),
        (
            [("/tmp", 1.5, SIGNALER)],
            "INOTIFIER_WATCH_PATHS[0]: mask must be an int or a string of event names, not float",
        ),
        (
            [("/tmp", 256, "no.such.Thing")],
            "INOTIFIER_WATCH_PATHS[0]: processor 'no.such.Thing' cannot be imported: No module named 'no'",
        ),
        (
            [("/tmp", 256, "tests.testapp.receivers.NOT_A_CLASS")],
            "INOTIFIER_WATCH_PATHS[0]: processor 'tests.testapp.receivers.NOT_A_CLASS' is not a class",
        ),
        (
            [("/tmp", 256, "tests.testapp.receivers.NotAProcessor")],
            "INOTIFIER_WATCH_PATHS[0]: processor 'tests.testapp.receivers.NotAProcessor' is not a pyinotify.ProcessEvent subclass",
        ),
        ([("/tmp", 256, 42)], "INOTIFIER_WATCH_PATHS[0]: processor must be a dotted path string, not 42"),
        (
            [("/tmp", 256, SIGNALER, {"recursve": True})],
            "INOTIFIER_WATCH_PATHS[0]: unknown option(s) 'recursve'; known: recursive, auto_add, exclude, event_log, settle, settle_max, catch_up",
        ),
        (
            [("/tmp", 256, SIGNALER, [1])],
            "INOTIFIER_WATCH_PATHS[0]: the 4th item must be a dict of options, not list",
        ),
    ],
)
def test_malformed_settings_are_errors_naming_the_culprit(value: Any, message: str) -> None:
    assert messages(INOTIFIER_WATCH_PATHS=value) == [("inotifier.E001", message)]


def test_each_bad_entry_is_named_by_index(tmp_path: Path) -> None:
    result = messages(
        INOTIFIER_WATCH_PATHS=[
            (str(tmp_path), 256, SIGNALER),
            ("rel", 256, SIGNALER),
            (str(tmp_path), "X", SIGNALER),
        ]
    )
    assert [m for _id, m in result] == [
        "INOTIFIER_WATCH_PATHS[1]: path 'rel' is not absolute",
        "INOTIFIER_WATCH_PATHS[2]: unknown event name 'X'",
    ]


def test_missing_path_is_a_warning(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert messages(INOTIFIER_WATCH_PATHS=[(str(missing), 256, SIGNALER)]) == [
        (
            "inotifier.W001",
            f"INOTIFIER_WATCH_PATHS[0]: path {str(missing)!r} does not exist (yet); it is watched once it appears",
        )
    ]


def test_platform_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from inotifier import checks as inotifier_checks

    assert inotifier_checks.check_platform() == []
    monkeypatch.setattr(inotifier_checks.sys, "platform", "darwin")
    [error] = inotifier_checks.check_platform()
    assert error.id == "inotifier.E002"
    assert error.msg == "inotifier needs Linux: inotify does not exist on darwin."


def test_allowed_roots_warning_and_errors() -> None:
    with override_settings(INOTIFIER_ALLOWED_ROOTS=None):
        assert [m.id for m in check_admin_settings()] == ["inotifier.W002"]
    with override_settings(INOTIFIER_ALLOWED_ROOTS=["/srv"]):
        assert check_admin_settings() == []
    with override_settings(INOTIFIER_ALLOWED_ROOTS=["srv"]):
        assert [m.id for m in check_admin_settings()] == ["inotifier.E004"]
    with override_settings(INOTIFIER_ALLOWED_ROOTS=["/srv"], INOTIFIER_PROCESSORS="x.Y"):
        assert [m.id for m in check_admin_settings()] == ["inotifier.E003"]


def test_checks_run_through_the_framework() -> None:
    with override_settings(INOTIFIER_WATCH_PATHS=[("rel", 256, SIGNALER)]):
        ids = [m.id for m in checks.run_checks()]
    assert "inotifier.E001" in ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("IN_CREATE|IN_MOVED_TO", BITS["IN_CREATE"] | BITS["IN_MOVED_TO"]),
        ("in_create, moved_to", BITS["IN_CREATE"] | BITS["IN_MOVED_TO"]),
        ("ALL_EVENTS", ALL_EVENTS),
        ("IN_CLOSE", BITS["IN_CLOSE_WRITE"] | BITS["IN_CLOSE_NOWRITE"]),
        (256, 256),
    ],
)
def test_parse_mask(value: Any, expected: int) -> None:
    assert parse_mask(value) == expected


def test_parse_mask_rejects_bool_and_isdir() -> None:
    with pytest.raises(MaskError, match="not True"):
        parse_mask(True)
    with pytest.raises(MaskError, match="unknown event name 'IN_ISDIR'"):
        parse_mask("IN_ISDIR")


def test_describe_mask() -> None:
    assert describe_mask(BITS["IN_CREATE"] | BITS["IN_DELETE"]) == "IN_CREATE|IN_DELETE"
    assert describe_mask(ALL_EVENTS | BITS["IN_ONLYDIR"]) == "ALL_EVENTS|IN_ONLYDIR"
