"""The server's only state, bounded by what it really costs: key sets, evaluations, and the bytes they hold.

- MemoryBudget: one account of client-driven memory. Key sets are charged
  what SEAL holds for them in memory (estimated from the parameters: about
  4x their seeded, compressed wire size), evaluations their live
  ciphertexts, bodies their bytes while they are read. A charge that does not
  fit first evicts least recently used key sets that no evaluation uses;
  when that is not enough the request gets 503 and nothing was started.
- KeyRegistry: at most `max_keys` key sets under canonical ids (a hash of the
  key material: the same keys always have one id, so re-sending them costs
  nothing and cannot evict anyone). A key set in use by a running or paused
  evaluation is never evicted, and those evaluations count against it.
- JobTable: evaluations paused at a refresh round trip, at most `max_jobs`
  running or paused in all and `max_jobs_per_key` per key set; each paused
  evaluation expires `ttl_s` after it paused, and a bad refresh body puts it
  back with the same deadline. A job is taken out of the table while it
  runs, so a duplicate continuation is a 404 rather than a race on one
  generator. Expired jobs are closed and release their charge.
- RateLimit: evaluations per minute, per key set (and per token).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from he_inhibitor.ckks import PublicContext
from he_inhibitor.circuit.evaluation import CircuitEvaluator, Evaluation
from he_inhibitor.service.protocol import Signature
from he_inhibitor.service.validate import Busy, RequestError, UnknownJob, UnknownKey


class OverQuota(RequestError):
    """A per-key or per-token limit; retry after the time in Retry-After."""

    status = 429
    code = "over_quota"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Reservation:
    """Bytes charged to a MemoryBudget until released (idempotent)."""

    def __init__(self, budget: "MemoryBudget", nbytes: int) -> None:
        self.budget, self.nbytes = budget, nbytes

    def release(self) -> None:
        if self.nbytes:
            self.budget._give_back(self.nbytes)
            self.nbytes = 0


class MemoryBudget:
    """Client-driven memory, charged before it is allocated; `evict` frees key sets on demand."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = threading.Lock()
        self.evict: Callable[[int], None] = lambda nbytes: None

    def reserve(self, nbytes: int, what: str) -> Reservation:
        """Charge nbytes (evicting idle key sets if needed) or raise Busy; nothing is charged on failure."""
        for attempt in range(2):
            with self._lock:
                if self.used + nbytes <= self.total:
                    self.used += nbytes
                    return Reservation(self, nbytes)
                short = self.used + nbytes - self.total
            if attempt == 0:
                self.evict(short)
        raise Busy(f"{what} needs {nbytes / 1e6:.0f} MB; the server's memory budget "
                   f"({self.total / 1e6:.0f} MB) is held by work in progress")

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class RateLimit:
    """At most `per_minute` events in any 60 s window."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, what: str) -> None:
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - 60.0:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                raise OverQuota(f"{what}: at most {self.per_minute} evaluations a minute",
                                math.ceil(self._times[0] + 60.0 - now))
            self._times.append(now)


@dataclass
class KeySet:
    """One client's evaluation keys bound to every bucket's circuit, and what uses them."""

    key_id: str
    public: PublicContext
    evaluators: dict[int, CircuitEvaluator]
    charge: Reservation
    owner: str | None
    rate: RateLimit
    jobs: int = 0  # evaluations running or paused with these keys: while > 0 the set is not evicted


class KeyRegistry:
    def __init__(self, budget: MemoryBudget, max_keys: int) -> None:
        self.budget, self._max_keys = budget, max_keys
        self._entries: OrderedDict[str, KeySet] = OrderedDict()
        self._lock = threading.Lock()
        budget.evict = self._evict_for

    def _evict_for(self, nbytes: int) -> None:
        """Drop least recently used idle key sets until nbytes are freed (or none is idle)."""
        with self._lock:
            freed = 0
            for kid in [k for k, e in self._entries.items() if e.jobs == 0]:
                if freed >= nbytes:
                    break
                entry = self._entries.pop(kid)
                freed += entry.charge.nbytes
                entry.charge.release()

    def touch(self, kid: str) -> bool:
        """Mark a registered key set as used now; False if it is not held."""
        with self._lock:
            if kid not in self._entries:
                return False
            self._entries.move_to_end(kid)
            return True

    def add(self, entry: KeySet) -> None:
        """Hold a loaded key set (its memory already charged), evicting idle ones beyond max_keys."""
        with self._lock:
            if entry.key_id in self._entries:  # registered concurrently by an identical request
                entry.charge.release()
                self._entries.move_to_end(entry.key_id)
                return
            idle = [k for k, e in self._entries.items() if e.jobs == 0]
            if len(self._entries) >= self._max_keys and not idle:
                entry.charge.release()
                raise Busy(f"{self._max_keys} key sets are held and all are in use")
            while len(self._entries) >= self._max_keys:
                self._entries.pop(idle.pop(0)).charge.release()
            self._entries[entry.key_id] = entry

    def checkout(self, kid: str | None, max_jobs: int) -> KeySet:
        """The key set for one more evaluation, pinned (not evictable) until checkin; atomic with eviction."""
        with self._lock:
            if kid not in self._entries:
                raise UnknownKey(f"unknown key id {kid!r} (never registered, or evicted): register the context again")
            entry = self._entries[kid]
            if entry.jobs >= max_jobs:
                raise OverQuota(f"{max_jobs} evaluations already use this key set", 1.0)
            self._entries.move_to_end(kid)
            entry.jobs += 1
            return entry

    def checkin(self, entry: KeySet) -> None:
        with self._lock:
            entry.jobs -= 1

    def owned_by(self, owner: str) -> int:
        with self._lock:
            return sum(e.owner == owner for e in self._entries.values())

    @property
    def nbytes(self) -> int:
        """Memory charged for the key sets held."""
        with self._lock:
            return sum(e.charge.nbytes for e in self._entries.values())

    def ids(self) -> list[str]:
        """Key ids held, least recently used first."""
        with self._lock:
            return list(self._entries)

    def stored(self) -> list[PublicContext]:
        """Every key set held (for health reports and for tests that audit what is kept)."""
        with self._lock:
            return [e.public for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Job:
    """An evaluation from its first request to its last refresh, with what it holds.

    `refreshes_left` is fixed by the bucket's circuit: the server sends no more
    refresh requests than the signature states, and the client answers no more.
    """

    evaluation: Evaluation | None  # None until its input ciphertexts have loaded
    keys: KeySet
    bucket: Signature
    charge: Reservation
    owner: str | None
    refreshes_left: int
    cancel: threading.Event = field(default_factory=threading.Event)
    pending: int = 1  # ciphertexts the client owes the refresh it was sent
    deadline: float = 0.0
    closed: bool = False

    @property
    def evaluator(self) -> CircuitEvaluator:
        return self.keys.evaluators[self.bucket.T]


class JobTable:
    """Running and paused evaluations: admission, parking at a refresh, expiry, and release."""

    def __init__(self, registry: KeyRegistry, max_jobs: int, ttl_s: float) -> None:
        self._registry, self._max_jobs, self._ttl_s = registry, max_jobs, ttl_s
        self._paused: dict[str, Job] = {}
        self._active = 0
        self._by_owner: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, keys: KeySet, owner: str | None, owner_limit: int | None) -> None:
        """Count in a new evaluation on checked-out keys, or raise Busy / OverQuota (and check them in)."""
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            refusal: RequestError | None = None
            if self._active >= self._max_jobs:
                refusal = Busy(f"{self._max_jobs} evaluations are running or await a refresh; retry later")
            elif owner is not None and owner_limit is not None and self._by_owner.get(owner, 0) >= owner_limit:
                refusal = OverQuota(f"this token already has {owner_limit} evaluations in progress", 1.0)
            if refusal is not None:
                self._registry.checkin(keys)
                raise refusal
            self._active += 1
            if owner is not None:
                self._by_owner[owner] = self._by_owner.get(owner, 0) + 1

    def _finish(self, job: Job) -> None:
        """Close and un-count a job (lock held)."""
        if job.closed:
            return
        job.closed = True
        if job.evaluation is not None:
            job.evaluation.close()
        job.charge.release()
        self._active -= 1
        self._registry.checkin(job.keys)
        if job.owner is not None:
            self._by_owner[job.owner] -= 1

    def finish(self, job: Job) -> None:
        with self._lock:
            self._finish(job)

    def _purge(self, now: float) -> None:
        for jid in [j for j, job in self._paused.items() if job.deadline < now]:
            self._finish(self._paused.pop(jid))

    def purge(self) -> None:
        with self._lock:
            self._purge(time.monotonic())

    def park(self, job: Job, jid: str | None = None) -> str:
        """Hold a job until its refresh arrives. A new pause gets a fresh deadline and id; re-parking
        (jid given, after a bad refresh body or a busy pool) keeps both."""
        with self._lock:
            if jid is None:
                jid = secrets.token_urlsafe(16)
                job.deadline = time.monotonic() + self._ttl_s
            self._paused[jid] = job
            return jid

    def take(self, jid: str) -> Job:
        with self._lock:
            self._purge(time.monotonic())
            if jid not in self._paused:
                raise UnknownJob(f"no evaluation {jid!r} awaits a refresh (finished, expired or never started)")
            return self._paused.pop(jid)

    @property
    def active(self) -> int:
        return self._active

    def __len__(self) -> int:
        """Paused evaluations."""
        return len(self._paused)
