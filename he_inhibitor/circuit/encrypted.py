"""The SEAL backend and the `encrypted` executor: the circuit on ciphertexts (SEAL itself: `he_inhibitor.ckks`).

`EncryptedExecutor.op` is what each op means on SEAL ciphertexts, in terms
of the ckks evaluator's primitives (no SEAL call here); `SealBackend` binds
it to one request for the one traversal (interpret.py). `run` walks the
circuit with both parties in one process; the server's walk, with public
keys only and each refresh a round trip to the client, is
evaluation.py over the same backend.

Level bookkeeping follows the IR exactly: IR level l is SEAL chain index
depth - l, and every ciphertext node's chain index is recorded so a test can
check that the levels SEAL consumed are the levels the IR predicted.

Scales stay exact (the ckks package's invariant: a ciphertext at chain index
c carries Delta_c): a plaintext multiplied into a ciphertext at index c is
encoded at Delta_{c-1} * q_c / Delta_c (CkksEvaluator.plain_scale), so the
products of a linear layer's diagonals share one scale, are summed (and
rotated) before their single rescale, and land on Delta_{c-1} exactly.
Polynomials run their folded fit's evaluation plan on the ckks evaluator.
Weight plaintexts (factors and biases) and the key-mask plaintexts inside
masked polynomials depend on no key, so they are encoded once and kept in a
`WeightStore` (weight_store.py: by content, bounded in bytes), which the
server shares between every key set and plan: a weight is encoded once per
(values, chain index, scale), and one set of mask plaintexts serves every
ciphertext of an attention shift and later sentences of that length.

With a `LaneLink` (ray_lanes.py) only lane-0 nodes run here; values of other
lanes arrive through the link and lane-0 values they need leave through it.

In `run` each refresh round trip plays both sides (this executor holds the
client keys): the server adds a uniform mask, the client decrypts, applies
the public map and re-encrypts at the top of the chain, the server subtracts
the map of the mask. Each REFRESH node is counted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from he_inhibitor.ckks import Ciphertext, CkksEvaluator, CkksParams, ClientKeys, Plaintext, PublicContext, keygen
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.interpret import Answer, Backend, LaneLink, RefreshPoint, Traversal, answered, interpret
from he_inhibitor.circuit.ir import Circuit, CircuitError, Node, OpKind, Plain, levels_and_degrees
from he_inhibitor.circuit.masked import MaskedPlan, masked_plan_of
from he_inhibitor.circuit.plain import resolve
from he_inhibitor.circuit.poly import plan_of
from he_inhibitor.circuit.refresh import answer, masked
from he_inhibitor.circuit.weight_store import WeightStore


@dataclass
class EncryptedResult:
    logits: np.ndarray
    chain_index: dict[int, int]  # node -> SEAL chain index of its ciphertext
    refreshes: int
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (server side, wall clock)
    client_seconds: float = 0.0  # encryption, refresh round trips, decryption
    cpu_seconds: float = 0.0  # this process's CPU time for the run (wall clock suffers on a loaded machine)


def measured_depth(circuit: Circuit, chain_index: dict[int, int]) -> int:
    """Levels SEAL consumed on the deepest path to the output, counted through refreshes.

    The same recursion as ir.consumed_levels (a refresh or a mod-switch consumes
    nothing: only rescales count), but on the chain indices SEAL
    reported for each ciphertext, so a test can hold the simulator's depth
    against what really ran.
    """
    used: dict[int, int] = {}
    for i, node in enumerate(circuit.nodes):
        cts = [a for a in node.args if a in chain_index]
        if i not in chain_index or not cts:
            used[i] = 0
            continue
        deepest = max(cts, key=lambda a: used[a])
        step = 0 if node.op in (OpKind.REFRESH, OpKind.MOD_SWITCH) else max(chain_index[a] for a in cts) - chain_index[i]
        used[i] = used[deepest] + step
    return max(used[i] for i in circuit.of_kind(OpKind.OUTPUT))


class SealBackend(Backend):
    """The SEAL backend of one request: `EncryptedExecutor.op` with the request's public plaintexts;
    CONST values are their payloads (weights found in the store by content). Records the chain index
    of every ciphertext and the wall-clock seconds per stage, less `client` seconds spent in a refresh;
    `before` runs ahead of every node (the server's check for a cancelled request)."""

    def __init__(self, ex: EncryptedExecutor, public: dict[str, np.ndarray],
                 before: Callable[[], None] | None = None) -> None:
        self.ex, self.public, self.before = ex, public, before
        self.chain: dict[int, int] = {}
        self.seconds: dict[str, float] = defaultdict(float)
        self.client = 0.0  # client seconds inside the current node (a refresh answered in-process)
        self._t = 0.0

    def op(self, i: int, node: Node, args: list) -> Ciphertext:
        return self.ex.op(node, args, self.public)

    def enter(self, i: int, node: Node) -> None:
        if self.before is not None:
            self.before()
        self._t = time.perf_counter()
        self.client = 0.0

    def leave(self, i: int, node: Node, value: Ciphertext) -> None:
        self.chain[i] = self.ex.ev.level(value)
        self.seconds[node.stage] += time.perf_counter() - self._t - self.client


class EncryptedExecutor:
    """Keys for exactly the circuit's rotation steps; run() evaluates one sentence.

    cache keeps the plaintexts that depend on no key (weights, key masks)
    across requests, in `weights` when given (a store shared by every executor of
    the process: the server's, bounded), else in a store of its own; without
    it they are encoded as they are used and freed. Given `public` (and no
    keys) the executor is the server's alone: op() works, run() and refreshes
    do not.
    """

    def __init__(self, compiled: Compiled, params: CkksParams, keys: ClientKeys | None = None,
                 seed: int | None = None, cache: bool = True,
                 public: PublicContext | None = None, weights: WeightStore | None = None) -> None:
        if params.slots != compiled.circuit.n_slots:
            raise CircuitError(f"circuit built for {compiled.circuit.n_slots} slots, parameters give {params.slots}")
        self.compiled, self.params = compiled, params
        if public is None:
            keys = keys or keygen(params, sorted(compiled.circuit.rotation_steps()))
            public = keys.public_context()
        self.keys, self.public = keys, public
        self.ev = CkksEvaluator(self.public)
        self.ctx = self.public.context
        self.levels, self.degrees = levels_and_degrees(compiled.circuit)
        if self.levels.max() > params.depth:
            raise CircuitError(f"circuit reaches level {self.levels.max()} > chain of {params.depth}")
        self.weights: WeightStore | None = (WeightStore() if weights is None else weights) if cache else None
        self._rng = np.random.default_rng(seed)  # the refresh masks (refresh.masked); seeded: reproducible runs

    # -- plaintexts -----------------------------------------------------------------
    def prepare(self, nodes: Collection[int] | None = None) -> int:
        """Encode every weight plaintext at the chain index where it is used, ahead of requests.

        Server set-up, like loading a model: the first request then runs as
        fast as later ones. The level pass says where each is used, and the
        scale invariant (a ciphertext at index c carries Delta_c) gives the
        scale it is encoded at, exactly as _weight would. `nodes`: only
        the weights these nodes use (a lane worker's). Returns how many
        distinct weight plaintexts they are.
        """
        if self.weights is None:
            return 0
        circuit = self.circuit
        keys = set()
        for kind in (OpKind.MUL_PLAIN, OpKind.ADD_PLAIN):
            for i in circuit.of_kind(kind):
                x, const = circuit.nodes[i].args
                payload = circuit.consts[circuit.nodes[const].arg]
                if (nodes is not None and i not in nodes) or isinstance(payload, str) or self.degrees[x] != 1:
                    continue
                c = self.params.depth - int(self.levels[x])  # a rescaled operand there carries Delta_c
                keys.add(self._weight_key(kind, payload, c, self.ev.scales[c]))
                self._weight(kind, payload, c, self.ev.scales[c], {})
        return len(keys)

    def _weight_key(self, kind: OpKind, payload: np.ndarray, c: int, ct_scale: float) -> tuple:
        assert self.weights is not None
        return "weight", self.weights.digest(payload), kind.value, c, ct_scale

    def _weight(self, kind: OpKind, payload: Plain, c: int, ct_scale: float,
                public: dict[str, np.ndarray]) -> Plaintext:
        """The plaintext a MUL_PLAIN (factor) or ADD_PLAIN (addend) node applies to a ciphertext at chain
        index c with scale ct_scale.

        A factor is encoded so that the later rescale lands on Delta_{c-1}
        exactly, an addend at the ciphertext's own scale. Weights are encoded
        once per (values, chain index, scale) and kept in the store;
        per-request plaintexts (named payloads) are encoded for each request.
        """
        scale = self.ev.plain_scale(c, ct_scale) if kind is OpKind.MUL_PLAIN else ct_scale
        if isinstance(payload, str) or self.weights is None:
            return self.ev.encode(resolve(payload, public), c, scale)
        return self.weights.get(self._weight_key(kind, payload, c, ct_scale), lambda: self.ev.encode(payload, c, scale))

    # -- evaluation -------------------------------------------------------------------
    def run(self, x0: np.ndarray, m: np.ndarray, link: LaneLink | None = None) -> EncryptedResult:
        """One sentence, encryption to decryption, both parties in this process (interpret.py walks the
        circuit; each refresh is answered here with the client keys); with a link, other lanes' nodes
        come through it."""
        if self.keys is None:
            raise CircuitError("this executor holds public keys only: it cannot encrypt, refresh or decrypt")
        comp = self.compiled
        cpu = time.process_time()
        backend = SealBackend(self, comp.public_plaintexts(m))
        t = time.perf_counter()
        inputs = {k: self.keys.encrypt(v, self.params.depth) for k, v in comp.pack_input(x0, m).items()}
        client = time.perf_counter() - t

        def refresh(point: RefreshPoint) -> Answer:
            nonlocal client
            got, on_client = self.refresh(point, backend.public)
            backend.client += on_client
            client += on_client
            return got

        outputs = answered(interpret(self.circuit, backend, inputs, link), refresh)
        t = time.perf_counter()
        out = np.asarray(self.keys.decrypt(outputs["logits"]))
        client += time.perf_counter() - t
        return EncryptedResult(comp.read_logits(out), backend.chain, len(self.circuit.of_kind(OpKind.REFRESH)),
                               dict(backend.seconds), client, time.process_time() - cpu)

    def evaluation(self, inputs: dict[str, Ciphertext], public: dict[str, np.ndarray], link: LaneLink | None = None,
                   before: Callable[[], None] | None = None) -> Traversal:
        """The server's walk, public keys only: yields a RefreshPoint per round trip for the caller to
        answer (evaluation.py: over the network), returns the output ciphertexts."""
        return interpret(self.circuit, SealBackend(self, public, before), inputs, link)

    @property
    def circuit(self) -> Circuit:
        return self.compiled.circuit

    def op(self, node: Node, a: list, public: dict[str, np.ndarray]) -> Ciphertext:
        """One server-side op (not INPUT, CONST, REFRESH or OUTPUT); CONST arguments are (const id, payload)."""
        op, ev = node.op, self.ev
        if op is OpKind.ADD:  # operands at one level (the level pass): no alignment happens
            return ev.add(a[0], a[1])
        if op is OpKind.SUB:
            return ev.sub(a[0], a[1])
        if op is OpKind.ROTATE:
            return ev.rotate(a[0], node.arg)
        if op is OpKind.MOD_SWITCH:  # drop_to keeps Delta exact, so only for rescaled operands
            if self.degrees[node.args[0]] != 1:
                raise CircuitError("mod_switch of a product awaiting its rescale")
            return ev.drop_to(a[0], ev.level(a[0]) - node.arg)
        if op is OpKind.ADD_PLAIN:
            return ev.add_encoded(a[0], self._weight(op, a[1], ev.level(a[0]), a[0].scale, public))
        if op is OpKind.MUL_PLAIN:
            return ev.multiply_encoded(a[0], self._weight(op, a[1], ev.level(a[0]), a[0].scale, public))
        if op is OpKind.MUL:
            return ev.multiply(a[0], a[1])
        if op is OpKind.RESCALE:
            return ev.rescale(a[0])
        if op is OpKind.POLY and len(a) > 1:  # mask folded into the plan
            mask = np.asarray(resolve(a[1], public))
            plan = masked_plan_of(node.fn)
            return plan.run(a[0], mask, ev if self.weights is None else _StoredMasks(ev, self.weights, plan, mask))
        if op is OpKind.POLY:
            plan = plan_of(node.fn)
            if plan is None:
                raise CircuitError(f"{node.fn.name} has no evaluation plan")
            return plan.run(a[0], ev)
        raise CircuitError(f"no encrypted semantics for {op.value}")

    def refresh(self, point: RefreshPoint, public: dict[str, np.ndarray]) -> tuple[Answer, float]:
        """A round trip played in-process, as the server and a client play it (refresh.py): the masked
        Refresh answered here with the client keys. Also the client's seconds."""
        trip = masked(point, public, self.ev, self._rng)
        request = next(trip)
        t = time.perf_counter()
        fresh = answer(self.keys, request, public, self.params.depth)
        on_client = time.perf_counter() - t
        try:
            trip.send(fresh)
        except StopIteration as done:
            return done.value, on_client
        raise CircuitError("a refresh round trip asked the client twice")


class _StoredMasks:
    """A masked plan's backend: the evaluator, with its vector plaintexts (constant * key mask) kept in
    the weight store per (plan, mask, instruction, chain index, scale).

    Every ciphertext of one attention shift has the same mask (arrange.shift_mask)
    and its layer's fit, so they share one set of plaintexts, and so do later
    sentences of the same length, of any key set. Keyed by the mask's own
    bytes, the store can never serve another length's plaintexts.
    """

    def __init__(self, ev: CkksEvaluator, store: WeightStore, plan: MaskedPlan, mask: np.ndarray) -> None:
        self.ev, self.store, self.n = ev, store, 0
        self.prefix = ("mask", plan, store.digest(mask))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ev, name)

    def _plain(self, values: np.ndarray, level: int, scale: float) -> Plaintext:
        self.n += 1
        return self.store.get((*self.prefix, self.n, level, scale), lambda: self.ev.encode(values, level, scale))

    def lin_plain(self, xs: list[Ciphertext], values: list[np.ndarray], drop: int) -> Ciphertext:
        """As CkksEvaluator.lin, its vector plaintexts from this cache."""
        return self.ev.lin(xs, values, drop, encode=self._plain)

    def add_plain(self, a: Ciphertext, values: np.ndarray) -> Ciphertext:
        return self.ev.add_encoded(a, self._plain(values, self.ev.level(a), a.scale))
