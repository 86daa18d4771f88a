"""Many sentences on Ray: whole server-side evaluations on `SentenceWorker` actors.

Lanes (ray_lanes.py) cut one sentence's latency; this module spreads many
sentences over a cluster's cores. A `SentenceWorker` runs the server's own
evaluation loop (`evaluation.CircuitEvaluator`: public keys only, each
client-aided refresh a round trip) for any number of jobs, each paused at its
refresh until the caller sends the client's re-encryption back. The caller
plays the client side (or relays to it): `RaySentences.evaluation(...)` is a
generator with the service's protocol (yields masked ciphertexts, receives
fresh ones, returns the outputs), so the HTTP server can hand it to its job
table unchanged, and `RaySentenceExecutor` drives it with client keys for
predict and bench.

* Keys and circuits go into the object store once per id and are cached per
  actor (LRU), as for lanes; the plaintexts that depend on no key (weights,
  key masks) in one store per actor, bounded by `weight_cache` bytes (0:
  encoded per evaluation), shared by all its key sets and circuits, so an
  actor's memory does not grow with the number of key sets.
* Jobs go to the actor with the fewest in flight.
* Faults: a job lives in one actor's memory. If the actor dies (it restarts,
  `max_restarts`) or has lost the job, the evaluation fails with `LaneError`
  at the call that notices; `RaySentenceExecutor`, which holds the client keys
  and the inputs, then runs the whole sentence again on another attempt (up to
  `retries`): a retried sentence starts from its encrypted inputs with fresh
  masks, so a retry is never a mix of two runs. Every wait is bounded by `timeout_s`.

Ray is optional (`he-inhibitor[ray]`): `import ray` stays inside the functions that use it.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Generator
from typing import Any

import numpy as np

from he_inhibitor.ckks import PublicContext, sealio
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.encrypted import EncryptedResult
from he_inhibitor.circuit.evaluation import CircuitEvaluator
from he_inhibitor.circuit.refresh import Refresh, answer
from he_inhibitor.circuit.weight_store import DEFAULT_MAX_BYTES, WeightStore
from he_inhibitor.circuit.ray_lanes import (
    DEFAULT_TIMEOUT_S, LaneError, LaneWorker, PoolExecutor, circuit_id_of, key_id_of, start_ray,
)


class JobLost(LookupError):
    """The actor holds no such job (it restarted, or the job was dropped)."""


class SentenceWorker:
    """A Ray actor: whole evaluations (server side), paused at each refresh."""

    def __init__(self, max_keys: int = 4, max_circuits: int = 2, max_jobs: int = 64,
                 weight_cache: int = DEFAULT_MAX_BYTES) -> None:
        self.keys: OrderedDict[str, Any] = OrderedDict()
        self.circuits: OrderedDict[str, tuple[Compiled, Any]] = OrderedDict()
        self.evaluators: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.jobs: OrderedDict[str, Any] = OrderedDict()
        self.max_keys, self.max_circuits, self.max_jobs = max_keys, max_circuits, max_jobs
        self.key_loads: dict[str, int] = {}
        self.circuit_loads: dict[str, int] = {}
        self.evaluations = 0
        self.weights = WeightStore(weight_cache) if weight_cache else None

    def _evaluator(self, circuit_id: str, circuit_box: list, key_id: str, keys_box: list) -> Any:
        import ray

        def load_circuit():
            self.circuit_loads[circuit_id] = self.circuit_loads.get(circuit_id, 0) + 1
            return ray.get(circuit_box[0])

        def load_keys():
            self.key_loads[key_id] = self.key_loads.get(key_id, 0) + 1
            return PublicContext.from_bytes(ray.get(keys_box[0]))

        compiled, params = LaneWorker._lru(self.circuits, circuit_id, load_circuit, self.max_circuits)
        public = LaneWorker._lru(self.keys, key_id, load_keys, self.max_keys)

        def make():
            return CircuitEvaluator(compiled, params, public, weights=self.weights)

        return LaneWorker._lru(self.evaluators, (circuit_id, key_id), make, self.max_keys)

    def start(self, job: str, circuit_id: str, circuit_box: list, key_id: str, keys_box: list, n_tokens: int,
              *inputs: bytes) -> tuple[str, Any]:
        ev = self._evaluator(circuit_id, circuit_box, key_id, keys_box)
        cts = [sealio.ciphertext(b, ev.public.context) for b in inputs]
        while len(self.jobs) >= self.max_jobs:  # the oldest paused job gives way
            self.jobs.popitem(last=False)[1][1].close()
        gen = ev.run(cts, n_tokens)
        self.jobs[job] = (ev, gen)
        self.evaluations += 1
        return self._step(job, None)

    def resume(self, job: str, fresh: list[bytes]) -> tuple[str, Any]:
        if job not in self.jobs:
            raise JobLost(f"job {job} is not held by this worker (pid {os.getpid()})")
        ev, _ = self.jobs[job]
        return self._step(job, [sealio.ciphertext(b, ev.public.context) for b in fresh])

    def _step(self, job: str, fresh: Any) -> tuple[str, Any]:
        ev, gen = self.jobs[job]
        try:
            masked = gen.send(fresh)
        except StopIteration as stop:
            del self.jobs[job]
            return "done", {name: ev.reply_bytes(ct) for name, ct in stop.value.items()}
        except BaseException:
            del self.jobs[job]
            raise
        return "refresh", ([sealio.to_bytes(c) for c in masked.cts], masked.maps, masked.outputs)

    def drop(self, job: str) -> None:
        entry = self.jobs.pop(job, None)
        if entry is not None:
            entry[1].close()

    def stats(self) -> dict:
        return {"pid": os.getpid(), "key_loads": dict(self.key_loads), "circuit_loads": dict(self.circuit_loads),
                "evaluations": self.evaluations, "jobs": len(self.jobs),
                "weights": None if self.weights is None else self.weights.stats()}


class RaySentences:
    """A pool of SentenceWorker actors (default: one per CPU of the cluster)."""

    def __init__(self, workers: int | None = None, address: str | None = None, num_cpus: int = 2,
                 max_restarts: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
                 weight_cache: int = DEFAULT_MAX_BYTES) -> None:
        import ray

        self.started = start_ray(address, num_cpus)
        avail = float(ray.available_resources().get("CPU", 1.0))
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1.0)))
        per = min(1.0, max(0.01, avail / workers))
        cls = ray.remote(SentenceWorker)
        # no task retries: a job's state is in the actor; the caller retries the sentence
        self.actors = [cls.options(num_cpus=per, max_restarts=max_restarts, max_task_retries=0)
                       .remote(weight_cache=weight_cache) for _ in range(workers)]
        self.in_flight = [0] * workers
        self.timeout_s = timeout_s
        self._circuits: dict[str, Any] = {}
        self._ids: dict[int, tuple[str, Compiled]] = {}
        self._keys: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._rr = itertools.count()

    def register(self, compiled: Compiled, params: Any) -> str:
        import ray

        with self._lock:
            if id(compiled) in self._ids:
                return self._ids[id(compiled)][0]
        cid = circuit_id_of(compiled)
        with self._lock:
            self._ids[id(compiled)] = (cid, compiled)
            if cid not in self._circuits:
                self._circuits[cid] = ray.put((compiled, params))
        return cid

    def register_keys(self, blob: bytes, max_keys: int = 16) -> str:
        import ray

        kid = key_id_of(blob)
        with self._lock:
            if kid in self._keys:
                self._keys.move_to_end(kid)
            else:
                self._keys[kid] = ray.put(blob)
                while len(self._keys) > max_keys:
                    self._keys.popitem(last=False)
        return kid

    def _keys_ref(self, kid: str, blob) -> Any:
        with self._lock:
            ref = self._keys.get(kid)
        if ref is None:
            self.register_keys(blob())
            with self._lock:
                ref = self._keys[kid]
        return ref

    def _get(self, ref: Any, what: str) -> Any:
        import ray

        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            raise LaneError(f"{what}: no answer from the sentence worker in {self.timeout_s:.0f} s") from err
        except ray.exceptions.RayError as err:
            raise LaneError(f"{what}: sentence worker failed ({type(err).__name__}): {str(err)[:2000]}") from err

    def _start(self, actor: Any, job: str, circuit_id: str, key_id: str, blob, n_tokens: int,
               inputs: list[bytes]) -> tuple[str, Any]:
        """Start a job, waiting (up to timeout_s) while the actor restarts after a crash."""
        import ray

        deadline = time.monotonic() + self.timeout_s
        while True:
            ref = actor.start.remote(job, circuit_id, [self._circuits[circuit_id]], key_id,
                                     [self._keys_ref(key_id, blob)], n_tokens, *inputs)
            try:
                return ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise LaneError(f"the sentence worker stayed unavailable for {self.timeout_s:.0f} s") from None
                time.sleep(0.5)
            except ray.exceptions.GetTimeoutError as err:
                raise LaneError(f"evaluation: no answer from the sentence worker in {self.timeout_s:.0f} s") from err
            except ray.exceptions.RayError as err:
                raise LaneError(f"evaluation: sentence worker failed ({type(err).__name__}): "
                                f"{str(err)[:2000]}") from err

    def evaluation(self, circuit_id: str, key_id: str, blob, inputs: list[bytes], n_tokens: int,
                   context: Any) -> Generator[Any, Any, dict[str, Any]]:
        """The service's evaluation protocol, run on an actor: yields masked ciphertexts, receives fresh
        ones, returns {output name: ciphertext} (mod-switched to the last level)."""
        with self._lock:
            k = min(range(len(self.actors)), key=lambda i: (self.in_flight[i], (next(self._rr) + i) % len(self.actors)))
            self.in_flight[k] += 1
        actor, job = self.actors[k], uuid.uuid4().hex
        done = False
        try:
            status, payload = self._start(actor, job, circuit_id, key_id, blob, n_tokens, inputs)
            while status == "refresh":
                blobs, maps, outputs = payload
                fresh = yield Refresh([sealio.ciphertext(b, context) for b in blobs], maps, outputs)
                status, payload = self._get(actor.resume.remote(job, [sealio.to_bytes(c) for c in fresh]),
                                            "evaluation")
            done = True
            return {name: sealio.ciphertext(b, context) for name, b in payload.items()}
        finally:
            with self._lock:
                self.in_flight[k] -= 1
            if not done:
                try:
                    actor.drop.remote(job)  # abandoned (closed, expired, failed): free the actor's copy
                except Exception:
                    pass

    def stats(self) -> list[dict]:
        return self._get([a.stats.remote() for a in self.actors], "stats")

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors = []
        if self.started and ray.is_initialized():
            ray.shutdown()
        self.started = False

    def __enter__(self) -> RaySentences:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RaySentenceExecutor(PoolExecutor):
    """Whole sentences on a RaySentences pool; this side holds the client keys (encrypts, refreshes,
    decrypts). Thread-safe: concurrent run() calls spread over the actors. A sentence whose actor
    died is run again from its inputs, up to `retries` times."""

    def __init__(self, ex: Any, pool: RaySentences | None = None, address: str | None = None,
                 retries: int = 2) -> None:
        if ex.keys is None:
            raise LaneError("the caller plays the client: it needs the client keys")
        self.ex, self.retries = ex, retries
        self._own = pool is None
        self.pool = pool or RaySentences(address=address)
        self.circuit_id = self.pool.register(ex.compiled, ex.params)
        self.key_id = self.pool.register_keys(ex.public.to_bytes())
        self.attempts = 0  # evaluations started, retries included
        self.lanes = 1
        self.on_refresh = None  # test hook: (attempt, refreshes so far) after each client refresh

    def run(self, x0: np.ndarray, m: np.ndarray) -> Any:
        ex, keys, comp = self.ex, self.ex.keys, self.ex.compiled
        depth = ex.params.depth
        cpu, client = time.process_time(), 0.0
        t = time.perf_counter()
        packed = comp.pack_input(x0, m)
        inputs = [keys.encrypt_bytes(packed[name], depth) for name in comp.input_names()]
        client += time.perf_counter() - t
        n = int(np.asarray(m).sum())
        public = comp.public_plaintexts(m)  # the client's maps (arrange.py) among them
        for attempt in range(self.retries + 1):
            self.attempts += 1
            gen = self.pool.evaluation(self.circuit_id, self.key_id, lambda: ex.public.to_bytes(), inputs, n,
                                       ex.ctx)
            refreshes = 0
            try:
                fresh = None
                while True:
                    req = gen.send(fresh)
                    t = time.perf_counter()
                    fresh = answer(keys, req, public, depth)  # the client's side of a refresh
                    client += time.perf_counter() - t
                    refreshes += 1
                    if self.on_refresh is not None:
                        self.on_refresh(attempt, refreshes)
            except StopIteration as stop:
                outs = stop.value
                break
            except LaneError:
                gen.close()
                if attempt == self.retries:
                    raise
        t = time.perf_counter()
        logits = comp.read_logits(np.asarray(keys.decrypt(outs["logits"])))
        client += time.perf_counter() - t
        # refreshes: client round trips (each carries a group of refreshed ciphertexts); chain indices stay remote
        return EncryptedResult(logits, {}, refreshes, {}, client, time.process_time() - cpu)
