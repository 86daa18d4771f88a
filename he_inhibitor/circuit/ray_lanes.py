"""Lanes of one sentence as Ray work: the attention shifts of lane k > 0 run on Ray actors.

The compiler puts independent work on lanes (attention.shift_lanes: each range
of attention shifts on its own lane, summed on lane 0). Here every connected
group of lane-k nodes (k > 0) becomes a *segment*: one Ray task whose inputs
are the lane-0 ciphertexts it reads (per attention layer Q2, K2, V2) and whose
outputs are the values lane 0 reads back (the lane's accumulator). The caller
(lane 0: `EncryptedExecutor.run` with the link below, or the service's
evaluation loop) walks the circuit in order, submits a segment as soon as its
last input exists, goes on with its own shifts, and blocks only where it
consumes a segment's output.

* Actors (`LaneWorker`) hold the public evaluation keys and a stripped copy of
  the circuit (node list, and only the constants their segments use; no weight
  matrices). Both go into the object store once (per key id, per circuit) and
  each actor fetches them the first time a task names an id it does not hold,
  then keeps them (a small LRU): keys are never re-sent per sentence, and on a
  cluster Ray moves an object to each node once.
* Ciphertexts cross as SEAL-serialized bytes (through anonymous memory files,
  ckks.sealio, which skips the temporary files of ckks.serial) through the object store; an input
  read by several lanes is put once.
* Faults: actors restart and their tasks are retried (`max_restarts`,
  `max_task_retries`); a restarted actor reloads keys and circuit from the
  object store, and a segment is a pure function of its inputs, so a retry
  gives the same answer. When retries run out, or a result takes longer than
  `timeout_s`, the sentence fails with a `LaneError` naming the lane: never a
  wrong answer and never a hang.

Ray is optional (`he-inhibitor[ray]`): `import ray` stays inside the
functions that use it. Ray starts embedded (2 CPUs, no dashboard, a small object store, no usage
stats) unless an address is given (`ray start` cluster). Ray (2.60) cannot be
held to loopback: it maps 127.0.0.1 to the node's address and its servers
listen on every interface, behind its token authentication (on by default);
on a shared network, firewall its ports. A circuit with a single lane never
touches Ray.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from he_inhibitor.ckks import PublicContext, sealio
from he_inhibitor.ckks.context import level_of
from he_inhibitor.circuit.bundle import circuit_hash, load_bundle, load_weights, node_list
from he_inhibitor.circuit.compile import Compiled, compile_student
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.ir import Circuit, CircuitError, OpKind, check, depth, refresh_round_trips
from he_inhibitor.circuit.params import Plan
from he_inhibitor.circuit.weight_store import DEFAULT_MAX_BYTES, WeightStore

OBJECT_STORE_BYTES = 300 * 2**20  # embedded Ray: segments move a few MB per sentence
DEFAULT_TIMEOUT_S = 900.0  # one segment's result; a sentence at N = 16384 takes tens of seconds in all


class LaneError(CircuitError):
    """A lane's work failed on Ray (worker died beyond its restarts, timed out, or raised)."""


# -- the circuit's independent work ----------------------------------------------------------


def lanes_of(circuit: Circuit) -> list[int]:
    return sorted({n.lane for n in circuit.nodes if n.op is not OpKind.CONST})


@dataclass(frozen=True)
class Segment:
    """A run of lane-k (k > 0) nodes: one Ray task per sentence."""

    lane: int
    nodes: tuple[int, ...]  # topological order
    inputs: tuple[int, ...]  # lane-0 values it reads (the caller offers them)
    links: tuple[int, ...]  # values of earlier segments it reads (passed worker to worker)
    outputs: tuple[int, ...]  # its nodes read outside it
    consts: tuple[int, ...]  # CONST nodes it reads


