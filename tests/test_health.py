"""Health: the view a site mounts (who may read it, 200 / 503, per host) and ``inotifier_status --json``."""

from __future__ import annotations

import json
import re
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inotifier.health import Problem, assess
from inotifier.models import ConfigVersion, DaemonStatus, WatchPath, WatchState, heartbeat_limit

from .conftest import DaemonProcess, wait_for

URL = reverse("inotifier:health")
SIGNALER = "inotifier.event_processors.AllEventsSignaler"
#: Every field that is not the verdict: shown only to whoever may see the daemons' status.
DETAIL = {"pid", "running", "events", "processor_errors", "message", "progress", "kernel_watches"}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def daemon(host: str, how: str = "alive", **fields: Any) -> DaemonStatus:
    now = timezone.now()
    state = {
        "alive": {"running": True, "heartbeat": now},
        "stopped": {"running": False, "heartbeat": now},
        "killed": {"running": True, "heartbeat": now - timedelta(seconds=heartbeat_limit() + 5)},
    }[how]
    return DaemonStatus.objects.create(host=host, pid=4242, started=now, **{**state, **fields})


def client_with(perms: list[str]) -> Client:
    user = User.objects.create_user("staff", "s@example.com", "pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(db: Any) -> Client:
    return client_with(["view_daemonstatus"])


def hosts(response: Any) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in response.json()["hosts"]}


def test_only_who_may_see_the_daemons_may_ask_unless_it_is_public(db: Any, settings: Any) -> None:
    daemon("files-1", message="/srv/secret is gone")
    assert Client().get(URL).status_code == 403
    assert client_with([]).get(URL).status_code == 403  # staff, but not allowed to see daemons
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    full = superuser.get(URL)
    assert full.status_code == 200
    assert full["Content-Type"] == "application/json"
    assert "no-cache" in full["Cache-Control"]
    assert set(hosts(full)["files-1"]) >= DETAIL
    assert hosts(full)["files-1"]["pid"] == 4242
    settings.INOTIFIER_HEALTH_PUBLIC = True
    public = Client().get(URL)
    assert public.status_code == 200
    entry = hosts(public)["files-1"]
    assert set(entry) == {"host", "healthy", "problem", "alive", "heartbeat_age_seconds", "version_lag"}
    assert "/srv/secret" not in public.content.decode()


def test_healthy_when_every_daemon_that_should_run_does(viewer: Client) -> None:
    response = viewer.get(URL)
    assert response.status_code == 503  # no daemon at all: nothing watches
    assert response.json() == {"healthy": False, "config_version": 0, "hosts": []}
    daemon("files-1")
    daemon("files-2")
    response = viewer.get(URL)
    assert response.status_code == 200
    assert response.json()["healthy"] is True
    assert {h: e["problem"] for h, e in hosts(response).items()} == {"files-1": "", "files-2": ""}
    assert hosts(response)["files-1"]["heartbeat_age_seconds"] < 30


@pytest.mark.parametrize(
    ("how", "problem", "alive"),
    [("stopped", Problem.STOPPED, False), ("killed", Problem.NO_HEARTBEAT, False)],
)
def test_one_host_down_makes_the_site_unhealthy_but_not_the_other_host(
    viewer: Client, how: str, problem: str, alive: bool
) -> None:
    daemon("files-1")
    daemon("files-2", how)
    response = viewer.get(URL)
    assert response.status_code == 503
    entry = hosts(response)["files-2"]
    assert (entry["healthy"], entry["problem"], entry["alive"]) == (False, problem, alive)
    assert hosts(response)["files-1"]["healthy"] is True
    # A probe per host: files-1 answers for itself.
    assert viewer.get(URL, {"host": "files-1"}).status_code == 200
    one = viewer.get(URL, {"host": "files-2"})
    assert one.status_code == 503 and list(hosts(one)) == ["files-2"]
    # A decommissioned host's row is deleted (admin): the site is healthy again.
    DaemonStatus.objects.filter(host="files-2").delete()
    assert viewer.get(URL).status_code == 200


