"""The web app served by uvicorn in a thread of ``larc serve``."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

logger = logging.getLogger(__name__)


class WebServer:
    """uvicorn in a daemon thread; :meth:`start` waits until it listens (or raises)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # request lines hold patient ids (search); never logged
            lifespan="off",
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port bound (useful when 0 was asked for)."""
        if self._socket is not None:
            return int(self._socket.getsockname()[1])
        return int(self._server.config.port)

    def start(self, timeout_s: float = 20.0) -> None:
        """Bind here (so a taken port is an ``OSError`` now, naming the address), then serve
        in a thread."""
        port = int(self._server.config.port)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"the web app could not listen on {self.host}:{port} ({exc.strerror}): set "
                "web.port, or web.enabled: false"
            ) from exc
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="web", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the web app did not start on {self.host}:{port}")
            time.sleep(0.05)
        logger.info("web worklist on http://%s:%d/", self.host, self.port)

    def stop(self) -> None:
        """Stop serving (open requests get a few seconds)."""
        self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