def segments_of(circuit: Circuit) -> list[Segment]:
    """The circuit's lane work as segments, cut so that the caller can never wait forever.

    The caller walks lane 0 in circuit order, submits a segment once its last
    lane-0 input exists and blocks where a lane-0 node reads a segment's
    output. So each lane's nodes, in circuit order, are cut into runs whose
    lane-0 inputs all come before the first lane-0 node reading any of their
    outputs: one run per attention layer and lane when no refresh falls inside
    the attention, one per refresh round trip when one does (the client must
    see the lane's value before the lane can go on).
    """
    nodes = circuit.nodes
    readers: list[list[int]] = [[] for _ in nodes]
    for j, node in enumerate(nodes):
        for a in node.args:
            readers[a].append(j)
    lane_nodes = []
    for i, node in enumerate(nodes):
        if node.op is OpKind.CONST or node.lane == 0:
            continue
        if node.op in (OpKind.INPUT, OpKind.REFRESH, OpKind.OUTPUT):
            raise CircuitError(f"node {i} ({node.op.value}) on lane {node.lane}: only server ops may leave lane 0")
        lane_nodes.append(i)
    remote = set(lane_nodes)
    open_: dict[int, list] = {}  # lane -> [members, last input, first lane-0 reader]
    runs: list[list[int]] = []
    for i in lane_nodes:
        lane = nodes[i].lane
        first_in = max((a for a in nodes[i].args if a not in remote and nodes[a].op is not OpKind.CONST), default=-1)
        first_out = min((j for j in readers[i] if j not in remote), default=len(nodes))
        cur = open_.get(lane)
        if cur is None or max(cur[1], first_in) >= min(cur[2], first_out):
            cur = open_[lane] = [[], -1, len(nodes)]
            runs.append(cur[0])
        cur[0].append(i)
        cur[1], cur[2] = max(cur[1], first_in), min(cur[2], first_out)
    out = []
    for members in runs:
        inside = set(members)
        args = {a for i in members for a in nodes[i].args if a not in inside}
        out.append(Segment(
            nodes[members[0]].lane, tuple(members),
            tuple(sorted(a for a in args if a not in remote and nodes[a].op is not OpKind.CONST)),
            tuple(sorted(a for a in args if a in remote)),
            tuple(sorted({i for i in members for j in readers[i] if j not in inside})),
            tuple(sorted(a for a in args if nodes[a].op is OpKind.CONST))))
    return out


def strip(compiled: Compiled, segments: list[Segment]) -> Compiled:
    """The circuit a lane worker needs: every node (for the level pass), only its segments' constants."""
    keep = {compiled.circuit.nodes[c].arg for s in segments for c in s.consts}
    consts = [p if i in keep else 0.0 for i, p in enumerate(compiled.circuit.consts)]
    circuit = Circuit(compiled.circuit.n_slots, list(compiled.circuit.nodes), consts)
    return replace(compiled, circuit=circuit)


def circuit_id_of(compiled: Compiled) -> str:
    return circuit_hash(compiled.circuit)[:32]


def key_id_of(public_blob: bytes) -> str:
    return hashlib.sha256(public_blob).hexdigest()[:32]


def with_lanes(plan: Any, lanes: int, weights: Any) -> Any:
    """The plan recompiled for `lanes` lanes (compile.compile_student), on the same chain.

    `weights`: the StudentWeights it was compiled from (bundle.load_weights for a bundle).
    A plan that already runs on `lanes` lanes is returned as it is.
    """
    comp = plan.compiled
    if lanes < 1:
        raise ValueError("lanes must be at least 1")
    shifts = getattr(comp, "plan", None)  # the n-dependent shift plan, where the compiler has one
    if len(lanes_of(comp.circuit)) == lanes:
        return plan
    new = compile_student(weights, comp.T, plan.params.slots, max_level=comp.max_level, lanes=lanes,
                          main_shifts=comp.main_shifts if lanes == 2 else None,
                          **({} if shifts is None else {"shifts": shifts}))
    c = new.circuit
    check(c, plan.params.depth)  # the same chain holds it (refreshes where it must: their count may change)
    return Plan(new, plan.params, depth(c, through_refresh=True), len(c.of_kind(OpKind.REFRESH)),
                refresh_round_trips(c))


def load_plan(bundle: str | Path, T: int, lanes: int, n: int | None = None) -> Any:
    """A bundle's circuit for bucket T and n tokens (its hash checked as bundled), recompiled for `lanes` lanes."""
    plan = load_bundle(bundle, T) if n is None else load_bundle(bundle, T, n)
    return with_lanes(plan, lanes, load_weights(bundle))