def test_a_host_that_watches_name_but_never_reported_is_unhealthy(viewer: Client, tmp_path: Path) -> None:
    daemon("files-1")
    WatchPath.objects.create(path=str(tmp_path), mask=256, processor=SIGNALER, host="files-9")
    WatchPath.objects.create(path=str(tmp_path), mask=256, processor=SIGNALER, host="off", enabled=False)
    response = viewer.get(URL)
    assert response.status_code == 503
    assert hosts(response)["files-9"] == {
        "host": "files-9",
        "healthy": False,
        "problem": Problem.NEVER_REPORTED,
        "alive": False,
        "heartbeat_age_seconds": None,
        "version_lag": None,
    }
    assert "off" not in hosts(response)  # a disabled row asks for no daemon
    unknown = viewer.get(URL, {"host": "nobody"})
    assert unknown.status_code == 503
    assert hosts(unknown)["nobody"]["problem"] == Problem.NEVER_REPORTED


def test_a_daemon_behind_the_configuration_is_unhealthy_once_it_had_time(viewer: Client) -> None:
    ConfigVersion.bump_now()
    ConfigVersion.bump_now()
    daemon("files-1", version_applied=1)
    # Just changed: the daemon has until its next polls to apply it.
    response = viewer.get(URL)
    assert response.status_code == 200
    assert hosts(response)["files-1"]["version_lag"] == 1
    assert response.json()["config_version"] == 2
    long_ago = timezone.now() - timedelta(seconds=heartbeat_limit() + 1)
    ConfigVersion.objects.filter(pk=1).update(changed=long_ago)
    response = viewer.get(URL)
    assert response.status_code == 503
    entry = hosts(response)["files-1"]
    assert (entry["problem"], entry["alive"], entry["version_lag"]) == (Problem.BEHIND, True, 1)


def test_two_queries_whatever_the_number_of_daemons_and_watches(
    viewer: Client, django_assert_num_queries: Any, tmp_path: Path
) -> None:
    for i in range(30):
        daemon(f"files-{i}")
        WatchPath.objects.create(path=str(tmp_path), mask=256, processor=SIGNALER, host=f"files-{i}")
        WatchState.objects.create(host=f"files-{i}", key=f"k{i}", path=str(tmp_path), state="active")
    viewer.get(URL)  # the session and the user's permissions, loaded once
    with django_assert_num_queries(2):
        result = assess()
    assert result.healthy and len(result.hosts) == 30


def test_bad_requests_are_refused(viewer: Client) -> None:
    for value in ("", "a\x00b", "x" * 256):
        assert viewer.get(URL, {"host": value}).status_code == 400
    assert viewer.post(URL).status_code == 405  # read-only
    daemon("files-1")
    assert viewer.head(URL).status_code == 200


def test_host_names_with_control_characters_are_escaped(viewer: Client) -> None:
    daemon("evil\x1b]0;pwned\x07\n\u202e", message="gone\x1b[2J")
    body = viewer.get(URL).content.decode()
    assert CONTROL.findall(body) == []
    assert list(hosts(viewer.get(URL))) == ["evil\x1b]0;pwned\x07\n\u202e"]  # exact, once parsed


# -- inotifier_status --json, with the real daemon ----------------------------------------------


def status_json(d: DaemonProcess, *args: str) -> tuple[int, dict[str, Any]]:
    result = d.manage("inotifier_status", "--json", *args)
    assert result.stderr == "", result.stderr
    assert CONTROL.findall(result.stdout) == [], result.stdout  # JSON escapes: terminal-safe
    return result.returncode, json.loads(result.stdout)


