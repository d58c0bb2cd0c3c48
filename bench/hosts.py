"""Several hosts on one PostgreSQL: cross-host reload latency (NOTIFY vs poll) and failover time.

Usage::

    python bench/hosts.py                       # both, 5 daemons, 20 rounds / 5 failovers
    python bench/hosts.py reload --daemons 5 --rounds 20
    python bench/hosts.py failover --rounds 5 --lease 5

``reload`` (issue 14, part 1): ``--daemons`` real daemons (``manage.py
inotifier_start``, each with its own INOTIFIER_HOSTNAME and pid file) share a
scratch PostgreSQL database. Each round saves a new WatchPath row through the
ORM (the admin's code path: ``save()``, the bump and NOTIFY after the commit)
and creates files in its directory every 0.5 ms until every daemon has
reported one; the latency of a host is the time from just before the save to
its first event. Measured twice: with NOTIFY (INOTIFIER_POLL_INTERVAL = 60 s, so
only the notification can explain a fast change) and with the poll alone
(INOTIFIER_LISTEN_DATABASE = False, the default poll of 2 s). Target: NOTIFY
p95 under 100 ms.

``failover`` (part 2): two daemons and one exclusive row; a thread creates a
file every millisecond; the holder is killed with SIGKILL and the time to the
first event reported by the other is measured, against INOTIFIER_LEASE_TIMEOUT
(``--lease``). The killed daemon is started again for the next round.

Prints a table and ``RESULT {json}`` lines. Everything lives in temporary
directories and a scratch database that is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

PG_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "inotifier_bench_hosts"
SIGNALER = "inotifier.event_processors.AllEventsSignaler"
IN_CREATE = 0x100

RECEIVER_APP = """
import os, time
from django.apps import AppConfig

class BenchReceiverConfig(AppConfig):
    name = "bench_receiver"

    def ready(self):
        from inotifier import signals
        if not os.environ.get("BENCH_RECORD"):
            return  # migrate, the harness itself
        out = open(os.environ["BENCH_RECORD"], "a", buffering=1)

        def receiver(sender, event, **kwargs):
            out.write(f"{time.monotonic_ns()} {event.pathname}\\n")

        signals.in_create.connect(receiver, weak=False)
"""

SETTINGS = """
import environ
env = environ.Env()
SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "inotifier",
                  "bench_receiver.apps.BenchReceiverConfig"]
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.float("BENCH_CONN_MAX_AGE", default=0)
INOTIFIER_HOSTNAME = env("INOTIFIER_HOSTNAME", default="bench")
INOTIFIER_PID_FILE = env("INOTIFIER_PID_FILE", default="/tmp/inotifier-bench-hosts.pid")
INOTIFIER_POLL_INTERVAL = env.float("INOTIFIER_POLL_INTERVAL", default=2.0)
INOTIFIER_LEASE_TIMEOUT = env.float("INOTIFIER_LEASE_TIMEOUT", default=30.0)
INOTIFIER_LISTEN_DATABASE = None if env.bool("BENCH_LISTEN", default=True) else False
INOTIFIER_DAEMON_STDERR = env("INOTIFIER_DAEMON_STDERR", default=None)
LOGGING_CONFIG = None
"""


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values``, interpolated."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Fleet:
    """Daemons of several hosts (real processes) and this process, on one scratch project and database."""

    def __init__(self, work: str, database_url: str) -> None:
        self.work = work
        self.database_url = database_url
        app = os.path.join(work, "bench_receiver")
        os.makedirs(app)
        open(os.path.join(app, "__init__.py"), "w").close()
        with open(os.path.join(app, "apps.py"), "w") as fh:
            fh.write(RECEIVER_APP)
        with open(os.path.join(work, "bench_hosts_settings.py"), "w") as fh:
            fh.write(SETTINGS)
        self.base_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([work, REPO]),
            "DJANGO_SETTINGS_MODULE": "bench_hosts_settings",
            "DATABASE_URL": database_url,
        }
        self.env: dict[str, dict[str, str]] = {}
        self.firsts: dict[tuple[str, str], int] = {}  # (host, directory) -> first event (ns)
        self._read: dict[str, tuple[int, str]] = {}  # host -> (offset read up to, partial line)
        self.manage({}, "migrate", "-v0")
        os.environ.update({k: v for k, v in self.base_env.items() if k != "PYTHONPATH"})
        sys.path[:0] = [work, REPO]
        import django

        django.setup()

    def manage(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env={**self.base_env, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args}: {result.stdout[-1000:]} {result.stderr[-2000:]}")
        return result

    def add(self, host: str, **settings: str) -> None:
        home = os.path.join(self.work, host)
        os.makedirs(home, exist_ok=True)
        record = os.path.join(home, "record.txt")
        open(record, "w").close()
        self.env[host] = {
            "INOTIFIER_HOSTNAME": host,
            "INOTIFIER_PID_FILE": os.path.join(home, "inotifier.pid"),
            "INOTIFIER_DAEMON_STDERR": os.path.join(home, "daemon.err"),
            "BENCH_RECORD": record,
            **settings,
        }

    def start(self, *hosts: str) -> None:
        for host in hosts or tuple(self.env):
            self.manage(self.env[host], "inotifier_start")

    def stop_all(self) -> None:
        for host, env in self.env.items():
            pid = self.pid(host)
            if pid is not None:
                try:
                    self.manage(env, "inotifier_stop")
                except RuntimeError:
                    os.kill(pid, signal.SIGKILL)

    def reset(self) -> None:
        """Stop every daemon and forget the hosts, the rows and what they reported."""
        from inotifier.models import DaemonStatus, WatchPath, WatchState

        self.stop_all()
        self.env = {}
        self.forget()
        WatchPath.objects.all().delete()
        WatchState.objects.all().delete()
        DaemonStatus.objects.all().delete()

    def pid(self, host: str) -> int | None:
        from inotifier.daemon.pidfile import running_pid

        return running_pid(self.env[host]["INOTIFIER_PID_FILE"])

    def first_event(self, host: str, directory: str) -> int | None:
        """Return the monotonic ns of ``host``'s first event under ``directory`` (records read once)."""
        record = self.env[host]["BENCH_RECORD"]
        offset, partial = self._read.get(host, (0, ""))
        with open(record) as fh:
            fh.seek(offset)
            text = partial + fh.read()
            offset = fh.tell()
        lines = text.split("\n")
        self._read[host] = (offset, lines.pop())
        for line in lines:
            stamp, _sp, path = line.partition(" ")
            self.firsts.setdefault((host, os.path.dirname(path)), int(stamp))
        return self.firsts.get((host, directory))

    def forget(self) -> None:
        """Forget what was read: the records were emptied."""
        self.firsts.clear()
        self._read.clear()


