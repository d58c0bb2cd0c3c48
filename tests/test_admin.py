"""The WatchPath admin: checkbox mask, allowlisted processors, validation, actions, permissions."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from inotifier.forms import WatchPathForm, mask_to_names, names_to_mask
from inotifier.masks import ALL_EVENTS, BITS
from inotifier.models import ConfigVersion, DaemonStatus, WatchPath, WatchState

SIGNALER = "inotifier.event_processors.AllEventsSignaler"
ADD_URL = reverse("admin:inotifier_watchpath_add")
LIST_URL = reverse("admin:inotifier_watchpath_changelist")


@pytest.fixture
def roots(settings: Any, tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    settings.INOTIFIER_ALLOWED_ROOTS = [str(allowed)]
    settings.INOTIFIER_PROCESSORS = None
    settings.INOTIFIER_WATCH_PATHS = []
    return allowed


@pytest.fixture
def admin_client(db: Any) -> Client:
    user = User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def form_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "path": "/tmp",
        "mask": ["IN_CREATE", "IN_CLOSE_WRITE"],
        "processor": SIGNALER,
        "enabled": "on",
        "exclude": "",
        "host": "",
        "event_log": "on",
        "description": "",
    }
    data.update(overrides)
    return data


def test_mask_round_trip() -> None:
    assert names_to_mask(["IN_CREATE", "IN_DELETE"]) == BITS["IN_CREATE"] | BITS["IN_DELETE"]
    assert names_to_mask(["ALL_EVENTS"]) == ALL_EVENTS
    assert mask_to_names(BITS["IN_CREATE"]) == ["IN_CREATE"]
    assert mask_to_names(ALL_EVENTS)[0] == "ALL_EVENTS"


def test_add_form_shows_checkboxes_and_stores_the_int(admin_client: Client, roots: Path) -> None:
    page = admin_client.get(ADD_URL).content.decode()
    assert 'type="checkbox" name="mask" value="IN_CREATE"' in page
    assert 'value="ALL_EVENTS"' in page
    assert f'<option value="{SIGNALER}"' in page
    before = ConfigVersion.current()
    response = admin_client.post(ADD_URL, form_data(path=str(roots)))
    assert response.status_code == 302, response.content.decode()[:3000]
    row = WatchPath.objects.get()
    assert row.mask == BITS["IN_CREATE"] | BITS["IN_CLOSE_WRITE"]
    assert ConfigVersion.current() == before + 1
    # The change form ticks what is stored.
    page = admin_client.get(reverse("admin:inotifier_watchpath_change", args=[row.pk])).content.decode()
    ticked = re.findall(r'name="mask" value="(\w+)" id="id_mask_\d+" checked', page)
    assert ticked == ["IN_CLOSE_WRITE", "IN_CREATE"]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"mask": []}, "mask", "This field is required."),
        ({"mask": ["IN_BOGUS"]}, "mask", "Select a valid choice. IN_BOGUS is not one of the available choices."),
        ({"mask": ["IN_ONLYDIR"]}, "mask", "Tick at least one event."),
        ({"processor": "os.system"}, "processor", "Select a valid choice. os.system is not one of the available choices."),
        ({"path": "relative/dir"}, "path", "path 'relative/dir' is not absolute"),
        ({"path": ""}, "path", "This field is required."),
    ],
)
def test_hand_crafted_posts_are_refused(
    admin_client: Client, roots: Path, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = admin_client.post(ADD_URL, form_data(**{"path": str(roots), **overrides}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not WatchPath.objects.exists()


def test_paths_outside_the_allowed_roots(admin_client: Client, roots: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link = roots / "link"
    link.symlink_to(outside)
    for candidate in (str(outside), f"{roots}/../outside", str(link), "/etc"):
        response = admin_client.post(ADD_URL, form_data(path=candidate))
        assert response.status_code == 200, candidate
        assert "is outside INOTIFIER_ALLOWED_ROOTS" in " ".join(
            response.context["adminform"].form.errors["path"]
        ), candidate
    assert not WatchPath.objects.exists()


def test_path_must_exist_for_this_host_only(admin_client: Client, roots: Path) -> None:
    missing = roots / "not-yet"
    response = admin_client.post(ADD_URL, form_data(path=str(missing)))
    assert "This path does not exist on this host." in response.context["adminform"].form.errors["path"]
    response = admin_client.post(ADD_URL, form_data(path=str(missing), host="another-host"))
    assert response.status_code == 302
    assert WatchPath.objects.get().host == "another-host"


def test_full_clean_runs_the_same_validation(db: Any, roots: Path) -> None:
    row = WatchPath(path="rel", mask=0x20000100, processor="os.system")
    with pytest.raises(ValidationError) as info:
        row.full_clean()
    errors = info.value.message_dict
    assert errors["path"] == ["path 'rel' is not absolute"]
    assert errors["mask"] == ["mask 0x20000100 has bits outside the inotify events (0x20000000)"]
    assert errors["processor"] == ["processor 'os.system' is not in INOTIFIER_PROCESSORS (the processors this site allows)"]
    ok = WatchPath(path=f"{roots}/./", mask=256, processor=SIGNALER)
    ok.full_clean()
    assert ok.path == str(roots)  # normalised


def test_processor_allowlist_setting(admin_client: Client, roots: Path, settings: Any) -> None:
    settings.INOTIFIER_PROCESSORS = ["tests.testapp.receivers.RecordingProcessor"]
    page = admin_client.get(ADD_URL).content.decode()
    assert "tests.testapp.receivers.RecordingProcessor" in page
    assert SIGNALER not in page
    response = admin_client.post(ADD_URL, form_data(path=str(roots)))
    assert "processor" in response.context["adminform"].form.errors


def test_default_allowlist_includes_settings_processors(db: Any, settings: Any, tmp_path: Path) -> None:
    settings.INOTIFIER_PROCESSORS = None
    settings.INOTIFIER_WATCH_PATHS = [(str(tmp_path), 256, "tests.testapp.receivers.RecordingProcessor")]
    choices = [c for c, _l in WatchPathForm().fields["processor"].choices]
    assert "tests.testapp.receivers.RecordingProcessor" in choices
    assert SIGNALER in choices


def test_actions_bump_the_version(admin_client: Client, roots: Path) -> None:
    rows = WatchPath.objects.bulk_create(
        [WatchPath(path=str(roots), mask=256, processor=SIGNALER) for _ in range(3)]
    )
    before = ConfigVersion.current()
    response = admin_client.post(
        LIST_URL, {"action": "disable_watches", "_selected_action": [r.pk for r in rows]}, follow=True
    )
    assert "3 watches disabled." in response.content.decode()
    assert not WatchPath.objects.filter(enabled=True).exists()
    assert ConfigVersion.current() == before + 1
    admin_client.post(LIST_URL, {"action": "enable_watches", "_selected_action": [rows[0].pk]})
    assert WatchPath.objects.filter(enabled=True).count() == 1
    assert ConfigVersion.current() == before + 2


def test_every_write_path_bumps_the_version(db: Any) -> None:
    v = ConfigVersion.current
    start = v()
    row = WatchPath.objects.create(path="/tmp", mask=256, processor=SIGNALER)
    assert v() == start + 1
    WatchPath.objects.filter(pk=row.pk).update(enabled=False)
    assert v() == start + 2
    WatchPath.objects.bulk_create([WatchPath(path="/tmp", mask=256, processor=SIGNALER)])
    assert v() == start + 3
    WatchPath.objects.filter(pk=row.pk).delete()
    assert v() == start + 4
    WatchPath.objects.get().delete()
    assert v() == start + 5
    WatchPath.objects.filter(pk=-1).update(enabled=True)  # nothing changed: no bump
    assert v() == start + 5
    ConfigVersion.bump()  # the documented one-liner after raw SQL
    assert v() == start + 6


def test_changelist_shows_states_settings_watches_and_daemons(
    admin_client: Client, roots: Path, settings: Any
) -> None:
    settings.INOTIFIER_WATCH_PATHS = [("/srv/<b>drop</b>", "IN_CREATE", SIGNALER)]
    row = WatchPath.objects.create(path=str(roots), mask=256, processor=SIGNALER)
    WatchState.objects.create(host="h1", key=f"row:{row.pk}", watch=row, path=row.path, state="error",
                              message="out of inotify watches <script>x</script>")
    WatchState.objects.create(host="h1", key="settings:0", source="settings", path="/srv/<b>drop</b>",
                              state="missing")
    DaemonStatus.objects.create(host="h1", pid=123, running=True)
    page = admin_client.get(LIST_URL).content.decode()
    assert "Watches from INOTIFIER_WATCH_PATHS (read-only)" in page
    assert "/srv/&lt;b&gt;drop&lt;/b&gt;" in page and "<b>drop</b>" not in page
    assert "h1: error" in page
    assert "out of inotify watches &lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>x</script>" not in page
    assert "h1: missing" in page
    assert 'id="inotifier-daemons"' in page
    response = admin_client.get(LIST_URL, {"state": "error"})
    assert response.context["cl"].result_count == 1
    response = admin_client.get(LIST_URL, {"state": "active"})
    assert response.context["cl"].result_count == 0
    response = admin_client.get(LIST_URL, {"q": os.path.basename(roots)})
    assert response.context["cl"].result_count == 1


def staff(perms: list[str]) -> Client:
    user = User.objects.create_user("staff", "s@example.com", "pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_staff_without_permission_sees_nothing(db: Any, roots: Path) -> None:
    client = staff([])
    assert client.get(LIST_URL).status_code == 403
    assert client.get(reverse("admin:inotifier_eventlog_changelist")).status_code == 403
    assert client.post(ADD_URL, form_data(path=str(roots))).status_code == 403
    assert not WatchPath.objects.exists()


def test_view_only_staff_cannot_change(db: Any, roots: Path) -> None:
    row = WatchPath.objects.create(path=str(roots), mask=256, processor=SIGNALER)
    client = staff(["view_watchpath"])
    assert client.get(LIST_URL).status_code == 200
    change_url = reverse("admin:inotifier_watchpath_change", args=[row.pk])
    page = client.get(change_url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    response = client.post(change_url, form_data(path=str(roots), mask=["IN_DELETE"]))
    assert response.status_code == 403
    response = client.post(LIST_URL, {"action": "disable_watches", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.enabled and row.mask == 256
    assert client.post(ADD_URL, form_data(path=str(roots))).status_code == 403


def test_daemon_status_admin_is_read_only(admin_client: Client) -> None:
    DaemonStatus.objects.create(host="<h>", pid=1, running=True)
    url = reverse("admin:inotifier_daemonstatus_changelist")
    page = admin_client.get(url).content.decode()
    assert "&lt;h&gt;" in page
    assert "current: " not in page  # applied version 0 == current 0
    ConfigVersion.bump()
    assert "0 <em>(current: 1)</em>" in admin_client.get(url).content.decode()
    assert admin_client.get(reverse("admin:inotifier_daemonstatus_add")).status_code == 403
