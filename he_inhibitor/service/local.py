"""A uvicorn server in a background thread on 127.0.0.1 and a free port (demo and tests).

It runs with the same settings as `he-inhibitor serve` (server.server_config:
connection cap, head timeout), so tests exercise what is deployed.

The socket is bound here (port 0: the kernel picks a free port) and handed to
uvicorn, so there is no window in which another process can take the port.
Leaving the context stops the server and joins its thread: nothing outlives it.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from he_inhibitor.service.server import server_config


class LocalServer:
    def __init__(self, app: FastAPI, host: str = "127.0.0.1", start_timeout_s: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(server_config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._timeout = start_timeout_s

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("the local server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
