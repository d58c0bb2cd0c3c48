"""A TCP proxy in front of PostgreSQL that a test can turn off and on (a database outage)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; ``down()`` cuts it, ``up()`` restores it.

    While down, every connection is closed at once (the client sees "server
    closed the connection unexpectedly") and the open ones are cut, as when the
    database restarts. The listening port never changes, so a client's URL
    stays valid across the outage.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.refused = 0
        self._up = True
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def url_for(self, database_url: str) -> str:
        """Return ``database_url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(database_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            self._up = False
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _kill(sock)

    def cut(self) -> None:
        """Cut the open connections and keep accepting new ones (a server-side idle timeout)."""
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _kill(sock)

    def up(self) -> None:
        """Forward connections again."""
        with self._lock:
            self._up = True

    def close(self) -> None:
        """Stop the proxy and cut everything."""
        self._closed = True
        self.down()
        self._thread.join(5)
        self.listener.close()

    def _accept_loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        while not self._closed:
            if not selector.select(0.05):
                continue
            try:
                client, _addr = self.listener.accept()
            except OSError:
                continue
            with self._lock:
                forwarding = self._up
            if not forwarding:
                self.refused += 1
                _kill(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _kill(client)
                continue
            self.accepted += 1
            with self._lock:
                self._sockets.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()
        selector.close()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _kill(src)
            _kill(dst)
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)


def _kill(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class NotificationDroppingProxy(TcpProxy):
    """A TcpProxy that drops PostgreSQL's NotificationResponse messages, as a pooler in transaction mode does.

    PgBouncer in ``pool_mode = transaction`` hands a client a server connection
    per transaction: the session that ran LISTEN is not the one it reads
    from, so notifications never reach it. Dropping every ``A`` message from
    the server gives a client that same view. Clients must not ask for TLS
    (``sslmode=disable``): the stream is then typed messages from the start.
    """

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            from_server = src.getpeername()[1] == self.upstream[1]
        except OSError:
            from_server = False
        if not from_server:
            super()._pipe(src, dst)
            return
        buffered = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buffered += data
                out = bytearray()
                while len(buffered) >= 5:
                    size = 1 + int.from_bytes(buffered[1:5], "big")
                    if len(buffered) < size:
                        break
                    message, buffered = buffered[:size], buffered[size:]
                    if message[:1] != b"A":  # NotificationResponse
                        out += message
                if out:
                    dst.sendall(bytes(out))
        except OSError:
            pass
        finally:
            _kill(src)
            _kill(dst)
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
