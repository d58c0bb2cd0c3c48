"""A sample as Prometheus text: the daemon's families through prometheus_client, the per-watch series cached.

With thousands of watches, the per-watch series are nearly all of the text,
and prometheus_client formats about 50 000 lines a second: 10 000 watches
would hold the GIL for about a second per scrape, taken from the loop. Here
each watch's lines are rendered once and kept until its figures change, so a
scrape costs about a microsecond per idle watch (bench/metrics_cost.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..escaping import printable
from ..masks import IN_ISDIR, event_maskname
from ..states import State
from .sample import Sample, WatchFigures

EVENTS_HELP = "Events delivered to each watch's processor, by event type."
ERRORS_HELP = "Events whose processor (or a receiver) raised, by watch."


def label(value: str) -> str:
    """Return ``value`` escaped as a label value of the text format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def type_name(mask: int) -> str:
    """Return the event type of ``mask`` without IN_ISDIR: files and directories count together."""
    return event_maskname(mask & ~IN_ISDIR or mask)


def families(sample: Sample, host: str) -> Iterator[Metric]:
    """Yield the daemon's own families (all but the per-watch series), labelled with its ``host``."""

    def gauge(name: str, doc: str, value: float | None) -> Metric:
        family = GaugeMetricFamily(name, doc, labels=["host"])
        if value is not None:
            family.add_metric([host], float(value))
        return family

    def counter(name: str, doc: str, value: float) -> Metric:
        family = CounterMetricFamily(name, doc, labels=["host"])
        family.add_metric([host], float(value))
        return family

    yield gauge(
        "inotifier_up", "1 while the daemon runs; 0 in the last figures, written as it stops.", sample.up
    )
    yield gauge("inotifier_start_time_seconds", "When the daemon started (Unix time).", sample.started)
    yield gauge(
        "inotifier_sample_timestamp_seconds",
        "When the daemon's loop took these figures (Unix time); it stops moving if the loop is stuck.",
        sample.taken,
    )
    db = sample.database
    if db is not None:
        yield gauge("inotifier_database_up", "0 while the daemon cannot reach the database.", db.up)
        yield gauge(
            "inotifier_heartbeat_timestamp_seconds",
            "When the daemon last wrote its status to the database (Unix time; 0: not yet).",
            db.heartbeat,
        )
        yield gauge(
            "inotifier_config_version",
            "The configuration version (ConfigVersion) as the daemon last read it.",
            db.version,
        )
        yield gauge(
            "inotifier_config_version_applied",
            "The configuration version whose watches are in place.",
            db.version_applied,
        )
    kernel = sample.kernel
    yield gauge("inotifier_kernel_watches", "Kernel inotify watches this daemon holds.", kernel.watches)
    limit = GaugeMetricFamily(
        "inotifier_kernel_watches_limit",
        "The inotify watch limit in force (per user), and the sysctl that sets it.",
        labels=["host", "sysctl"],
    )
    if kernel.limit is not None:
        limit.add_metric([host, kernel.limit_name], kernel.limit)
    yield limit
    queue = sample.queue
    yield gauge("inotifier_queue_bytes", "Raw events read from the kernel, not yet routed.", queue.bytes)
    yield gauge(
        "inotifier_queue_peak_bytes", "The most raw events held at once since the start.", queue.peak_bytes
    )
    yield gauge(
        "inotifier_queue_limit_bytes",
        "Bytes of raw events the daemon holds before it leaves them in the kernel's queue.",
        queue.limit_bytes,
    )
    yield gauge("inotifier_queued_events", "Events routed to a watch and waiting for its turn.", queue.events)
    yield counter(
        "inotifier_overflows", "Kernel queue overflows (IN_Q_OVERFLOW): events were lost.", sample.overflows
    )
    yield counter(
        "inotifier_rescans", "Scans of the watched trees for changes no event reported.", sample.rescans
    )
    yield counter(
        "inotifier_catchup_events",
        "Events the catch-ups delivered (synthetic: what changed while no watch saw it).",
        sample.catchup_events,
    )
    timing = sample.reconciles
    reconciles = HistogramMetricFamily(
        "inotifier_reconcile_duration_seconds",
        "How long each reconcile of the watches with their configuration took.",
        labels=["host"],
    )
    buckets = [(floatToGoString(b), c) for b, c in zip(timing.bounds, timing.cumulative, strict=False)]
    reconciles.add_metric([host], [*buckets, ("+Inf", timing.observed)], timing.sum)
    yield reconciles
    states = dict.fromkeys(State.values, 0)
    for w in sample.watches:
        if w.state in states:
            states[w.state] += 1
    watches = GaugeMetricFamily("inotifier_watches", "Watches by state.", labels=["host", "state"])
    for state, n in states.items():
        watches.add_metric([host, state], n)
    yield watches
    log = sample.log
    if log is not None:
        for name, doc, value in (
            ("written", "Event log rows written to the database.", log.written),
            ("dropped", "Event log rows dropped because the buffer was full.", log.dropped),
            ("rejected", "Event log rows the database refused.", log.rejected),
            ("lost", "Event log rows lost with a writer that stopped or died.", log.lost),
            ("pruned", "Old event log rows deleted by the retention.", log.pruned),
        ):
            yield counter(f"inotifier_eventlog_rows_{name}", doc, value)
        yield gauge("inotifier_eventlog_rows_pending", "Event log rows waiting to be written.", log.pending)
    # Families other parts add (the outbox of issue 13: inotifier_outbox_pending / _dead).
    for extra in sample.extra:
        kind = CounterMetricFamily if extra.kind == "counter" else GaugeMetricFamily
        family = kind(extra.name, extra.help, labels=["host", *extra.labels])
        for values, amount in extra.samples:
            family.add_metric([host, *(printable(v) for v in values)], amount)
        yield family