def reload_round(fleet: Fleet, directory: str, timeout: float) -> list[float]:
    """Save a row for ``directory``; return each host's ms from the save to its first event."""
    from inotifier.models import WatchPath

    os.mkdir(directory)
    started = time.monotonic_ns()
    WatchPath.objects.create(path=directory, mask=IN_CREATE, processor=SIGNALER)
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    i = 0
    while len(seen) < len(fleet.env):
        if time.monotonic() > deadline:
            missing = sorted(set(fleet.env) - set(seen))
            raise RuntimeError(f"no event from {missing} within {timeout} s")
        open(os.path.join(directory, f"p{i}"), "w").close()
        i += 1
        for host in fleet.env:
            if host not in seen and (stamp := fleet.first_event(host, directory)) is not None:
                seen[host] = stamp
        time.sleep(0.001)  # a file per ms: the measure's resolution, leaving the CPU to the daemons
    return [(stamp - started) / 1e6 for stamp in seen.values()]


def reload_bench(fleet: Fleet, daemons: int, rounds: int) -> dict[str, Any]:
    """Cross-host reload latency with ``daemons`` daemons: NOTIFY, then the poll alone."""
    results: dict[str, Any] = {"daemons": daemons, "rounds": rounds}
    for mode, settings in (
        ("notify", {"INOTIFIER_POLL_INTERVAL": "60", "BENCH_LISTEN": "true"}),
        ("poll", {"INOTIFIER_POLL_INTERVAL": "2", "BENCH_LISTEN": "false"}),
    ):
        watched = tempfile.mkdtemp(prefix="inotifier-bench-hosts-", dir="/dev/shm")
        try:
            for n in range(daemons):
                fleet.add(f"files-{n + 1}", **settings)
            fleet.start()
            reload_round(fleet, os.path.join(watched, "warm-up"), 30)
            latencies: list[float] = []
            for r in range(rounds):
                latencies += reload_round(fleet, os.path.join(watched, f"r{r}"), 30)
            results[mode] = {
                "p50_ms": round(percentile(latencies, 0.5), 1),
                "p95_ms": round(percentile(latencies, 0.95), 1),
                "max_ms": round(max(latencies), 1),
                "samples": len(latencies),
                "poll_interval_s": float(settings["INOTIFIER_POLL_INTERVAL"]),
            }
        finally:
            fleet.reset()
            shutil.rmtree(watched, ignore_errors=True)
    notify, poll = results["notify"], results["poll"]
    results["poll_over_notify_p50"] = round(poll["p50_ms"] / max(notify["p50_ms"], 0.1), 1)
    results["poll_over_notify_p95"] = round(poll["p95_ms"] / max(notify["p95_ms"], 0.1), 1)
    results["target_notify_p95_under_100ms"] = notify["p95_ms"] < 100
    return results


