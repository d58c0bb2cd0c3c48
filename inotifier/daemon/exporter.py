"""The metrics published: served over HTTP and/or written to a file for node_exporter.

Imported only when INOTIFIER_METRICS_PORT or INOTIFIER_METRICS_TEXTFILE is set:
the daemon runs without prometheus_client otherwise. Nothing here touches the
daemon's live parts: what is served is the ``Sample`` the loop last published.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from ..conf import MetricsConfig
from ..escaping import get_logger
from .exposition import Exposition
from .sample import Sample

logger = get_logger("inotifier.daemon.metrics")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log no line per scrape."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the daemon's stop


class MetricsServer:
    """Serve the exposition on ``address:port`` (any path: /metrics is the usual one) from a thread.

    Built on the standard library's WSGI server, as prometheus_client's own
    is, but serving the exposition's cached text.
    """

    def __init__(self, exposition: Exposition, address: str, port: int) -> None:
        self.exposition = exposition
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server_class = type("Server", (_Server,), {"address_family": family})
        self.httpd: WSGIServer = make_server(str(sockaddr[0]), port, self.app, server_class, _Quiet)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="inotifier-metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = self.exposition.text(with_process=True)
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4), ("Content-Length", str(len(body)))]
        )
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TextfileWriter(threading.Thread):
    """Write the exposition to a file for node_exporter, off the loop: at each wake, then once at the end.

    Written to a temporary file beside it and renamed over it, so node_exporter
    never reads half a file. A failure is logged once until a write succeeds again.
    """

    def __init__(self, path: str, exposition: Exposition) -> None:
        super().__init__(name="inotifier-metrics-textfile", daemon=True)
        self.path = path
        self.exposition = exposition
        self.wake = threading.Event()
        self.stopping = False
        self.failing = False

    def run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping:
                return
            self.write()

    def write(self) -> None:
        # Not *.prom, so node_exporter skips it; one per thread (the last write is the loop's).
        temporary = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(temporary, "wb") as fh:
                fh.write(self.exposition.text())
            os.replace(temporary, self.path)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            if not self.failing:
                self.failing = True
                logger.error(
                    "metrics: cannot write INOTIFIER_METRICS_TEXTFILE %r: %s; tried again with every sample",
                    self.path,
                    exc.strerror or exc,
                )
            return
        if self.failing:
            self.failing = False
            logger.warning("metrics: %r written again", self.path)

    def stop(self) -> None:
        """End the thread (the last write is the caller's)."""
        self.stopping = True
        self.wake.set()
        if self.is_alive():
            self.join(5.0)


class PrometheusExporter:
    """Publish the loop's samples: an HTTP server (INOTIFIER_METRICS_PORT) and/or a textfile.

    A port that cannot be bound is one ERROR; the daemon goes on without it.
    """

    def __init__(self, config: MetricsConfig, host: str) -> None:
        self.config = config
        # The process's own figures (memory, CPU, descriptors) too, over HTTP only: in a
        # textfile they would clash with those of another daemon on the same machine.
        process = CollectorRegistry()
        ProcessCollector(registry=process)
        self.exposition = Exposition(host, process)
        self.server: MetricsServer | None = None
        self.textfile: TextfileWriter | None = None

    @property
    def port(self) -> int | None:
        """Return the port the metrics are served on (None: not served)."""
        return self.server.port if self.server is not None else None

    def start(self) -> None:
        """Start serving and writing (the first sample is published right after)."""
        config = self.config
        if config.port is not None:
            try:
                self.server = MetricsServer(self.exposition, config.address, config.port)
            except OSError as exc:
                logger.error(
                    "metrics: cannot serve on %s port %s (INOTIFIER_METRICS_ADDRESS / _PORT): %s; "
                    "the daemon goes on without its HTTP metrics",
                    config.address,
                    config.port,
                    exc.strerror or exc,
                )
            else:
                self.server.start()
                address = f"[{config.address}]" if ":" in config.address else config.address
                logger.info("metrics served on http://%s:%d/metrics", address, self.server.port)
        if config.textfile is not None:
            self.textfile = TextfileWriter(config.textfile, self.exposition)
            self.textfile.start()

    def publish(self, sample: Sample) -> None:
        """Make ``sample`` what a scrape sees; have the textfile written again."""
        self.exposition.sample = sample
        if self.textfile is not None:
            self.textfile.wake.set()

    def close(self, last: Sample) -> None:
        """Publish the last sample (``inotifier_up`` 0), write the textfile once more, stop serving."""
        self.exposition.sample = last
        if self.textfile is not None:
            self.textfile.stop()
            self.textfile.write()
        if self.server is not None:
            self.server.close()
            self.server = None