class WatchSeries:
    """Render ``inotifier_events_total`` and ``inotifier_processor_errors_total``, one watch at a time.

    A watch's lines are kept with the figures they show and rendered again only
    when those change; watches that are gone are forgotten at the next render.
    Not thread-safe: ``Exposition`` renders under its lock.
    """

    def __init__(self, host: str) -> None:
        self.host = label(host)
        self._lines: dict[str, tuple[WatchFigures, str, str]] = {}

    def render(self, watches: tuple[WatchFigures, ...]) -> str:
        """Return the two families' text for ``watches``."""
        kept = self._lines
        fresh: dict[str, tuple[WatchFigures, str, str]] = {}
        events: list[str] = []
        errors: list[str] = []
        for w in watches:
            entry = kept.get(w.key)
            if entry is None or (entry[0] is not w and entry[0] != w):
                entry = (w, *self._render(w))
            fresh[w.key] = entry
            events.append(entry[1])
            errors.append(entry[2])
        self._lines = fresh
        return (
            f"# HELP inotifier_events_total {EVENTS_HELP}\n# TYPE inotifier_events_total counter\n"
            + "".join(events)
            + f"# HELP inotifier_processor_errors_total {ERRORS_HELP}\n"
            + "# TYPE inotifier_processor_errors_total counter\n"
            + "".join(errors)
        )

    def _render(self, w: WatchFigures) -> tuple[str, str]:
        labels = f'host="{self.host}",path="{label(w.path)}",watch="{label(w.key)}"'
        by_type: dict[str, int] = {}
        for mask, n in w.events:
            name = type_name(mask)
            by_type[name] = by_type.get(name, 0) + n
        events = "".join(
            f'inotifier_events_total{{{labels},type="{name}"}} {n}\n' for name, n in sorted(by_type.items())
        )
        return events, f"inotifier_processor_errors_total{{{labels}}} {w.errors}\n"


class Exposition:
    """The text a scrape (or the textfile) gets for the last published sample.

    The loop publishes samples; readers (the server's threads, the textfile
    writer) render under a lock, once per sample and kind of reader.
    """

    def __init__(self, host: str, process: CollectorRegistry | None = None) -> None:
        self.host = printable(host)
        self.sample: Sample | None = None  # replaced whole by the loop
        self.process = process  # the process's own figures, for the HTTP scrape only
        self._series = WatchSeries(self.host)
        self._lock = threading.Lock()
        self._rendered: tuple[Sample | None, bool, bytes] = (None, False, b"")

    def text(self, with_process: bool = False) -> bytes:
        """Return the exposition of the last sample (empty before the first)."""
        sample = self.sample
        if sample is None:
            return b""
        with self._lock:
            done_for, done_with_process, body = self._rendered
            if done_for is sample and done_with_process == with_process:
                return body
            registry = CollectorRegistry()
            registry.register(_Families(sample, self.host))
            parts = [generate_latest(registry), self._series.render(sample.watches).encode()]
            if with_process and self.process is not None:
                parts.append(generate_latest(self.process))
            body = b"".join(parts)
            self._rendered = (sample, with_process, body)
            return body


class _Families:
    """A one-off prometheus_client collector of one sample's own families."""

    def __init__(self, sample: Sample, host: str) -> None:
        self.sample = sample
        self.host = host

    def collect(self) -> Iterator[Metric]:
        return families(self.sample, self.host)
