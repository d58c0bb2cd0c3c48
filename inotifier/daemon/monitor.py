"""What the world outside is told, on the loop's clock: systemd's watchdog, the watch limit, the metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..conf import MetricsConfig, app_settings
from ..escaping import get_logger
from .sample import Family, Sample
from .sampler import Sampler

logger = get_logger("inotifier.daemon.metrics")

#: Longest wait between two samples (and two checks of the kernel watch limit); shorter
#: when the poll interval is.
SAMPLE_SECONDS = 5.0


class Announcer(Protocol):
    """How systemd hears from the daemon (``runner.Hooks``)."""

    @property
    def notify(self) -> Callable[[str], None]: ...

    @property
    def watchdog(self) -> float | None: ...  # seconds between two "WATCHDOG=1"; None: none


class Exporter(Protocol):
    """Where the samples go (``exporter.PrometheusExporter``)."""

    def start(self) -> None: ...

    def publish(self, sample: Sample) -> None: ...

    def close(self, last: Sample) -> None: ...


class Monitor:
    """Run, from the loop, what tells the outside the daemon is alive and how it is doing.

    ``tick()`` is called by the loop when ``due``: it pings systemd's watchdog
    (``WATCHDOG=1`` every ``systemd.watchdog`` seconds, half of WatchdogSec=: a
    loop that is stuck stops pinging and systemd restarts it), checks the kernel
    watches against their limit and, when metrics are on, publishes a sample
    (every poll interval, at most SAMPLE_SECONDS).
    ``sources`` are functions other parts add to give families of their own.
    """

    def __init__(self, sampler: Sampler, config: MetricsConfig, host: str, systemd: Announcer) -> None:
        self.sampler = sampler
        self.notify = systemd.notify
        self.watchdog = watchdog = systemd.watchdog
        self.period = max(0.05, min(SAMPLE_SECONDS, float(app_settings.INOTIFIER_POLL_INTERVAL)))
        self.exporter: Exporter | None = None
        if config.enabled:
            from .exporter import PrometheusExporter

            self.exporter = PrometheusExporter(config, host)
        self.sources: list[Callable[[], Iterable[Family]]] = []
        self.next_sample = 0.0
        self.next_ping = 0.0 if watchdog else math.inf

    @property
    def due(self) -> float:
        """Return the ``time.monotonic()`` at which ``tick()`` has something to do."""
        return min(self.next_sample, self.next_ping)

    def start(self) -> None:
        """Start the exporters and take the first sample (the watches are in place)."""
        if self.exporter is not None:
            self.exporter.start()
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Do what is due at ``now``: the watchdog's ping, the limit check, a sample."""
        if now >= self.next_ping:
            self.alive(now)
        if now >= self.next_sample:
            self.next_sample = now + self.period
            self.sampler.check()
            if self.exporter is not None:
                self.exporter.publish(self._take())

    def alive(self, now: float | None = None) -> None:
        """Tell systemd's watchdog the loop is alive (also during a long set-up, at each progress)."""
        if self.watchdog is None:
            return
        self.next_ping = (time.monotonic() if now is None else now) + self.watchdog
        self.notify("WATCHDOG=1")

    def reconciled(self, seconds: float) -> None:
        """Count one reconcile that took ``seconds``."""
        self.sampler.reconciles.observe(seconds)

    def close(self) -> None:
        """Publish the last sample (``inotifier_up`` 0) and stop the exporters."""
        if self.exporter is not None:
            self.exporter.close(self._take(up=False))
            self.exporter = None

    def _take(self, up: bool = True) -> Sample:
        extra: list[Family] = []
        for source in self.sources:
            try:
                extra.extend(source())
            except Exception:
                logger.exception("metrics: the source %r failed; its figures are left out", source)
        return self.sampler.take(up, tuple(extra))