def failover_bench(fleet: Fleet, rounds: int, lease: float) -> dict[str, Any]:
    """Seconds from ``kill -9`` of an exclusive watch's holder to the other daemon's first event."""
    from inotifier.models import WatchPath

    watched = tempfile.mkdtemp(prefix="inotifier-bench-hosts-", dir="/dev/shm")
    stop = threading.Event()
    try:
        settings = {"INOTIFIER_POLL_INTERVAL": "60", "INOTIFIER_LEASE_TIMEOUT": str(lease)}
        fleet.add("files-1", **settings)
        fleet.add("files-2", **settings)
        WatchPath.objects.create(path=watched, mask=IN_CREATE, processor=SIGNALER, exclusive=True)
        fleet.start()

        def write() -> None:
            i = 0
            while not stop.wait(0.001):
                open(os.path.join(watched, f"f{i:08}"), "w").close()
                i += 1

        threading.Thread(target=write, daemon=True).start()
        times: list[float] = []
        for _round in range(rounds):
            holder = _holder(fleet, watched)
            other = next(h for h in fleet.env if h != holder)
            for host in fleet.env:  # a fresh record per round: "first event" means after the kill
                open(fleet.env[host]["BENCH_RECORD"], "w").close()
            fleet.forget()
            pid = fleet.pid(holder)
            assert pid is not None
            killed = time.monotonic_ns()
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + lease * 3 + 30
            while (first := fleet.first_event(other, watched)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{other} did not take over within {lease * 3 + 30} s")
                time.sleep(0.001)
            times.append((first - killed) / 1e9)
            while fleet.pid(holder) is not None:
                time.sleep(0.01)
            fleet.start(holder)  # back, as a candidate for the next round
        return {
            "lease_s": lease,
            "rounds": rounds,
            "failover_p50_s": round(statistics.median(times), 2),
            "failover_max_s": round(max(times), 2),
            "failover_over_lease_max": round(max(times) / lease, 2),
        }
    finally:
        stop.set()
        fleet.reset()
        shutil.rmtree(watched, ignore_errors=True)


def _holder(fleet: Fleet, directory: str, timeout: float = 60.0) -> str:
    from inotifier.models import WatchLease

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lease = WatchLease.objects.held().first()
        if lease is not None and fleet.first_event(lease.holder, directory) is not None:
            return lease.holder
        time.sleep(0.05)
    raise RuntimeError("nobody holds the exclusive watch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", choices=("reload", "failover", "all"), default="all")
    parser.add_argument("--daemons", type=int, default=5, help="reload: daemons (hosts)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 20 reloads, 5 failovers)")
    parser.add_argument("--lease", type=float, default=5.0, help="failover: INOTIFIER_LEASE_TIMEOUT")
    parser.add_argument(
        "--conn-max-age", type=float, default=0, help="the daemons' CONN_MAX_AGE (Django's default: 0)"
    )
    parser.add_argument("--pg-url", default=PG_SERVER)
    args = parser.parse_args()
    os.environ["BENCH_CONN_MAX_AGE"] = str(args.conn_max_age)
    from bench.contenders import project

    url = project._fresh_postgres(args.pg_url, PG_BENCH_DB)
    work = tempfile.mkdtemp(prefix="inotifier-bench-hosts-")
    fleet = Fleet(work, url)
    try:
        run(fleet, args)
    finally:
        fleet.reset()
        shutil.rmtree(work, ignore_errors=True)
        from django.db import connections

        connections.close_all()
        import psycopg

        with psycopg.connect(f"{args.pg_url.rpartition('/')[0]}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")


def run(fleet: Fleet, args: argparse.Namespace) -> None:
    """Run the scenarios asked for and print their tables and RESULT lines."""
    if args.scenario in ("reload", "all"):
        r = reload_bench(fleet, args.daemons, args.rounds or 20)
        print(
            f"cross-host reload, {r['daemons']} daemons, {r['notify']['samples']} samples per mode, "
            f"CONN_MAX_AGE {args.conn_max_age:g}"
        )
        print(f"  {'mode':8} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}  poll interval")
        for mode in ("notify", "poll"):
            m = r[mode]
            cells = f"{m['p50_ms']:9.1f} {m['p95_ms']:9.1f} {m['max_ms']:9.1f}"
            print(f"  {mode:8} {cells}  {m['poll_interval_s']:.0f} s")
        print(f"  poll / notify: p50 x{r['poll_over_notify_p50']}, p95 x{r['poll_over_notify_p95']}")
        verdict = "PASS" if r["target_notify_p95_under_100ms"] else "FAIL"
        print(f"  target: NOTIFY p95 < 100 ms with {r['daemons']} daemons and a 60 s poll: {verdict}")
        print("RESULT " + json.dumps({"scenario": "reload", **r}), flush=True)
    if args.scenario in ("failover", "all"):
        f = failover_bench(fleet, args.rounds or 5, args.lease)
        print(f"failover after kill -9 of the holder, lease {f['lease_s']} s, {f['rounds']} rounds")
        print(
            f"  p50 {f['failover_p50_s']} s, max {f['failover_max_s']} s "
            f"(max / lease = {f['failover_over_lease_max']})"
        )
        print("RESULT " + json.dumps({"scenario": "failover", **f}), flush=True)


if __name__ == "__main__":
    main()