def ray_buckets(bundle: str | Path | None, circuits: dict[int, Any], params: Any, lanes: int,
                address: str | None, weight_cache: int = DEFAULT_MAX_BYTES) -> tuple[dict[int, Any], RayLanes]:
    """`serve --lanes K`: the bundle's buckets (circuit.bundle.Bucket) with `lanes` lanes and a pool whose
    actors keep at most `weight_cache` bytes of plaintexts each."""
    return ({T: replace(b, lanes=lanes) for T, b in circuits.items()},
            RayLanes(lanes - 1, address, weight_cache=weight_cache))


# -- Ray ------------------------------------------------------------------------------------


def start_ray(address: str | None = None, num_cpus: int = 2,
              object_store_bytes: int = OBJECT_STORE_BYTES) -> bool:
    """Join the cluster at `address`, or start Ray embedded; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network beyond the cluster
    common = dict(log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_bytes, **common)
    return True


class LaneWorker:
    """A Ray actor: evaluates segments with cached keys and circuits (LRU, `max_keys` of each)."""

    def __init__(self, max_keys: int = 4, max_circuits: int = 4, weight_cache: int = DEFAULT_MAX_BYTES) -> None:
        # the lane nodes' plaintexts (key masks, mostly), shared by every key set (weight_store.py)
        self.weights = WeightStore(weight_cache) if weight_cache else None
        self.keys: OrderedDict[str, Any] = OrderedDict()
        self.circuits: OrderedDict[str, tuple[Compiled, list[Segment], Any]] = OrderedDict()
        self.executors: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.max_keys, self.max_circuits = max_keys, max_circuits
        self.key_loads: dict[str, int] = {}
        self.circuit_loads: dict[str, int] = {}
        self.segments_run = 0

    @staticmethod
    def _lru(cache: OrderedDict, key: Any, make: Callable[[], Any], bound: int) -> Any:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        cache[key] = value = make()
        while len(cache) > bound:
            cache.popitem(last=False)
        return value

    def _executor(self, circuit_id: str, circuit_box: list, key_id: str, keys_box: list) -> tuple:
        import ray

        def load_circuit():
            self.circuit_loads[circuit_id] = self.circuit_loads.get(circuit_id, 0) + 1
            compiled, params = ray.get(circuit_box[0])
            return compiled, segments_of(compiled.circuit), params

        def load_keys():
            self.key_loads[key_id] = self.key_loads.get(key_id, 0) + 1
            return PublicContext.from_bytes(ray.get(keys_box[0]))

        compiled, segs, params = self._lru(self.circuits, circuit_id, load_circuit, self.max_circuits)
        public = self._lru(self.keys, key_id, load_keys, self.max_keys)
        ex = self._lru(self.executors, (circuit_id, key_id),
                       lambda: EncryptedExecutor(compiled, params, public=public, cache=self.weights is not None,
                                                 weights=self.weights), self.max_keys)
        return ex, segs

    def warm(self, circuit_id: str, circuit_box: list, key_id: str, keys_box: list) -> int:
        """Load the circuit and keys and encode the weights of the lanes' nodes (its first sentence then
        runs as fast as later ones); returns the actor's pid."""
        ex, segs = self._executor(circuit_id, circuit_box, key_id, keys_box)
        ex.prepare({i for s in segs for i in s.nodes})
        return os.getpid()

    def run(self, circuit_id: str, circuit_box: list, key_id: str, keys_box: list, seg: int, m: np.ndarray,
            *values: bytes) -> tuple:
        """One segment, given its inputs then its links (serialized): its outputs (serialized), then
        (chain index of each node, CPU seconds, output bytes)."""
        cpu = time.process_time()
        ex, segs = self._executor(circuit_id, circuit_box, key_id, keys_box)
        s = segs[seg]
        circuit = ex.circuit
        public = ex.compiled.public_plaintexts(m)
        vals: dict[int, Any] = {i: sealio.ciphertext(b, ex.ctx)
                                for i, b in zip(s.inputs + s.links, values, strict=True)}
        for c in s.consts:
            vals[c] = circuit.consts[circuit.nodes[c].arg]
        chain = {}
        for i in s.nodes:
            vals[i] = ex.op(circuit.nodes[i], [vals[j] for j in circuit.nodes[i].args], public)
            chain[i] = level_of(ex.ctx, vals[i])
        self.segments_run += 1
        outs = [sealio.to_bytes(vals[i]) for i in s.outputs]
        return (*outs, (chain, time.process_time() - cpu, sum(len(b) for b in outs)))

    def stats(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "key_loads": dict(self.key_loads),
                "circuit_loads": dict(self.circuit_loads), "segments_run": self.segments_run,
                "weights": None if self.weights is None else self.weights.stats()}


