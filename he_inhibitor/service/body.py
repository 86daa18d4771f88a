"""Reading a request body as it arrives: a hard cap, timeouts, and parsing from the first bytes.

A body is never buffered whole before it is checked. The server reads it
field by field (`exactly(n)`), so a wrong magic, header or part count is
refused after the few bytes that show it, and a body larger than the cap
(declared in Content-Length or streamed) after at most the cap. A client that
stops sending is cut off: each chunk must arrive within `idle_s` of the last
and the whole body by `deadline` (monotonic seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from he_inhibitor.service.validate import Malformed, RequestError, TooLarge


class SlowBody(RequestError):
    status = 408
    code = "body_timeout"


class BodyReader:
    """Pulls a body from an async chunk iterator on demand, never more than `cap` bytes in all."""

    def __init__(self, chunks: AsyncIterator[bytes], cap: int, idle_s: float, deadline: float) -> None:
        self._chunks = chunks
        self._cap, self._idle_s, self._deadline = cap, idle_s, deadline
        self._buf = bytearray()
        self._received = 0
        self._eof = False

    @property
    def received(self) -> int:
        return self._received

    async def _pull(self) -> bool:
        """One more chunk into the buffer; False at the end of the body."""
        if self._eof:
            return False
        wait = min(self._idle_s, self._deadline - time.monotonic())
        if wait <= 0:
            raise SlowBody("the body did not arrive in time")
        try:
            chunk = await asyncio.wait_for(anext(self._chunks), wait)
        except StopAsyncIteration:
            self._eof = True
            return False
        except asyncio.TimeoutError:
            raise SlowBody(f"no body bytes for {wait:.0f} s") from None
        self._received += len(chunk)
        if self._received > self._cap:
            raise TooLarge(f"body exceeds the limit of {self._cap} bytes")
        self._buf += chunk
        return True

    async def exactly(self, n: int, what: str) -> bytes:
        """The next n bytes; Malformed if the body ends first, TooLarge if they would pass the cap."""
        if n > self._cap:
            raise TooLarge(f"{what} of {n} bytes exceeds the limit of {self._cap}")
        while len(self._buf) < n:
            if not await self._pull():
                raise Malformed(f"body truncated in {what}")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def at_end(self) -> bool:
        """True when nothing is left; reads one more non-empty chunk at most to find out."""
        while not self._buf:
            if not await self._pull():
                return True
        return False