def test_status_json_with_the_real_daemon(daemon: DaemonProcess, watch_dir: Path) -> None:
    hostile = watch_dir / "in\x1b]0;pwned\x07box"
    hostile.mkdir()
    WatchPath.objects.create(path=str(hostile), mask=256, processor=SIGNALER)  # behind the admin's back
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_HOSTNAME"] = "files-1"
    DaemonStatus.objects.create(host="files-2", running=False, pid=None)  # another host, stopped
    code, doc = status_json(daemon)
    assert code == 3
    assert (doc["host"], doc["running"], doc["pid"], doc["healthy"]) == ("files-1", False, None, False)

    pid = daemon.start()
    (watch_dir / "one").touch()
    daemon.record.wait_path(watch_dir / "one")

    def counted() -> dict[str, Any] | None:
        _code, doc = status_json(daemon)
        watches = {w["key"]: w for w in doc["watches"]}
        return doc if watches.get("settings:0", {}).get("events") == 1 else None

    doc = wait_for(counted, 15, interval=0.2)
    assert (doc["running"], doc["pid"], doc["database_error"]) == (True, pid, None)
    daemons = {d["host"]: d for d in doc["daemons"]}
    assert set(daemons) == {"files-1", "files-2"}  # every host's daemon, whatever --all-hosts says
    local = daemons["files-1"]
    assert (local["local"], local["alive"], local["healthy"], local["pid"]) == (True, True, True, pid)
    assert local["version_lag"] == 0 and local["version_applied"] == doc["config_version"]
    assert local["heartbeat_age_seconds"] < 30
    assert local["kernel_watch_limit"] and local["kernel_watch_limit_sysctl"]
    assert daemons["files-2"]["problem"] == Problem.STOPPED
    assert doc["healthy"] is False  # files-2 is down
    watches = {w["key"]: w for w in doc["watches"]}
    assert watches["settings:0"]["state"] == "active"
    assert watches["settings:0"]["mask_names"] == "IN_CREATE"
    row = next(w for w in doc["watches"] if w["source"] == "admin")
    assert row["path"] == str(hostile)  # exact once parsed, though never raw on the terminal
    assert row["state"] == "error" and "control or invisible character" in row["message"]

    assert daemon.stop().returncode == 0
    code, doc = status_json(daemon)
    assert code == 3
    local = {d["host"]: d for d in doc["daemons"]}["files-1"]
    assert (local["alive"], local["problem"]) == (False, Problem.STOPPED)
    assert {w["key"]: w["state"] for w in doc["watches"]}["settings:0"] == "unknown"
    assert {w["key"]: w["reported_state"] for w in doc["watches"]}["settings:0"] == "active"


def test_status_json_trusts_the_pid_file_over_a_recent_heartbeat(
    daemon: DaemonProcess, watch_dir: Path
) -> None:
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_HOSTNAME"] = "files-1"
    daemon.start()
    code, doc = status_json(daemon, "--all-hosts")
    assert code == 0 and doc["healthy"] is True
    daemon.signal(signal.SIGKILL)
    wait_for(lambda: daemon.pid() is None, 10)
    code, doc = status_json(daemon, "--all-hosts")
    assert code == 3
    local = {d["host"]: d for d in doc["daemons"]}["files-1"]
    # Its heartbeat is seconds old, but no process holds the pid file: killed.
    assert (local["alive"], local["healthy"], local["problem"]) == (False, False, Problem.NOT_RUNNING)
    assert {w["key"]: w["state"] for w in doc["watches"]}["settings:0"] == "unknown"


def test_the_health_view_follows_a_real_daemon(daemon: DaemonProcess, watch_dir: Path) -> None:
    user = User.objects.create_superuser("root", "r@example.com", "pw")
    client = Client()
    client.force_login(user)
    daemon.watch_paths = [[str(watch_dir), "IN_CREATE", SIGNALER]]
    daemon.env_extra["INOTIFIER_HOSTNAME"] = "files-1"
    assert client.get(URL).status_code == 503
    daemon.start()
    response = client.get(URL, {"host": "files-1"})
    assert response.status_code == 200, response.json()
    assert daemon.stop().returncode == 0
    response = client.get(URL, {"host": "files-1"})
    assert response.status_code == 503
    assert hosts(response)["files-1"]["problem"] == Problem.STOPPED
