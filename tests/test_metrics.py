"""Prometheus metrics: scraped over HTTP from real daemons (in this process and as processes), and the textfile."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inotifier.daemon.budget import WatchBudget
from inotifier.daemon.kernel import watch_limit
from inotifier.escaping import printable
from tests.testapp.receivers import ListProcessor

from .conftest import ROOT, DaemonProcess, pump, wait_for

LIST = "tests.testapp.receivers.ListProcessor"
RAISING = "tests.testapp.receivers.RaisingProcessor"
SIGNALER = "inotifier.event_processors.AllEventsSignaler"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Return every sample of a Prometheus text exposition, by sample name (prometheus_client's parser)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return parse(response.read().decode("utf-8"))  # strict: the body must be valid UTF-8


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Return the value of the one sample of ``name`` whose labels include ``labels`` (None: no such)."""
    found = [v for have, v in samples.get(name, []) if labels.items() <= have.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


@pytest.fixture(autouse=True)
def _clear_list_processor() -> None:
    ListProcessor.seen.clear()


def test_events_by_type_errors_and_states_are_scraped_over_http(in_process: Any, watch_dir: Path) -> None:
    ok, raising = watch_dir / "ok", watch_dir / "raising"
    ok.mkdir()
    raising.mkdir()
    d = in_process(
        [
            (str(ok), "IN_CREATE|IN_CLOSE_WRITE", LIST),
            (str(raising), "IN_CREATE", RAISING),
            (str(watch_dir / "nowhere"), "IN_CREATE", LIST),
        ],
        INOTIFIER_METRICS_PORT=0,
        INOTIFIER_POLL_INTERVAL=0.1,
    )
    port = d.monitor.exporter.port
    assert port
    for i in range(3):
        (ok / f"file{i}").write_text("x")  # IN_CREATE, IN_CLOSE_WRITE
    for i in range(2):
        (ok / f"dir{i}").mkdir()  # IN_CREATE|IN_ISDIR: counted as IN_CREATE
    for i in range(4):
        (raising / f"r{i}").touch()
    pump(d, lambda: len(ListProcessor.seen) == 8 and d.watches["settings:1"].errors == 4)

    def figures() -> Samples | None:
        d.tick(timeout=0.02)  # the loop takes a sample every poll interval
        samples = scrape(port)
        done = value(samples, "inotifier_processor_errors_total", watch="settings:1") == 4
        return samples if done and value(samples, "inotifier_events_total", type="IN_CLOSE_WRITE") else None

    samples = wait_for(figures, 10, interval=0)
    events = {(labels["watch"], labels["type"]): v for labels, v in samples["inotifier_events_total"] if v}
    assert events == {
        ("settings:0", "IN_CREATE"): 5,
        ("settings:0", "IN_CLOSE_WRITE"): 3,
        ("settings:1", "IN_CREATE"): 4,
    }
    assert value(samples, "inotifier_events_total", watch="settings:0", type="IN_CREATE", path=str(ok)) == 5
    assert value(samples, "inotifier_processor_errors_total", watch="settings:0") == 0
    assert value(samples, "inotifier_watches", state="active") == 2
    assert value(samples, "inotifier_watches", state="missing") == 1
    assert value(samples, "inotifier_watches", state="error") == 0
    assert value(samples, "inotifier_kernel_watches") == len(d.table.nodes) == 2
    name, limit = watch_limit()
    assert value(samples, "inotifier_kernel_watches_limit", sysctl=name) == limit
    assert value(samples, "inotifier_up", host="testhost") == 1
    assert value(samples, "inotifier_reconcile_duration_seconds_count") == 1  # the start's
    assert value(samples, "inotifier_overflows_total") == 0
    assert value(samples, "inotifier_queue_limit_bytes") == d.reader.max_bytes
    assert value(samples, "inotifier_queue_peak_bytes") > 0  # type: ignore[operator]
    assert time.time() - value(samples, "inotifier_sample_timestamp_seconds") < 10  # type: ignore[operator]
    # A daemon without a database says nothing about one; the process's own figures come too.
    assert "inotifier_database_up" not in samples
    assert "process_resident_memory_bytes" in samples


def test_every_reconcile_is_timed(in_process: Any, watch_dir: Path) -> None:
    d = in_process(
        [(str(watch_dir), "IN_CREATE", LIST)], INOTIFIER_METRICS_PORT=0, INOTIFIER_POLL_INTERVAL=0.1
    )
    port = d.monitor.exporter.port
    d.reconcile(force=True, announce=True)  # what SIGHUP does
    d.reconcile()

    def three() -> Samples | None:
        d.tick(timeout=0.02)
        samples = scrape(port)
        return samples if value(samples, "inotifier_reconcile_duration_seconds_count") == 3 else None

    samples = wait_for(three, 10, interval=0)
    total = value(samples, "inotifier_reconcile_duration_seconds_sum")
    assert total is not None and 0 < total < 30
    buckets = [v for labels, v in samples["inotifier_reconcile_duration_seconds_bucket"]]
    assert buckets == sorted(buckets) and buckets[-1] == 3  # cumulative, +Inf last


def test_the_textfile_is_replaced_whole_and_says_when_the_daemon_stopped(
    in_process: Any, watch_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    prom = out / "inotifier.prom"
    d = in_process(
        [(str(watch_dir), "IN_CREATE", LIST)],
        INOTIFIER_METRICS_TEXTFILE=str(prom),
        INOTIFIER_POLL_INTERVAL=0.1,
    )
    assert d.monitor.exporter.port is None  # no HTTP without INOTIFIER_METRICS_PORT
    wait_for(prom.exists, 10)
    first = prom.stat().st_ino
    (watch_dir / "one").touch()

    def counted() -> Samples | None:
        d.tick(timeout=0.02)
        samples = parse(prom.read_text())
        return samples if value(samples, "inotifier_events_total", type="IN_CREATE") == 1 else None

    samples = wait_for(counted, 10, interval=0)
    assert value(samples, "inotifier_up") == 1
    # Each write is a new file renamed over the old one: a reader never sees half a file.
    assert prom.stat().st_ino != first
    assert sorted(p.name for p in out.iterdir()) == ["inotifier.prom"]  # no temporary file left
    # Only the daemon's own figures: another daemon's file beside it cannot clash with these.
    assert not any(name.startswith("process_") for name in samples)
    d.close()
    last = parse(prom.read_text())
    assert value(last, "inotifier_up") == 0
    assert value(last, "inotifier_events_total", type="IN_CREATE") == 1


def test_a_port_already_taken_is_one_error_and_the_daemon_goes_on(
    in_process: Any, watch_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    prom = tmp_path / "inotifier.prom"
    try:
        with caplog.at_level(logging.INFO, logger="inotifier"):
            d = in_process(
                [(str(watch_dir), "IN_CREATE", LIST)],
                INOTIFIER_METRICS_PORT=port,
                INOTIFIER_METRICS_TEXTFILE=str(prom),
                INOTIFIER_POLL_INTERVAL=0.1,
            )
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        message = errors[0].getMessage()
        assert f"cannot serve on 127.0.0.1 port {port}" in message
        assert "goes on without its HTTP metrics" in message
        assert "Traceback" not in caplog.text
        (watch_dir / "still-works").touch()
        pump(d, lambda: [e.name for e in ListProcessor.seen] == ["still-works"])
        # The textfile does not depend on the port.
        pump(d, lambda: prom.exists() and "inotifier_events_total" in prom.read_text())
    finally:
        taken.close()


def test_labels_are_valid_text_whatever_the_path(in_process: Any, watch_dir: Path) -> None:
    quoted = watch_dir / 'say "hi" \\ there'
    quoted.mkdir()
    undecodable = os.fsdecode(os.fsencode(str(watch_dir)) + b"/caf\xe9")
    forged = str(watch_dir / "evil\ninotifier_up 0")
    d = in_process(
        [(str(quoted), "IN_CREATE", LIST), (undecodable, "IN_CREATE", LIST), (forged, "IN_CREATE", LIST)],
        INOTIFIER_METRICS_PORT=0,
        INOTIFIER_POLL_INTERVAL=0.1,
    )
    samples = scrape(d.monitor.exporter.port)
    paths = {labels["watch"]: labels["path"] for labels, _v in samples["inotifier_processor_errors_total"]}
    # Paths are shown as the commands show them (a backslash doubled, what is not text as an
    # escape), through the exposition's own escaping: one path cannot forge a sample line.
    assert paths["settings:0"] == printable(str(quoted)) == str(quoted).replace("\\", "\\\\")
    assert paths["settings:1"] == printable(undecodable)
    assert "\\xe9" in paths["settings:1"]
    assert paths["settings:2"] == printable(forged)
    assert [v for _labels, v in samples["inotifier_up"]] == [1]


def test_the_sample_is_a_copy_the_scrape_thread_may_read_while_the_loop_changes_watches(
    in_process: Any, watch_dir: Path, settings: Any
) -> None:
    entries = [(str(watch_dir), "IN_CREATE", LIST)]
    settings.INOTIFIER_WATCH_PATHS = entries
    d = in_process(entries, INOTIFIER_METRICS_PORT=0, INOTIFIER_POLL_INTERVAL=0.05)
    port = d.monitor.exporter.port
    for i in range(200):
        (watch_dir / f"d{i}").mkdir()
    results: list[Any] = []

    import threading

    def scraper() -> None:
        try:
            for _ in range(40):
                results.append(scrape(port))
        except Exception as exc:  # reported below, with the test's own thread
            results.append(exc)

    thread = threading.Thread(target=scraper)
    thread.start()
    # Meanwhile the loop swaps the watch set back and forth: 201 watches, then 1.
    many = entries + [(str(watch_dir / f"d{i}"), "IN_CREATE", LIST) for i in range(200)]
    while thread.is_alive():
        settings.INOTIFIER_WATCH_PATHS = many if len(d.watches) == 1 else entries
        d.reconcile(force=True)
        d.tick(timeout=0.01)
    thread.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(results) == 40
    assert all(value(r, "inotifier_up") == 1 for r in results)


def test_the_budget_warns_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    limit = {"value": 100}
    budget = WatchBudget(lambda: ("user.max_inotify_watches", limit["value"]))
    with caplog.at_level(logging.INFO, logger="inotifier"):
        assert [budget.check(n) for n in (50, 89, 90, 95, 99, 91, 86, 90, 84, 92)] == [
            False, False, True, True, True, True, False, True, False, True,
        ]  # fmt: skip
        limit["value"] = None  # no longer readable: nothing to compare with
        assert budget.check(92) is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Warned at 90 and at 92: in between it fell below 85 %, not merely below 90 %.
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(
        "90 kernel watches in use: 90 % of the limit user.max_inotify_watches = 100"
    )
    assert "sysctl user.max_inotify_watches=" in warnings[0]
    back = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(back) == 2 and all(m.startswith("kernel watches back under 90 %") for m in back)
    assert (budget.name, budget.limit) == ("user.max_inotify_watches", None)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where prometheus_client cannot be imported."""
    blocker = "import sys; sys.modules['prometheus_client'] = None\n"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INOTIFIER_", "PYTEST_"))}
    environ.update(DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-c", blocker + code], env=environ, capture_output=True, text=True, timeout=120
    )


def test_without_prometheus_client_the_daemon_runs_until_metrics_are_asked_for(watch_dir: Path) -> None:
    code = f"""
import django, json, os, time
django.setup()
from inotifier.daemon.runner import Daemon
d = Daemon(install_signal_handlers=False, use_database=False)
try:  # what Daemon.run() does
    d.start()
    open({str(watch_dir / "seen")!r}, "w").close()
    end = time.monotonic() + 10
    while not d.watches["settings:0"].events and time.monotonic() < end:
        d.tick(0.05)
finally:
    d.close()
print("events", d.watches["settings:0"].events)
"""
    entries = f'[["{watch_dir}", "IN_CREATE", "{SIGNALER}"]]'
    result = run_python(code, INOTIFIER_WATCH_PATHS=entries)
    assert result.returncode == 0, result.stderr
    assert "events 1" in result.stdout
    result = run_python(code, INOTIFIER_WATCH_PATHS=entries, INOTIFIER_METRICS_PORT="0")
    assert result.returncode == 1
    # The error itself is what ends the process, not something closing a half-made daemon.
    assert result.stderr.rstrip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: the INOTIFIER_METRICS_* settings need "
        "prometheus_client, which is not installed: pip install 'django-inotifier[metrics]'"
    )
    assert "During handling" not in result.stderr
    # inotifier_start says so before anything starts, as for any other bad setting.
    start = "from django.core.management import execute_from_command_line\n"
    start += "execute_from_command_line(['manage.py', 'inotifier_start', '--foreground'])"
    result = run_python(start, INOTIFIER_WATCH_PATHS=entries, INOTIFIER_METRICS_TEXTFILE="/tmp/x.prom")
    assert result.returncode == 1
    assert "Invalid inotifier configuration" in result.stderr
    assert "pip install 'django-inotifier[metrics]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        (
            "INOTIFIER_METRICS_PORT",
            "9100",
            "INOTIFIER_METRICS_PORT must be a port number (0-65535) or None, not '9100'",
        ),
        (
            "INOTIFIER_METRICS_PORT",
            70000,
            "INOTIFIER_METRICS_PORT must be a port number (0-65535) or None, not 70000",
        ),
        (
            "INOTIFIER_METRICS_PORT",
            True,
            "INOTIFIER_METRICS_PORT must be a port number (0-65535) or None, not True",
        ),
        (
            "INOTIFIER_METRICS_ADDRESS",
            "",
            "INOTIFIER_METRICS_ADDRESS must be a host name or IP address, not ''",
        ),
        (
            "INOTIFIER_METRICS_TEXTFILE",
            "metrics/inotifier.prom",
            "INOTIFIER_METRICS_TEXTFILE must be an absolute path ending in .prom (the only files "
            "node_exporter's textfile collector reads), not 'metrics/inotifier.prom'",
        ),
        (
            "INOTIFIER_METRICS_TEXTFILE",
            "/var/lib/node_exporter/inotifier.txt",
            "INOTIFIER_METRICS_TEXTFILE must be an absolute path ending in .prom (the only files "
            "node_exporter's textfile collector reads), not '/var/lib/node_exporter/inotifier.txt'",
        ),
    ],
)
def test_bad_metrics_settings_are_errors_naming_the_culprit(
    settings: Any, name: str, bad: Any, message: str
) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from inotifier.checks import check_metrics_settings
    from inotifier.conf import MetricsConfig

    setattr(settings, name, bad)
    errors = check_metrics_settings()
    assert [(e.id, e.msg) for e in errors] == [("inotifier.E005", message)]
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        MetricsConfig.from_settings()


def test_good_metrics_settings_pass_the_checks(settings: Any) -> None:
    from inotifier.checks import check_metrics_settings

    settings.INOTIFIER_METRICS_PORT = 9464
    settings.INOTIFIER_METRICS_ADDRESS = "::1"
    settings.INOTIFIER_METRICS_TEXTFILE = "/var/lib/node_exporter/textfile/inotifier.prom"
    assert check_metrics_settings() == []


# -- the real daemon, as a process ---------------------------------------------------------


def served_port(daemon: DaemonProcess) -> int:
    """Return the port the daemon says it serves its metrics on (INOTIFIER_METRICS_PORT=0)."""
    match = wait_for(
        lambda: re.search(r"metrics served on http://127\.0\.0\.1:(\d+)/metrics", daemon.stderr_text()), 30
    )
    return int(match.group(1))


def test_metrics_of_a_running_daemon_match_what_happened(
    daemon: DaemonProcess, watch_dir: Path, tmp_path: Path
) -> None:
    from inotifier.models import ConfigVersion, DaemonStatus, EventLog

    ok, raising = watch_dir / "ok", watch_dir / "raising"
    ok.mkdir()
    raising.mkdir()
    prom = tmp_path / "inotifier.prom"
    daemon.watch_paths = [
        [str(ok), "IN_CREATE", SIGNALER, {"recursive": True, "auto_add": True}],
        [str(raising), "IN_CREATE", RAISING],
    ]
    daemon.env_extra.update(
        INOTIFIER_METRICS_PORT="0",
        INOTIFIER_METRICS_TEXTFILE=str(prom),
        INOTIFIER_EVENT_LOG="1",
        INOTIFIER_EVENT_LOG_FLUSH_INTERVAL="0.05",
    )
    pid = daemon.start()
    port = served_port(daemon)
    for i in range(20):
        (ok / f"f{i}").touch()
    for i in range(5):
        (raising / f"r{i}").touch()
    daemon.record.wait_path(ok / "f19")

    # An overflow, forced as tests/test_faults.py does: the daemon frozen during a burst.
    max_queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    burst = ok / "burst"
    burst.mkdir()
    daemon.record.wait_path(burst)
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(max_queued + 2000):
            (burst / f"b{i}").touch()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: "IN_Q_OVERFLOW" in [n for n, _p, _m in daemon.record.events()], 30)

    def settled() -> Samples | None:
        # What the receivers recorded for the first watch (the rescan's own events included)
        # is what the metrics count, once the daemon is done with the burst.
        delivered = sum(1 for p in daemon.record.paths("IN_CREATE") if p.startswith(str(ok) + "/"))
        samples = scrape(port)
        counted = value(samples, "inotifier_events_total", watch="settings:0", type="IN_CREATE")
        written = value(samples, "inotifier_eventlog_rows_written_total")
        if counted == delivered and written == EventLog.objects.count() == counted + 5:
            return samples
        return None

    samples = wait_for(settled, 60, interval=0.5)
    assert value(samples, "inotifier_events_total", watch="settings:1", type="IN_CREATE") == 5
    assert value(samples, "inotifier_processor_errors_total", watch="settings:1") == 5
    assert value(samples, "inotifier_processor_errors_total", watch="settings:0") == 0
    overflows = value(samples, "inotifier_overflows_total")
    assert overflows is not None and overflows >= 1
    assert value(samples, "inotifier_rescans_total") == overflows  # one rescan per overflow
    assert value(samples, "inotifier_queue_peak_bytes") > 0  # type: ignore[operator]
    assert value(samples, "inotifier_eventlog_rows_dropped_total") == 0
    assert value(samples, "inotifier_eventlog_rows_pending") == 0
    assert value(samples, "inotifier_database_up") == 1
    version = ConfigVersion.current()
    assert value(samples, "inotifier_config_version") == version
    assert value(samples, "inotifier_config_version_applied") == version
    assert time.time() - value(samples, "inotifier_heartbeat_timestamp_seconds") < 30  # type: ignore[operator]
    status = DaemonStatus.objects.get(pid=pid)
    assert value(samples, "inotifier_start_time_seconds") == pytest.approx(status.started.timestamp())
    assert value(samples, "inotifier_kernel_watches") == 3  # ok, ok/burst, raising
    name, limit = watch_limit()
    assert value(samples, "inotifier_kernel_watches_limit", sysctl=name) == limit
    assert (status.kernel_watch_limit, status.kernel_watch_limit_name) == (limit, name)
    # The loop takes a new sample every poll interval (0.5 s here): the timestamp moves.
    taken = value(samples, "inotifier_sample_timestamp_seconds")
    wait_for(lambda: value(scrape(port), "inotifier_sample_timestamp_seconds") != taken, 10)
    # The textfile says the same.
    wait_for(lambda: value(parse(prom.read_text()), "inotifier_overflows_total") == overflows, 10)
    from_file = parse(prom.read_text())
    assert value(from_file, "inotifier_processor_errors_total", watch="settings:1") == 5

    assert daemon.stop().returncode == 0
    assert value(parse(prom.read_text()), "inotifier_up") == 0
    with pytest.raises(urllib.error.URLError):
        scrape(port)  # the server went with the daemon


def test_the_docs_name_every_metric_and_only_those(tmp_path: Path) -> None:
    from inotifier.daemon.exposition import Exposition
    from inotifier.daemon.sample import (
        DatabaseFigures,
        Durations,
        KernelFigures,
        LogFigures,
        QueueFigures,
        Sample,
        WatchFigures,
    )

    sample = Sample(
        taken=time.time(),
        up=True,
        started=time.time(),
        database=DatabaseFigures(True, time.time(), 3, 3),
        kernel=KernelFigures(10, "fs.inotify.max_user_watches", 8192),
        queue=QueueFigures(0, 100, 1000, 0),
        overflows=0,
        rescans=0,
        reconciles=Durations().figures(),
        log=LogFigures(1, 0, 0, 0, 0, 0),
        watches=(WatchFigures("settings:0", "/srv/in", "active", ((256, 2),), 1),),
    )
    from inotifier.daemon.handoff import outbox_families

    # With the families the outbox adds once a TaskDispatcher started it.
    sample = dataclasses.replace(sample, extra=tuple(outbox_families(3, 2, ({"pending": 1}, time.time()))))
    exposition = Exposition("files-1")
    from dataclasses import replace

    from inotifier.daemon.sample import Family

    # With the gauge a settled watch adds (Sampler.take), whatever else the sample has.
    held = Family(
        "inotifier_settle_held_paths", "gauge", "held", ("path", "watch"), ((("/srv/in", "w"), 2.0),)
    )
    sample = replace(sample, extra=(*sample.extra, held))
    exposition.sample = sample
    exported = {name for name in parse(exposition.text().decode()) if name.startswith("inotifier_")}
    text = (ROOT / "docs" / "deployment.md").read_text().split("## Monitoring", 1)[1]
    documented = set(re.findall(r"\binotifier_[a-z_]*[a-z]\b", text))
    documented -= {
        "inotifier_status",
        "inotifier_reconcile_duration_seconds",
    }  # a command; the histogram's name
    histogram = {f"inotifier_reconcile_duration_seconds_{s}" for s in ("bucket", "count", "sum")}
    shorthand = {  # the table's "`_dropped_total`, ..." after inotifier_eventlog_rows_written_total
        f"inotifier_eventlog_rows_{s}_total" for s in ("dropped", "rejected", "lost", "pruned")
    }
    assert documented | histogram | shorthand == exported
