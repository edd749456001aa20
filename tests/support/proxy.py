"""A TCP proxy for the tests: a real server behind it, and the network faults the tests need in between.

- :meth:`TcpProxy.cut` drops every connection and refuses new ones (the server is down), and
  :meth:`TcpProxy.restore` lets them through again (it is back, with its data);
- :meth:`TcpProxy.hold` stalls a connection as soon as its client sends bytes containing a pattern, so a
  test can act at a precise point of a process's work (kill it between two calls, say).
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

CHUNK = 65536


class TcpProxy:
    def __init__(self, upstream: tuple[str, int] | str) -> None:
        """``upstream``: ``(host, port)``, or the path of a unix socket."""
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.down = False
        self.pattern: bytes | None = None
        self.held = threading.Event()  # a client sent the pattern; its bytes wait
        self.let_go = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """The server goes away: open connections are dropped, new ones closed at once."""
        with self.lock:
            self.down = True
            for connection in self.connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def restore(self) -> None:
        with self.lock:
            self.down = False

    def hold(self, pattern: bytes) -> None:
        """Stall the next connection whose client sends ``pattern`` (before forwarding those bytes)."""
        self.held.clear()
        self.let_go.clear()
        self.pattern = pattern

    def release(self) -> None:
        self.pattern = None
        self.let_go.set()

    def close(self) -> None:
        self.release()
        self.cut()
        with suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.down:
                    client.close()
                    continue
                try:
                    server = self._connect_upstream()
                except OSError:
                    client.close()
                    continue
                self.connections.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            return server
        return socket.create_connection(self.upstream)

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(CHUNK):
                if from_client and self.pattern is not None and self.pattern in data:
                    self.held.set()
                    self.let_go.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    end.close()
            with self.lock:
                self.connections.discard(source)
                self.connections.discard(target)