@dataclass
class _Registered:
    compiled: Compiled
    segments: list[Segment]
    feeds: dict[int, list[int]]  # lane-0 node -> segments reading it
    after: dict[int, list[int]]  # segment -> later segments reading its outputs
    owner: dict[int, int]  # lane node -> its segment
    ref: Any  # ObjectRef of (stripped compiled, params)


class RayLanes:
    """A pool of LaneWorker actors; circuits and keys registered once, links made per sentence.

    `workers` actors (default: lanes - 1 of the first circuit registered); lane k's
    segments go to actor (k - 1) mod workers. Each actor asks for at most one
    CPU, less when the cluster has fewer CPUs than actors, so they always start.
    """

    def __init__(self, workers: int, address: str | None = None, num_cpus: int = 2, max_restarts: int = 2,
                 timeout_s: float = DEFAULT_TIMEOUT_S, weight_cache: int = DEFAULT_MAX_BYTES) -> None:
        import ray

        if workers < 1:
            raise ValueError("a lane pool needs at least one worker")
        self.started = start_ray(address, num_cpus)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        per = min(1.0, max(0.01, (cpus - (0 if address else 1)) / workers))  # embedded: one core for lane 0
        cls = ray.remote(LaneWorker)
        self.actors = [cls.options(num_cpus=per, max_restarts=max_restarts, max_task_retries=max_restarts)
                       .remote(weight_cache=weight_cache) for _ in range(workers)]
        self.timeout_s = timeout_s
        self._circuits: dict[str, _Registered] = {}
        self._ids: dict[int, str] = {}  # id(compiled) -> circuit id (the registered entry keeps it alive)
        self._keys: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.store_bytes_once = 0  # keys and circuits put into the object store

    def register(self, compiled: Compiled, params: Any) -> str:
        """The circuit's id, after putting it (stripped) into the object store the first time."""
        import ray

        with self._lock:
            if id(compiled) in self._ids:
                return self._ids[id(compiled)]
        cid = circuit_id_of(compiled)
        with self._lock:
            self._ids[id(compiled)] = cid
            if cid not in self._circuits:
                segs = segments_of(compiled.circuit)
                owner = {i: k for k, s in enumerate(segs) for i in s.nodes}
                feeds: dict[int, list[int]] = {}
                after: dict[int, list[int]] = {}
                for k, s in enumerate(segs):
                    for i in s.inputs:
                        feeds.setdefault(i, []).append(k)
                    for src in sorted({owner[i] for i in s.links}):
                        after.setdefault(src, []).append(k)
                stripped = strip(compiled, segs)
                ref = ray.put((stripped, params))
                self.store_bytes_once += _payload_bytes(stripped)
                self._circuits[cid] = _Registered(compiled, segs, feeds, after, owner, ref)
        return cid

    def register_keys(self, public_blob: bytes, max_keys: int = 16) -> str:
        import ray

        kid = key_id_of(public_blob)
        with self._lock:
            if kid in self._keys:
                self._keys.move_to_end(kid)
            else:
                self._keys[kid] = ray.put(public_blob)
                self.store_bytes_once += len(public_blob)
                while len(self._keys) > max_keys:
                    self._keys.popitem(last=False)
        return kid

    def warm(self, circuit_id: str, key_id: str) -> list[int]:
        """Every actor loads the circuit and the keys now (set-up); returns their pids."""
        reg, keys = self._circuits[circuit_id], self._keys[key_id]
        return self._get([a.warm.remote(circuit_id, [reg.ref], key_id, [keys]) for a in self.actors], "warm-up")

    def stats(self) -> list[dict]:
        return self._get([a.stats.remote() for a in self.actors], "stats")

    def link(self, circuit_id: str, key_id: str, m: np.ndarray, context: Any,
             blob: Callable[[], bytes]) -> RayLink:
        """One sentence's link; the keys (`blob()`) are put again if the pool's LRU dropped them."""
        with self._lock:
            keys = self._keys.get(key_id)
            if keys is not None:
                self._keys.move_to_end(key_id)
        if keys is None:
            if self.register_keys(blob()) != key_id:
                raise ValueError("these keys are not the ones registered under this key id")
            with self._lock:
                keys = self._keys[key_id]
        return RayLink(self, self._circuits[circuit_id], circuit_id, key_id, keys, np.asarray(m, dtype=np.float64),
                       context)

    def actor_for(self, lane: int) -> Any:
        return self.actors[(lane - 1) % len(self.actors)]

    def _get(self, refs: Any, what: str) -> Any:
        import ray

        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            raise LaneError(f"{what}: no result from the lane workers in {self.timeout_s:.0f} s") from err
        except ray.exceptions.RayError as err:
            raise LaneError(f"{what}: lane worker failed ({type(err).__name__}): {str(err)[:2000]}") from err

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # already gone
                pass
        self.actors = []
        if self.started and ray.is_initialized():
            ray.shutdown()
        self.started = False

    def __enter__(self) -> RayLanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _payload_bytes(compiled: Compiled) -> int:
    """Bytes a stripped circuit puts into the store: its constant arrays and its node list (as JSON)."""
    arrays = sum(np.asarray(c).nbytes for c in compiled.circuit.consts if not isinstance(c, str))
    return arrays + len(json.dumps(node_list(compiled.circuit)))


