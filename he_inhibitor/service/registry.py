"""The server's only state: registered evaluation keys and evaluations paused at a refresh.

Both are bounded so no client can grow the server without limit:
- KeyRegistry: least-recently-used eviction beyond `max_keys` contexts or
  `max_bytes` of serialized keys; an evicted key id answers 404 and the client
  registers again. Key ids are content hashes, so registering the same context
  twice is idempotent.
- JobTable: at most `max_jobs` evaluations waiting for a client's refresh,
  each dropped `ttl_s` after it paused; a full table answers 503. A job is
  taken out of the table while it runs, so a duplicate continuation is a 404
  rather than a race on one generator.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from he_inhibitor.ckks import PublicContext
from he_inhibitor.service.evaluate import CircuitEvaluator, Evaluation
from he_inhibitor.service.protocol import key_id_of
from he_inhibitor.service.validate import Busy, UnknownJob, UnknownKey


class KeyRegistry:
    def __init__(self, factory: Callable[[PublicContext], CircuitEvaluator], max_keys: int, max_bytes: int) -> None:
        self._factory = factory
        self._max_keys, self._max_bytes = max_keys, max_bytes
        self._entries: OrderedDict[str, CircuitEvaluator] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, public: PublicContext) -> str:
        kid = key_id_of(public.to_bytes())
        with self._lock:
            if kid in self._entries:
                self._entries.move_to_end(kid)
                return kid
        evaluator = self._factory(public)  # outside the lock: builds SEAL objects
        with self._lock:
            self._entries[kid] = evaluator
            self._entries.move_to_end(kid)
            while len(self._entries) > self._max_keys or (len(self._entries) > 1 and self.nbytes > self._max_bytes):
                self._entries.popitem(last=False)
        return kid

    def get(self, kid: str | None) -> CircuitEvaluator:
        with self._lock:
            if kid not in self._entries:
                raise UnknownKey(f"unknown key id {kid!r} (never registered, or evicted): register the context again")
            self._entries.move_to_end(kid)
            return self._entries[kid]

    @property
    def nbytes(self) -> int:
        return sum(len(e.public.to_bytes()) for e in self._entries.values())

    def stored(self) -> list[PublicContext]:
        """Every context held (for health reports and for tests that audit what is kept)."""
        with self._lock:
            return [e.public for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Job:
    """A paused evaluation and the keys it runs with (kept even if the registry evicts them)."""

    evaluation: Evaluation
    evaluator: CircuitEvaluator
    deadline: float = 0.0


class JobTable:
    def __init__(self, max_jobs: int, ttl_s: float) -> None:
        self._max_jobs, self._ttl_s = max_jobs, ttl_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        for jid in [j for j, job in self._jobs.items() if job.deadline < now]:
            self._jobs.pop(jid).evaluation.close()

    def park(self, job: Job, jid: str | None = None) -> str:
        """Hold a paused evaluation until the client's refresh arrives; returns its (new) job id."""
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            if len(self._jobs) >= self._max_jobs:
                job.evaluation.close()
                raise Busy(f"{self._max_jobs} evaluations already await a refresh; retry later")
            jid = jid or secrets.token_urlsafe(16)
            job.deadline = now + self._ttl_s
            self._jobs[jid] = job
            return jid

    def take(self, jid: str) -> Job:
        with self._lock:
            self._purge(time.monotonic())
            if jid not in self._jobs:
                raise UnknownJob(f"no evaluation {jid!r} awaits a refresh (finished, expired or never started)")
            return self._jobs.pop(jid)

    def __len__(self) -> int:
        return len(self._jobs)
