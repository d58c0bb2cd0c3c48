"""The outbox in the admin and in inotifier_status: counts, dead letters shown escaped, retry and discard."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from inotifier.handoff import Pending, WatchRef
from inotifier.outbox import OutboxEntry, write_rows
from inotifier.states import HandoffState

LIST_URL = reverse("admin:inotifier_outboxentry_changelist")
HOSTILE = "bad\x1b]0;pwned\x07<script>alert(1)</script>\n"


def rows(n: int, watch: str = "/srv/in", key: str = "settings:0", task: str = "media.tasks.thumb") -> None:
    ref = WatchRef(task, key, watch, None, "host-a")
    write_rows(
        [
            Pending(ref, f"{watch}/f{i}", watch, f"f{i}", 8, "IN_CLOSE_WRITE", False, None, False, 1, 1.0e9)
            for i in range(n)
        ]
    )


def set_state(state: str, n: int, error: str = "") -> list[int]:
    ids = list(
        OutboxEntry.objects.filter(state=HandoffState.PENDING).order_by("id").values_list("id", flat=True)[:n]
    )
    OutboxEntry.objects.filter(id__in=ids).update(state=state, attempts=5, last_error=error)
    return ids


@pytest.fixture
def outbox(db: Any) -> dict[str, list[int]]:
    rows(6)
    rows(2, watch=f"/srv/{HOSTILE}", key="row:7")
    return {
        "dead": set_state(HandoffState.DEAD, 2, f"TypeError: cannot encode {HOSTILE}"),
        "failed": set_state(HandoffState.FAILED, 1, "OperationalError: broker down"),
        "done": set_state(HandoffState.DONE, 1),
    }


def client_with(perms: list[str] | None) -> Client:
    if perms is None:
        user = User.objects.create_superuser("admin", "a@example.com", "pw")
    else:
        user = User.objects.create_user("staff", "s@example.com", "pw", is_staff=True)
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_the_list_shows_counts_per_state_and_watch_and_dead_letters_escaped(outbox: Any) -> None:
    client = client_with(None)
    page = client.get(LIST_URL)
    assert page.status_code == 200
    html = page.content.decode()
    summary = html.split('id="inotifier-outbox-summary"', 1)[1].split("</div>", 1)[0]
    text = re.sub(r"<[^>]+>", "", summary)
    assert "pending: 4" in text and "failed (retrying): 1" in text and "dead letter: 2" in text
    assert "done: 1" in text and "oldest waiting row:" in text
    watches = re.findall(r"<tr><td>(.*?)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>", summary)
    assert watches == [
        ("/srv/bad\\x1b]0;pwned\\x07&lt;script&gt;alert(1)&lt;/script&gt;\\x0a", "2", "0", "0"),
        ("/srv/in", "2", "1", "2"),
    ]
    # Nothing from a file name or an error reaches the page raw.
    assert "<script>alert(1)" not in html and "\x1b" not in html and "\x07" not in html
    assert "TypeError: cannot encode bad\\x1b]0;pwned\\x07&lt;script&gt;" in html
    dead = client.get(LIST_URL, {"state__exact": "dead"})
    assert dead.context["cl"].result_count == 2


def test_retry_makes_failed_and_dead_rows_due_again(outbox: Any) -> None:
    client = client_with(None)
    ids = outbox["dead"] + outbox["failed"] + outbox["done"]
    response = client.post(LIST_URL, {"action": "retry_rows", "_selected_action": ids}, follow=True)
    assert "3 rows will be handed off again." in response.content.decode()
    retried = OutboxEntry.objects.filter(id__in=outbox["dead"] + outbox["failed"])
    assert {(r.state, r.attempts, r.last_error) for r in retried} == {(HandoffState.PENDING, 0, "")}
    assert OutboxEntry.objects.get(id=outbox["done"][0]).state == HandoffState.DONE  # not sent twice


def test_discard_deletes_the_rows_after_a_confirmation(outbox: Any) -> None:
    client = client_with(None)
    data = {"action": "delete_selected", "_selected_action": outbox["dead"]}
    confirm = client.post(LIST_URL, data)
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    assert OutboxEntry.objects.filter(id__in=outbox["dead"]).count() == 2
    client.post(LIST_URL, {**data, "post": "yes"}, follow=True)
    assert not OutboxEntry.objects.filter(id__in=outbox["dead"]).exists()


def test_view_only_staff_cannot_retry_or_discard(outbox: Any) -> None:
    client = client_with(["view_outboxentry"])
    page = client.get(LIST_URL)
    assert page.status_code == 200
    assert "retry_rows" not in page.content.decode() and "delete_selected" not in page.content.decode()
    client.post(LIST_URL, {"action": "retry_rows", "_selected_action": outbox["dead"]})
    client.post(LIST_URL, {"action": "delete_selected", "_selected_action": outbox["dead"], "post": "yes"})
    assert OutboxEntry.objects.filter(id__in=outbox["dead"], state=HandoffState.DEAD).count() == 2


def test_retry_needs_change_and_discard_needs_delete(db: Any) -> None:
    rows(2)
    ids = set_state(HandoffState.DEAD, 2, "boom")
    changer = client_with(["view_outboxentry", "change_outboxentry"])
    html = changer.get(LIST_URL).content.decode()
    assert "retry_rows" in html and "delete_selected" not in html
    changer.post(LIST_URL, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert OutboxEntry.objects.count() == 2
    User.objects.all().delete()
    deleter = client_with(["view_outboxentry", "delete_outboxentry"])
    html = deleter.get(LIST_URL).content.decode()
    assert "delete_selected" in html and "retry_rows" not in html


def test_no_one_adds_rows_by_hand_and_a_row_page_shows_the_event(outbox: Any) -> None:
    client = client_with(None)
    assert client.get(reverse("admin:inotifier_outboxentry_add")).status_code == 403
    page = client.get(reverse("admin:inotifier_outboxentry_change", args=[outbox["dead"][0]]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "IN_CLOSE_WRITE" in html and "\x1b" not in html and 'name="_save"' not in html


def test_lookups_other_than_the_lists_filters_are_refused(outbox: Any) -> None:
    client = client_with(None)
    assert client.get(LIST_URL, {"last_error__regex": "(.*)*x"}).status_code == 400
    assert client.get(LIST_URL, {"task__exact": "media.tasks.thumb"}).status_code == 200


def test_status_shows_the_outbox_counts_escaped(outbox: Any) -> None:
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("inotifier_status", stdout=out)  # no daemon runs: exit 3 after the output
    text = out.getvalue()
    assert "outbox: 4 pending, 1 failed (retrying), 2 dead, 1 done, oldest waiting" in text
    assert "  /srv/in: 2 pending, 1 failed, 2 dead" in text
    assert "  /srv/bad\\x1b]0;pwned\\x07<script>alert(1)</script>\\x0a: 2 pending, 0 failed, 0 dead" in text
    assert "\x1b" not in text and "\x07" not in text
