"""The web app served by uvicorn in a thread of ``larc serve``."""

from __future__ import annotations

import logging
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
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    @property
    def port(self) -> int:
        """The port bound (useful when 0 was asked for)."""
        servers = getattr(self._server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    def start(self, timeout_s: float = 20.0) -> None:
        """Serve; ``OSError`` when the port cannot be bound."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(
                    f"the web app could not listen on {self.host}:{self._server.config.port} "
                    "(port in use?): set web.port or web.enabled: false"
                )
            time.sleep(0.05)
        logger.info("web worklist on http://%s:%d/", self.host, self.port)

    def stop(self) -> None:
        """Stop serving (open requests get a few seconds)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
