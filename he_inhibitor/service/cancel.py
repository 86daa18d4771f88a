"""Cancelling an evaluation between two circuit operations, from another thread.

An evaluation runs in a pool thread for seconds to minutes; when its client
disconnects, the work is worth nothing. The server runs each evaluation step
inside `scope(event)`; its `CircuitEvaluator`s (circuit/evaluation.py) call
`checkpoint()` before every operation, which raises `Cancelled` once the event is set, so the
thread is free again within one SEAL operation and the evaluation is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


class Cancelled(Exception):
    """The evaluation's client went away; its work was stopped."""


@contextmanager
def scope(event: threading.Event) -> Iterator[None]:
    """Run the enclosed evaluation step cancellable through `event` (this thread only)."""
    previous = getattr(_local, "event", None)
    _local.event = event
    try:
        yield
    finally:
        _local.event = previous


def checkpoint() -> None:
    """Raise Cancelled if the evaluation running in this thread was cancelled."""
    event = getattr(_local, "event", None)
    if event is not None and event.is_set():
        raise Cancelled("the client disconnected")
