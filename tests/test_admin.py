"""The WatchPath admin: checkbox mask, allowlisted processors, validation, actions, permissions."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin import site
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inotifier.admin import WatchPathAdmin
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


def test_add_form_shows_checkboxes_and_stores_the_int(
    admin_client: Client, roots: Path, django_capture_on_commit_callbacks: Any
) -> None:
    page = admin_client.get(ADD_URL).content.decode()
    assert 'type="checkbox" name="mask" value="IN_CREATE"' in page
    assert 'value="ALL_EVENTS"' in page
    assert f'<option value="{SIGNALER}"' in page
    before = ConfigVersion.current()
    # The version moves when the admin's transaction commits (here: the test's, captured).
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(ADD_URL, form_data(path=str(roots)))
    assert len(callbacks) == 1
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
        (
            {"mask": ["IN_BOGUS"]},
            "mask",
            "Select a valid choice. IN_BOGUS is not one of the available choices.",
        ),
        ({"mask": ["IN_ONLYDIR"]}, "mask", "Tick at least one event."),
        (
            {"processor": "os.system"},
            "processor",
            "Select a valid choice. os.system is not one of the available choices.",
        ),
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
    assert errors["processor"] == [
        "processor 'os.system' is not in INOTIFIER_PROCESSORS (the processors this site allows)"
    ]
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


def test_actions_bump_the_version(
    admin_client: Client, roots: Path, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        rows = WatchPath.objects.bulk_create(
            [WatchPath(path=str(roots), mask=256, processor=SIGNALER) for _ in range(3)]
        )
    before = ConfigVersion.current()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            LIST_URL, {"action": "disable_watches", "_selected_action": [r.pk for r in rows]}, follow=True
        )
    assert "3 watches disabled." in response.content.decode()
    assert not WatchPath.objects.filter(enabled=True).exists()
    assert ConfigVersion.current() == before + 1
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(LIST_URL, {"action": "enable_watches", "_selected_action": [rows[0].pk]})
    assert WatchPath.objects.filter(enabled=True).count() == 1
    assert ConfigVersion.current() == before + 2


def test_every_write_path_bumps_the_version(transactional_db: Any) -> None:
    # Autocommit (a transactional test): each write is its own transaction, bumped at once.
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
    WatchState.objects.create(
        host="h1",
        key=f"row:{row.pk}",
        watch=row,
        path=row.path,
        state="error",
        message="out of inotify watches <script>x</script>",
    )
    WatchState.objects.create(
        host="h1", key="settings:0", source="settings", path="/srv/<b>drop</b>", state="missing"
    )
    # Alive: a state is shown only while the daemon that wrote it sends heartbeats.
    DaemonStatus.objects.create(host="h1", pid=123, running=True, heartbeat=timezone.now())
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
    ConfigVersion.bump_now()
    assert "0 <em>(current: 1)</em>" in admin_client.get(url).content.decode()
    assert admin_client.get(reverse("admin:inotifier_daemonstatus_add")).status_code == 403


# -- issue 11 ----------------------------------------------------------------------------


def daemon(host: str, how: str) -> DaemonStatus:
    """Create the status row of a daemon that is alive, stopped, killed or never beat."""
    now = timezone.now()
    fields = {
        "alive": {"running": True, "heartbeat": now},
        "stopped": {"running": False, "heartbeat": now},  # inotifier_stop
        "killed": {"running": True, "heartbeat": now - timedelta(minutes=5)},  # kill -9: no heartbeat
        "silent": {"running": True, "heartbeat": None},
    }[how]
    return DaemonStatus.objects.create(host=host, pid=100, started=now - timedelta(hours=1), **fields)


def watch(path: str, host: str = "", **fields: Any) -> WatchPath:
    return WatchPath.objects.create(path=path, mask=256, processor=SIGNALER, host=host, **fields)


def state(row: WatchPath | None, host: str, value: str, message: str = "", **fields: Any) -> WatchState:
    key = f"row:{row.pk}" if row else fields.pop("key")
    path = row.path if row else fields.pop("path")
    return WatchState.objects.create(
        host=host, key=key, watch=row, path=path, state=value, message=message, **fields
    )


@pytest.mark.parametrize(
    ("char", "shown"),
    [("\n", "\\x0a"), ("\x1b", "\\x1b"), ("\u202e", "\\u202e"), ("\x07", "\\x07"), ("\u2028", "\\u2028")],
)
def test_control_and_invisible_characters_are_refused_in_paths(
    admin_client: Client, roots: Path, char: str, shown: str
) -> None:
    bad = f"{roots}/in{char}box"
    response = admin_client.post(ADD_URL, form_data(path=bad))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["path"]
    assert errors == [f"path '{roots}/in{shown}box' contains a control or invisible character ({shown})"]
    html = response.content.decode()
    error_html = html[html.index('class="errorlist') :].split("</ul>", 1)[0]
    assert shown in error_html and char not in error_html  # (the input box echoes what was typed)
    with pytest.raises(ValidationError):
        WatchPath(path=bad, mask=256, processor=SIGNALER).full_clean()
    assert not WatchPath.objects.exists()


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (LIST_URL, {"path__regex": "(.*)*x"}),
        (LIST_URL, {"path__iregex": "(.*)*x"}),
        (LIST_URL, {"description__regex": "(a+)+$"}),
        (LIST_URL, {"states__message__regex": "(.*)*x"}),
        (LIST_URL, {"host__regex": "(.*)*x"}),
        (LIST_URL, {"pk__in": "1,2"}),
        (LIST_URL, {"enabled__exact": "1", "path__contains": "x"}),
        (reverse("admin:inotifier_daemonstatus_changelist"), {"host__regex": "(.*)*x"}),
        (reverse("admin:inotifier_daemonstatus_changelist"), {"message__iregex": "(.*)*x"}),
    ],
)
def test_lookups_other_than_the_lists_filters_are_refused(
    admin_client: Client, roots: Path, url: str, params: dict[str, str]
) -> None:
    watch(str(roots), description="x" * 30)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, params)
    assert response.status_code == 400
    assert not [q for q in queries.captured_queries if "REGEXP" in q["sql"] or " ~" in q["sql"]]


@pytest.mark.parametrize("name", ["state", "host__exact", "processor__exact", "enabled__exact"])
def test_a_nul_in_a_filter_value_is_a_bad_request(admin_client: Client, roots: Path, name: str) -> None:
    assert admin_client.get(LIST_URL, {name: "a\x00"}).status_code == 400


def test_every_filter_link_of_the_watch_list_is_accepted(admin_client: Client, roots: Path) -> None:
    row = watch(str(roots), host="h1")
    watch(str(roots), recursive=True, enabled=False)
    daemon("h1", "alive")
    state(row, "h1", "error", "permission denied")
    html = admin_client.get(LIST_URL).content.decode()
    links = set(re.findall(r'href="(\?[^"]*)"', html))
    for name in ("enabled__exact", "recursive__exact", "auto_add__exact", "state", "host", "processor"):
        assert any(link.startswith(f"?{name}") for link in links), name
    for link in links:
        assert admin_client.get(LIST_URL + link.replace("&amp;", "&")).status_code == 200, link
    url = reverse("admin:inotifier_daemonstatus_changelist")
    for link in set(re.findall(r'href="(\?[^"]*)"', admin_client.get(url).content.decode())):
        assert admin_client.get(url + link.replace("&amp;", "&")).status_code == 200, link


@pytest.mark.parametrize("how", ["stopped", "killed", "silent"])
def test_a_state_whose_daemon_is_not_alive_is_shown_unknown(
    admin_client: Client, roots: Path, settings: Any, how: str
) -> None:
    settings.INOTIFIER_WATCH_PATHS = [("/srv/from-settings", "IN_CREATE", SIGNALER)]
    row = watch(str(roots), host="h1")
    daemon("h1", how)
    state(row, "h1", "active", kernel_watches=3)
    state(None, "h1", "active", key="settings:0", path="/srv/from-settings", source="settings")
    response = admin_client.get(LIST_URL)
    html = response.content.decode()
    assert "inotifier-state-active" not in html
    assert html.count("unknown (daemon not running)") >= 2  # the row and the settings watch
    assert "Last reported: active" in html
    [shown] = response.context["cl"].result_list
    assert WatchPathAdmin(WatchPath, site).kernel_watches(shown) == 0
    change = admin_client.get(reverse("admin:inotifier_watchpath_change", args=[row.pk])).content.decode()
    assert "unknown (daemon not running)" in change and "(last reported: active" in change
    # The state filter goes by what is shown: not active, unknown.
    assert admin_client.get(LIST_URL, {"state": "active"}).context["cl"].result_count == 0
    assert admin_client.get(LIST_URL, {"state": "unknown"}).context["cl"].result_count == 1


def test_a_state_whose_daemon_is_alive_is_shown_as_reported(admin_client: Client, roots: Path) -> None:
    row = watch(str(roots))
    other = watch(str(roots / "sub"), enabled=True)
    daemon("h1", "alive")
    daemon("h2", "stopped")
    state(row, "h1", "active")
    state(row, "h2", "error", "gone")
    state(other, "h2", "active")
    html = admin_client.get(LIST_URL).content.decode()
    assert "h1: active" in html and "h2: unknown (daemon not running)" in html
    assert [w.pk for w in admin_client.get(LIST_URL, {"state": "active"}).context["cl"].result_list] == [
        row.pk
    ]
    assert admin_client.get(LIST_URL, {"state": "error"}).context["cl"].result_count == 0
    assert {w.pk for w in admin_client.get(LIST_URL, {"state": "unknown"}).context["cl"].result_list} == {
        row.pk,
        other.pk,
    }
    assert admin_client.get(LIST_URL, {"state": "bogus"}).context["cl"].result_count == 0


def test_liveness_costs_the_same_queries_for_3_or_30_watches(admin_client: Client, roots: Path) -> None:
    daemon("h1", "alive")
    daemon("h2", "stopped")

    def queries_for(count: int) -> int:
        for i in range(count - WatchPath.objects.count()):
            row = watch(f"{roots}/w{i}-{count}")
            state(row, "h1", "active")
            state(row, "h2", "active")
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(LIST_URL).status_code == 200
        return len(queries.captured_queries)

    assert queries_for(3) == queries_for(30)


def test_error_reasons_are_text_in_the_list_escaped_and_shortened(admin_client: Client, roots: Path) -> None:
    row = watch(str(roots))
    short = watch(str(roots / "b"))
    daemon("h1", "alive")
    reason = "permission denied watching <b>" + "/very/long" * 30 + "</b> (the daemon runs as uid 65534)"
    state(row, "h1", "error", reason)
    state(short, "h1", "missing", "the path does not exist")
    html = admin_client.get(LIST_URL).content.decode()
    reasons = re.findall(r'<div class="inotifier-state-reason" title="([^"]*)">([^<]*)</div>', html)
    assert ("the path does not exist", "the path does not exist") in reasons
    full, visible = next(r for r in reasons if r[0].startswith("permission"))
    assert full == reason.replace("<", "&lt;").replace(">", "&gt;")
    assert visible.startswith("permission denied watching &lt;b&gt;/very/long") and "…" in visible
    assert visible.endswith("uid 65534)") and len(visible) < len(full)
    assert "<b>" not in html


HOSTILE_TEXT = "a\nFAKE LOG LINE \x1b]0;pwned\x07 \x1b[2J\u202egpj.exe"
HOSTILE_SHOWN = "a\\x0aFAKE LOG LINE \\x1b]0;pwned\\x07 \\x1b[2J\\u202egpj.exe"


def test_names_and_messages_from_daemons_are_shown_with_control_characters_visible(
    admin_client: Client, roots: Path, settings: Any
) -> None:
    settings.INOTIFIER_WATCH_PATHS = [(f"/srv/{HOSTILE_TEXT}", "IN_CREATE", SIGNALER)]
    row = WatchPath.objects.bulk_create(  # as raw SQL would: no validation
        [WatchPath(path=f"{roots}/{HOSTILE_TEXT}", mask=256, processor=SIGNALER)]
    )[0]
    host = f"h-{HOSTILE_TEXT}"
    status = DaemonStatus.objects.create(
        host=host, pid=1, running=True, heartbeat=timezone.now(), progress=HOSTILE_TEXT, message=HOSTILE_TEXT
    )
    state(row, host, "error", HOSTILE_TEXT)
    state(
        None, host, "missing", HOSTILE_TEXT, key="settings:0", path=f"/srv/{HOSTILE_TEXT}", source="settings"
    )
    pages = {
        "list": admin_client.get(LIST_URL).content.decode(),
        "change": admin_client.get(
            reverse("admin:inotifier_watchpath_change", args=[row.pk])
        ).content.decode(),
        "daemons": admin_client.get(reverse("admin:inotifier_daemonstatus_changelist")).content.decode(),
        "daemon": admin_client.get(
            reverse("admin:inotifier_daemonstatus_change", args=[status.pk])
        ).content.decode(),
    }
    # The change form's path box holds the row's value as it is, to be edited (and refused as it is).
    pages["change"] = re.sub(r'<input type="text" name="path" value="[^"]*"', "", pages["change"])
    for name, html in pages.items():
        for char in ("\x1b", "\x07", "\u202e"):
            assert char not in html, name
        assert HOSTILE_SHOWN in html, name
    assert pages["list"].count(HOSTILE_SHOWN) >= 5  # path, host, reason, settings path, daemon panel
    assert f"h-{HOSTILE_SHOWN}" in pages["daemons"]


def test_the_add_form_ticks_the_events_people_act_on(admin_client: Client, roots: Path) -> None:
    page = admin_client.get(ADD_URL).content.decode()
    ticked = re.findall(r'name="mask" value="(\w+)" id="id_mask_\d+" checked', page)
    assert ticked == ["IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_TO"]


def test_a_duplicate_path_is_saved_with_a_warning_naming_the_other_watch(
    admin_client: Client, roots: Path
) -> None:
    first = watch(str(roots), host="h1")
    watch(str(roots), host="h2")  # another daemon: not a duplicate
    watch(str(roots), enabled=False)  # disabled: not a duplicate
    response = admin_client.post(ADD_URL, form_data(path=str(roots), host="h1"), follow=True)
    assert response.status_code == 200
    warnings = [str(m) for m in response.context["messages"] if m.level_tag == "warning"]
    assert len(warnings) == 1
    assert f"#{first.pk}</a> (AllEventsSignaler, h1)" in warnings[0]
    assert reverse("admin:inotifier_watchpath_change", args=[first.pk]) in warnings[0]
    assert WatchPath.objects.filter(path=str(roots)).count() == 4
    # A watch of every host overlaps each host's; a different path warns nothing.
    response = admin_client.post(ADD_URL, form_data(path=str(roots)), follow=True)
    assert "Other enabled watches have this path" in response.content.decode()
    (roots / "elsewhere").mkdir()
    response = admin_client.post(ADD_URL, form_data(path=str(roots / "elsewhere")), follow=True)
    assert not [m for m in response.context["messages"] if m.level_tag == "warning"]


def test_a_stopped_daemons_row_can_be_deleted_with_its_states(db: Any, roots: Path) -> None:
    gone = daemon("decommissioned", "stopped")
    live = daemon("h1", "alive")
    row = watch(str(roots))
    state(row, "decommissioned", "active")
    state(row, "h1", "active")
    viewer = staff(["view_daemonstatus"])
    change_url = reverse("admin:inotifier_daemonstatus_change", args=[gone.pk])
    assert "deletelink" not in viewer.get(change_url).content.decode()
    User.objects.filter(username="staff").delete()
    client = staff(["view_daemonstatus", "delete_daemonstatus", "view_watchpath"])
    page = client.get(change_url).content.decode()
    delete_url = reverse("admin:inotifier_daemonstatus_delete", args=[gone.pk])
    assert f'href="{delete_url}" class="deletelink"' in page
    confirm = client.get(delete_url).content.decode()
    assert "1 watch state" in confirm
    assert client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not DaemonStatus.objects.filter(pk=gone.pk).exists()
    assert list(WatchState.objects.values_list("host", flat=True)) == ["h1"]
    # A daemon that is alive would write its row again: not deletable.
    live_url = reverse("admin:inotifier_daemonstatus_change", args=[live.pk])
    assert "deletelink" not in client.get(live_url).content.decode()
    live_delete = reverse("admin:inotifier_daemonstatus_delete", args=[live.pk])
    assert client.post(live_delete, {"post": "yes"}).status_code == 403
    assert DaemonStatus.objects.filter(pk=live.pk).exists()
    listing = client.get(reverse("admin:inotifier_daemonstatus_changelist")).content.decode()
    assert "delete_selected" not in listing
    assert client.get(reverse("admin:inotifier_daemonstatus_add")).status_code == 403


def test_times_are_shown_with_seconds(admin_client: Client, roots: Path) -> None:
    when = datetime(2024, 5, 3, 10, 0, 7, tzinfo=UTC)
    row = watch(str(roots))
    status = DaemonStatus.objects.create(
        host="h1", pid=1, running=True, heartbeat=timezone.now(), started=when
    )
    state(row, "h1", "active", last_event=when)
    WatchPath.objects.filter(pk=row.pk).update(created=when)
    for url in (
        LIST_URL,
        reverse("admin:inotifier_watchpath_change", args=[row.pk]),
        reverse("admin:inotifier_daemonstatus_changelist"),
        reverse("admin:inotifier_daemonstatus_change", args=[status.pk]),
    ):
        assert "2024-05-03 10:00:07" in admin_client.get(url).content.decode(), url


def test_last_event_links_to_the_watchs_events(admin_client: Client, roots: Path) -> None:
    row = watch(str(roots))
    html = admin_client.get(LIST_URL).content.decode()
    assert f"{reverse('admin:inotifier_eventlog_changelist')}?watch=r{row.pk}" in html
    viewer = staff(["view_watchpath"])  # may not see the event log: no link to it
    assert "?watch=r" not in viewer.get(LIST_URL).content.decode()


def test_kernel_watches_near_the_limit_get_a_badge_escaped(admin_client: Client, roots: Path) -> None:
    now = timezone.now()
    DaemonStatus.objects.create(
        host="full", running=True, heartbeat=now, kernel_watches=95, kernel_watch_limit=100,
        kernel_watch_limit_name="user.max_inotify_watches<script>",
    )  # fmt: skip
    DaemonStatus.objects.create(
        host="half", running=True, heartbeat=now, kernel_watches=50, kernel_watch_limit=100
    )
    DaemonStatus.objects.create(host="unknown", running=True, heartbeat=now, kernel_watches=7)
    for url in (LIST_URL, reverse("admin:inotifier_daemonstatus_changelist")):
        page = admin_client.get(url).content.decode()
        assert page.count('class="inotifier-limit-badge"') == 1, url
        assert "95 / 100 (95&nbsp;%)" in page and "50 / 100 (50&nbsp;%)" in page
        badge = re.search(r'<span class="inotifier-limit-badge"[^>]*title="([^"]*)">([^<]*)</span>', page)
        assert badge, url
        assert badge.group(2) == "near the limit"
        assert (
            badge.group(1)
            == "Raise the sysctl user.max_inotify_watches&lt;script&gt; before new directories go unwatched."
        )
        assert "<script>" not in page
    detail = admin_client.get(
        reverse("admin:inotifier_daemonstatus_change", args=[DaemonStatus.objects.get(host="full").pk])
    ).content.decode()
    assert 'class="inotifier-limit-badge"' in detail