class RayLink:
    """One sentence's lane link (interpret.LaneLink): lane-0 values out, segment results in.

    A segment is submitted once every lane-0 value it reads has been offered
    and every segment it reads from has been submitted (their outputs go to
    it worker to worker, as object references). Counters for the report:
    bytes_out (lane-0 ciphertexts put), bytes_in (ciphertexts the segments
    returned), transfer_seconds (serialization on this side),
    worker_cpu_seconds, chain (chain index of every remote node).
    """

    def __init__(self, pool: RayLanes, reg: _Registered, circuit_id: str, key_id: str, keys_ref: Any,
                 m: np.ndarray, context: Any) -> None:
        self.pool, self.reg, self.context = pool, reg, context
        self._args = (circuit_id, [reg.ref], key_id, [keys_ref])
        self.m = m
        self._offered: dict[int, Any] = {}  # lane-0 node -> ObjectRef of its bytes
        self._outs: dict[int, Any] = {}  # remote node -> ObjectRef of its bytes
        self._meta: dict[int, Any] = {}  # segment -> ObjectRef of (chain, cpu, bytes)
        self.chain: dict[int, int] = {}
        self.bytes_out = self.bytes_in = self.store_bytes = 0
        self.transfer_seconds = self.worker_cpu_seconds = 0.0
        self.on_submit: Callable[[int, Segment], None] | None = None  # test hook
        self._started = False

    def _start(self) -> None:
        self._started = True
        for k in range(len(self.reg.segments)):
            self._try(k)

    def remote(self, node: int) -> bool:
        if not self._started:
            self._start()
        return node in self.reg.owner

    def offer(self, node: int, ct: Any) -> None:
        segs = self.reg.feeds.get(node)
        if not segs:
            return
        import ray

        t = time.perf_counter()
        data = sealio.to_bytes(ct)
        self._offered[node] = ray.put(data)
        self.transfer_seconds += time.perf_counter() - t
        self.bytes_out += len(data)
        for k in segs:
            self._try(k)

    def _try(self, k: int) -> None:
        s = self.reg.segments[k]
        if k in self._meta or any(i not in self._offered for i in s.inputs) or any(i not in self._outs
                                                                                   for i in s.links):
            return
        refs = [self._offered[i] for i in s.inputs] + [self._outs[i] for i in s.links]
        got = self.pool.actor_for(s.lane).run.options(num_returns=len(s.outputs) + 1).remote(
            *self._args, k, self.m, *refs)
        self._outs.update(zip(s.outputs, got[:-1]))
        self._meta[k] = got[-1]
        if self.on_submit is not None:
            self.on_submit(k, s)
        for later in self.reg.after.get(k, ()):
            self._try(later)

    def receive(self, node: int) -> Any:
        if node not in self._outs:
            raise LaneError(f"node {node}: its segment was never submitted (inputs missing)")
        s = self.reg.segments[self.reg.owner[node]]
        # kept, not popped: a later segment may read the same value worker to worker
        data = self.pool._get(self._outs[node], f"lane {s.lane} (nodes {s.nodes[0]}..{s.nodes[-1]})")
        self.bytes_in += len(data)
        t = time.perf_counter()
        ct = sealio.ciphertext(data, self.context)
        self.transfer_seconds += time.perf_counter() - t
        return ct

    def finish(self) -> None:
        """After a complete run: chain indices and CPU seconds of every segment."""
        metas = self.pool._get(list(self._meta.values()), "lane accounting")
        for chain, cpu, _ in metas:
            self.chain.update(chain)
            self.worker_cpu_seconds += cpu
        self.store_bytes = self.bytes_out + sum(b for *_, b in metas)  # every ciphertext through the store

    def close(self) -> None:
        """Drop every reference (after a failure: results nobody will read)."""
        self._offered.clear()
        self._outs.clear()
        self._meta.clear()


