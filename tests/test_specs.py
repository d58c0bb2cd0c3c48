"""specs: one reading of INOTIFIER_WATCH_PATHS for the checks, the daemon and the allowlist."""

from __future__ import annotations

from typing import Any

import pytest

from inotifier.event_processors import BUILTIN_PROCESSORS
from inotifier.specs import processor_allowlist, settings_entries, settings_problems, settings_specs

ENTRY = ("/srv/in", "IN_CREATE", "tests.testapp.receivers.RecordingProcessor")


@pytest.mark.parametrize(
    "value",
    [{"/srv/in": ("IN_CREATE", "x.Y")}, "/srv/in", b"/srv/in", 42],
    ids=["dict", "str", "bytes", "int"],
)
def test_a_setting_that_is_no_list_of_entries_means_no_entry_everywhere(settings: Any, value: Any) -> None:
    settings.INOTIFIER_WATCH_PATHS = value
    entries, error = settings_entries()
    assert entries == []
    assert error == (
        "INOTIFIER_WATCH_PATHS must be a list or tuple of (path, mask, processor) tuples, "
        f"not {type(value).__name__}"
    )
    assert settings_problems() == ([error], [])
    assert list(settings_specs()) == []  # the daemon watches nothing from it
    assert processor_allowlist() == BUILTIN_PROCESSORS  # and allows nothing more


def test_entries_are_read_the_same_way_by_everyone(settings: Any) -> None:
    settings.INOTIFIER_WATCH_PATHS = (entry for entry in [ENTRY])  # any iterable, read once
    entries, error = settings_entries()
    assert (entries, error) == ([ENTRY], "")
    settings.INOTIFIER_WATCH_PATHS = [ENTRY]
    assert [s.path for s in settings_specs()] == ["/srv/in"]
    assert processor_allowlist()[-1] == ENTRY[2]
