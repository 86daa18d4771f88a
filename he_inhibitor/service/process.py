"""`he-inhibitor serve` in a subprocess on 127.0.0.1: what the benchmarks that go through real HTTP start.

The server gets a free loopback port; its stderr goes to a temporary file
(a pipe nobody reads could fill up and stall it) and is quoted when it exits
early. Memory figures are read from /proc for the server process itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


class ServeProcess:
    """`he-inhibitor serve --host 127.0.0.1 --port P` plus `flags`, up (its health answers) on enter,
    terminated on exit."""

    def __init__(self, flags: list[str], start_timeout_s: float = 300.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "he_inhibitor.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                    *flags]
        self.start_timeout_s = start_timeout_s
        self._stderr = tempfile.TemporaryFile()
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not started"
        return self.process.pid

    def __enter__(self) -> "ServeProcess":
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                self._stderr.seek(0)
                tail = self._stderr.read().decode(errors="replace")[-2000:]
                self._stderr.close()
                raise RuntimeError(f"the server ({' '.join(self.cmd[3:])}) exited: {tail}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the server did not come up within {self.start_timeout_s:.0f} s")
            time.sleep(0.5)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._stderr.close()


def status_bytes(pid: int, field_name: str) -> int:
    """A memory field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes; 0 where absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return 0
