"""Is every daemon that should run running? One answer for the health view and ``inotifier_status --json``.

A host should have a running daemon when a daemon has ever reported from it
(its ``DaemonStatus`` row: delete the row of a host you decommission) or when
an enabled ``WatchPath`` names it. Such a host is healthy when its daemon is
alive (it says it runs, and its heartbeat is recent) and has applied the
current configuration, or the configuration changed too recently to expect
it. The whole site is healthy when every such host is, and there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from django.db.models import Subquery
from django.utils import timezone

from .models import ConfigVersion, DaemonStatus, WatchPath, heartbeat_limit

#: One host's answer, ready for ``json.dumps``.
HostJSON = dict[str, str | int | float | bool | None]


class HealthJSON(TypedDict):
    """The whole answer, ready for ``json.dumps``."""

    healthy: bool
    config_version: int
    hosts: list[HostJSON]


class Problem:
    """Why a host is not healthy (the ``problem`` of the JSON answers)."""

    NEVER_REPORTED = "never_reported"  # an enabled WatchPath names it, no daemon ever reported
    STOPPED = "stopped"  # its daemon recorded its stop
    NO_HEARTBEAT = "no_heartbeat"  # it says it runs, but wrote no heartbeat for heartbeat_limit()
    BEHIND = "behind"  # alive, with an older configuration than the current one for too long
    NOT_RUNNING = "not_running"  # (inotifier_status --json, on its own host) no process holds the pid file


@dataclass(frozen=True)
class HostHealth:
    """One host's answer; ``daemon`` is its status row (None: it never reported)."""

    host: str
    problem: str  # "" when healthy
    heartbeat_age: float | None
    version_lag: int | None
    daemon: DaemonStatus | None

    @property
    def healthy(self) -> bool:
        return not self.problem

    @property
    def alive(self) -> bool:
        return self.problem in ("", Problem.BEHIND)


@dataclass(frozen=True)
class Health:
    """The answer for the whole site (or one host): healthy when every host is, and there is one."""

    config_version: int
    hosts: list[HostHealth]

    @property
    def healthy(self) -> bool:
        return bool(self.hosts) and all(h.healthy for h in self.hosts)


def assess(host: str | None = None, now: datetime | None = None) -> Health:
    """Return the health of every host that should run a daemon (or of ``host`` only).

    Two queries: the daemons' rows (with the configuration counter as a
    subquery), and the hosts enabled watches name.
    """
    now = now or timezone.now()
    counter = ConfigVersion.objects.filter(pk=1)
    daemons = DaemonStatus.objects.annotate(
        current_version=Subquery(counter.values("version")[:1]),
        version_changed=Subquery(counter.values("changed")[:1]),
    )
    named = WatchPath.objects.filter(enabled=True).exclude(host="")
    if host is not None:
        daemons = daemons.filter(host=host)
        named = named.filter(host=host)
    rows = list(daemons)
    if rows:
        current = int(getattr(rows[0], "current_version", None) or 0)
        changed = getattr(rows[0], "version_changed", None)
    else:
        current, changed = ConfigVersion.current(), None
    # Seconds since the configuration last changed: a daemon is "behind" only once it had time.
    settled = changed is None or (now - changed).total_seconds() >= heartbeat_limit()
    hosts = [_host_health(d, current, settled, now) for d in rows]
    known = {d.host for d in rows}
    for name in sorted(set(named.values_list("host", flat=True)) - known):
        hosts.append(HostHealth(name, Problem.NEVER_REPORTED, None, None, None))
    if host is not None and not hosts:
        hosts.append(HostHealth(host, Problem.NEVER_REPORTED, None, None, None))
    return Health(current, hosts)


def _host_health(daemon: DaemonStatus, current: int, settled: bool, now: datetime) -> HostHealth:
    age = (now - daemon.heartbeat).total_seconds() if daemon.heartbeat else None
    lag = max(0, current - daemon.version_applied)
    if not daemon.running:
        problem = Problem.STOPPED
    elif age is None or age >= heartbeat_limit():
        problem = Problem.NO_HEARTBEAT
    elif lag and settled:
        problem = Problem.BEHIND
    else:
        problem = ""
    return HostHealth(daemon.host, problem, age, lag, daemon)


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def host_json(h: HostHealth, detail: bool) -> HostJSON:
    """Return one host's answer as JSON-ready data; ``detail`` adds the daemon's pid and counters."""
    data: HostJSON = {
        "host": h.host,
        "healthy": h.healthy,
        "problem": h.problem,
        "alive": h.alive,
        "heartbeat_age_seconds": round(h.heartbeat_age, 1) if h.heartbeat_age is not None else None,
        "version_lag": h.version_lag,
    }
    d = h.daemon
    if detail and d is not None:
        data.update(
            {
                "running": d.running,
                "pid": d.pid if d.running else None,
                "started": _when(d.started),
                "heartbeat": _when(d.heartbeat),
                "version_applied": d.version_applied,
                "kernel_watches": d.kernel_watches,
                "kernel_watch_limit": d.kernel_watch_limit,
                "kernel_watch_limit_sysctl": d.kernel_watch_limit_name or None,
                "near_kernel_watch_limit": d.near_watch_limit(),
                "events": d.events,
                "processor_errors": d.errors,
                "overflows": d.overflows,
                "queue_peak_bytes": d.queue_peak,
                "event_log_rows_dropped": d.log_dropped,
                "progress": d.progress,
                "message": d.message,
            }
        )
    return data


def health_json(health: Health, detail: bool) -> HealthJSON:
    """Return the whole answer as JSON-ready data."""
    return {
        "healthy": health.healthy,
        "config_version": health.config_version,
        "hosts": [host_json(h, detail) for h in health.hosts],
    }