class PoolExecutor:
    """An encrypted executor whose work runs on a Ray pool: the wrapped executor's circuit and
    parameters, and the pool closed with it when this executor started it (`_own`)."""

    ex: Any  # EncryptedExecutor
    pool: Any
    _own: bool

    @property
    def compiled(self) -> Compiled:
        return self.ex.compiled

    @property
    def params(self) -> Any:
        return self.ex.params

    def close(self) -> None:
        if self._own:
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RayLaneExecutor(PoolExecutor):
    """An EncryptedExecutor (it holds the client keys: it plays both sides) whose lane-k>0
    segments run on a RayLanes pool; same results, same chain indices.

    Thread-safe for concurrent sentences: each run has its own link. Owns the
    pool when it made it (close() then stops it).
    """

    def __init__(self, ex: Any, pool: RayLanes | None = None, address: str | None = None,
                 warm: bool = True) -> None:
        lanes = lanes_of(ex.circuit)
        if len(lanes) < 2:
            raise CircuitError("a single-lane circuit needs no lane workers: run the EncryptedExecutor itself")
        if ex.keys is None:
            raise CircuitError("the caller plays the client too: it needs the client keys")
        self.ex = ex
        self.lanes = len(lanes)
        self._own = pool is None
        self.pool = pool or RayLanes(self.lanes - 1, address)
        self.circuit_id = self.pool.register(ex.compiled, ex.params)
        self.key_id = self.pool.register_keys(ex.public.to_bytes())
        if warm:
            self.pool.warm(self.circuit_id, self.key_id)
        self.last: dict[str, float] = {}  # the last run's lane accounting
        self.on_submit: Callable[[int, Segment], None] | None = None  # test hook

    def run(self, x0: np.ndarray, m: np.ndarray) -> Any:
        link = self.pool.link(self.circuit_id, self.key_id, m, self.ex.ctx, self.ex.public.to_bytes)
        link.on_submit = self.on_submit
        try:
            res = self.ex.run(x0, m, link)
            link.finish()
        finally:
            link.close()
        res.chain_index.update(link.chain)
        self.last = {"worker_cpu_seconds": link.worker_cpu_seconds, "transfer_seconds": link.transfer_seconds,
                     "store_bytes_out": link.bytes_out, "store_bytes_in": link.bytes_in,
                     "store_bytes": link.store_bytes, "segments": len(link.reg.segments)}
        return res

    @property
    def worker_cpu_seconds(self) -> float:
        return self.last.get("worker_cpu_seconds", 0.0)

    @property
    def transfer_seconds(self) -> float:
        return self.last.get("transfer_seconds", 0.0)


def default_lanes() -> int:
    """Lanes an evaluation uses unless told: 2 (one Ray actor beside the caller, for 2 cores) where Ray is
    installed, else 1."""
    return 2 if importlib.util.find_spec("ray") is not None else 1
