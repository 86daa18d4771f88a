"""The `encrypted` executor: the circuit on SEAL ciphertexts (helper package `he_inhibitor.ckks`).

Level bookkeeping follows the IR exactly: IR level l is SEAL chain index
depth - l, and every ciphertext node's chain index is recorded so a test can
check that the levels SEAL consumed are the levels the IR predicted.

Scales stay exact (the ckks package's invariant: a ciphertext at chain index
c carries Delta_c): a plaintext multiplied into a ciphertext at index c is
encoded at Delta_{c-1} * q_c / Delta_c, so the products of a linear layer's
diagonals share one scale, are summed (and rotated) before their single
rescale, and land on Delta_{c-1} exactly. Polynomials run their folded
fit's evaluation plan on the ckks evaluator. Weight plaintexts are encoded
once per (constant, chain index) and cached across requests; the key-mask
plaintexts inside masked polynomials depend only on the sentence length, so
they are cached for the last length seen (requests of equal length reuse them).

With a `LaneLink` (ray_lanes.py) only lane-0 nodes run here; values of other
lanes arrive through the link and lane-0 values they need leave through it.

Refresh nodes play both sides in one process (this executor holds the client
keys): the server adds a uniform mask, the client decrypts and re-encrypts at
the top of the chain, the server subtracts the mask. Each is counted.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tenseal.sealapi as seal

from he_inhibitor.ckks import CkksEvaluator, CkksParams, ClientKeys, PublicContext, keygen
from he_inhibitor.ckks.context import level_of, parms_id_at
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.ir import Circuit, CircuitError, OpKind, levels_and_degrees
from he_inhibitor.circuit.masked import masked_plan_of
from he_inhibitor.circuit.plain import last_uses, resolve
from he_inhibitor.circuit.poly import folded_fit


class LaneLink(Protocol):
    """How an executor running one lane exchanges ciphertexts with the others."""

    def remote(self, node: int) -> bool:
        """Whether the node is computed on another lane."""

    def receive(self, node: int) -> seal.Ciphertext: ...

    def offer(self, node: int, ct: seal.Ciphertext) -> None:
        """Send the value if another lane consumes it."""


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


class EncryptedExecutor:
    """Keys for exactly the circuit's rotation steps; run() evaluates one sentence.

    cache keeps every weight plaintext encoded across requests (about 1 MB
    each at N = 16384: ~2 GB for the two-layer student); without it they are
    encoded as they are used and freed. Given `public` (and no keys) the
    executor is the server's alone: op() works, run() and refreshes do not.
    """

    def __init__(self, compiled: Compiled, params: CkksParams, keys: ClientKeys | None = None,
                 mask_bound: float = 16.0, seed: int | None = None, cache: bool = True,
                 public: PublicContext | None = None) -> None:
        if params.slots != compiled.circuit.n_slots:
            raise CircuitError(f"circuit built for {compiled.circuit.n_slots} slots, parameters give {params.slots}")
        self.compiled, self.params = compiled, params
        if public is None:
            keys = keys or keygen(params, sorted(compiled.circuit.rotation_steps()))
            public = keys.public_context()
        self.keys, self.public = keys, public
        self.ev = CkksEvaluator(self.public)
        self.ctx = self.public.context
        self.encoder = seal.CKKSEncoder(self.ctx)
        self._seal = seal.Evaluator(self.ctx)
        self.levels, self.degrees = levels_and_degrees(compiled.circuit)
        if self.levels.max() > params.depth:
            raise CircuitError(f"circuit reaches level {self.levels.max()} > chain of {params.depth}")
        self._cache: dict[tuple[int, int], seal.Plaintext] | None = {} if cache else None
        self._masks: dict[int, tuple[bytes, dict[tuple[int, int], seal.Plaintext]]] = {}  # see _MaskCached
        self._rng = np.random.default_rng(seed)
        self.mask_bound = mask_bound

    # -- plaintexts -----------------------------------------------------------------
    def _prime(self, c: int) -> float:
        return float(self.ctx.get_context_data(parms_id_at(self.ctx, c)).parms().coeff_modulus()[-1].value())

    def _encode(self, values, c: int, scale: float) -> seal.Plaintext:
        pt = seal.Plaintext()
        v = values if np.isscalar(values) else np.broadcast_to(values, (self.params.slots,)).tolist()
        self.encoder.encode(float(v) if np.isscalar(v) else v, parms_id_at(self.ctx, c), scale, pt)
        return pt

    def prepare(self) -> int:
        """Encode every weight plaintext at the chain index where it is used, ahead of requests.

        Server set-up, like loading a model: the first request then runs as
        fast as later ones. The level pass says where each is used, and the
        scale invariant (a ciphertext at index c carries Delta_c) gives the
        scale it is encoded at, exactly as _multiplier would. Returns the count.
        """
        if self._cache is None:
            return 0
        circuit = self.circuit
        for i in circuit.of_kind(OpKind.MUL_PLAIN):
            x, const = circuit.nodes[i].args
            arg = circuit.nodes[const].arg
            payload = circuit.consts[arg]
            c = self.params.depth - int(self.levels[x])
            if isinstance(payload, str) or (arg, c) in self._cache:
                continue
            self._cache[(arg, c)] = self._encode(payload, c, self.ev.scales[c - 1] * self._prime(c) / self.ev.scales[c])
        return len(self._cache)

    def _multiplier(self, const_id: int, payload, ct: seal.Ciphertext, public: dict[str, np.ndarray]):
        """A plaintext factor for ct at chain index c, scaled so the later rescale lands on Delta_{c-1}.

        Weights are encoded once per chain index and cached; per-request
        plaintexts (named payloads) are encoded for each request.
        """
        c = level_of(self.ctx, ct)
        scale = self.ev.scales[c - 1] * self._prime(c) / ct.scale
        if isinstance(payload, str) or self._cache is None:
            return self._encode(resolve(payload, public), c, scale)
        key = (const_id, c)
        if key not in self._cache:
            self._cache[key] = self._encode(payload, c, scale)
        return self._cache[key]

    # -- evaluation -------------------------------------------------------------------
    def run(self, x0: np.ndarray, m: np.ndarray, link: LaneLink | None = None) -> EncryptedResult:
        """One sentence, encryption to decryption; with a link, other lanes' nodes come through it."""
        if self.keys is None:
            raise CircuitError("this executor holds public keys only: it cannot encrypt, refresh or decrypt")
        circuit, comp = self.circuit, self.compiled
        cpu = time.process_time()
        public = comp.public_plaintexts(m)
        seconds: dict[str, float] = defaultdict(float)
        client = 0.0
        t = time.perf_counter()
        inputs = {k: self.keys.encrypt(v, self.params.depth) for k, v in comp.pack_input(x0, m).items()}
        client += time.perf_counter() - t
        values: dict[int, object] = {}
        chain: dict[int, int] = {}
        drops = last_uses(circuit)
        refreshes = 0
        mapped: dict[tuple[int, ...], tuple[list[seal.Ciphertext], float]] = {}  # a map's outputs, by its inputs
        out = None
        for i, node in enumerate(circuit.nodes):
            op = node.op
            if link is not None and op is not OpKind.CONST and link.remote(i):
                continue
            t = time.perf_counter()
            on_client = 0.0
            if op is OpKind.CONST:
                values[i] = (node.arg, circuit.consts[node.arg])
            elif op is OpKind.INPUT:
                values[i] = inputs[node.name]
            else:
                for j in node.args:
                    if j not in values:  # computed on another lane
                        values[j] = link.receive(j)
                a = [values[j] for j in node.args]
                if op is OpKind.REFRESH and len(a) > 1:  # one round trip per group of outputs of a map
                    if node.args not in mapped:
                        mapped[node.args] = self._refresh_map([a[j] for j in range(len(a) - 1)],
                                                              resolve(a[-1][1], public))
                    outs, on_client = mapped[node.args]
                    values[i] = outs[node.arg]
                    on_client = on_client if node.arg == 0 else 0.0
                    refreshes += 1
                elif op is OpKind.REFRESH:
                    values[i], on_client = self._refresh(a[0])
                    refreshes += 1
                elif op is OpKind.OUTPUT:
                    c0 = time.perf_counter()
                    out = np.asarray(self.keys.decrypt(a[0]))
                    on_client = time.perf_counter() - c0
                    values[i] = a[0]
                else:
                    values[i] = self.op(node, a, public)
            if op is not OpKind.CONST:
                chain[i] = level_of(self.ctx, values[i])
                if link is not None:
                    link.offer(i, values[i])
            seconds[node.stage] += time.perf_counter() - t - on_client
            client += on_client
            for j in drops[i]:
                values.pop(j, None)
        return EncryptedResult(comp.read_logits(out), chain, refreshes, dict(seconds), client,
                               time.process_time() - cpu)

    @property
    def circuit(self):
        return self.compiled.circuit

    def op(self, node, a: list, public: dict[str, np.ndarray]) -> seal.Ciphertext:
        """One server-side op (not INPUT, CONST, REFRESH or OUTPUT); CONST arguments are (const id, payload)."""
        op, ev, sev = node.op, self.ev, self._seal
        res = seal.Ciphertext()
        if op is OpKind.ADD:
            sev.add(a[0], a[1], res)
        elif op is OpKind.SUB:
            sev.sub(a[0], a[1], res)
        elif op is OpKind.ROTATE:
            res = ev.rotate(a[0], node.arg)
        elif op is OpKind.MOD_SWITCH:  # drop_to keeps Delta exact, so only for rescaled operands
            if self.degrees[node.args[0]] != 1:
                raise CircuitError("mod_switch of a product awaiting its rescale")
            res = ev.drop_to(a[0], level_of(self.ctx, a[0]) - node.arg)
        elif op is OpKind.ADD_PLAIN:
            const_id, payload = a[1]
            sev.add_plain(a[0], self._encode(resolve(payload, public), level_of(self.ctx, a[0]), a[0].scale), res)
        elif op is OpKind.MUL_PLAIN:
            sev.multiply_plain(a[0], self._multiplier(*a[1], a[0], public), res)
        elif op is OpKind.MUL:
            sev.multiply(a[0], a[1], res)
            sev.relinearize_inplace(res, self.public.relin_keys)
        elif op is OpKind.RESCALE:
            c = level_of(self.ctx, a[0])
            sev.rescale_to_next(a[0], res)
            res.scale = self.ev.scales[c - 1]  # equal up to float rounding (see _multiplier)
        elif op is OpKind.POLY and len(a) > 1:  # mask folded into the plan
            mask = np.asarray(resolve(a[1][1], public))
            backend = ev if self._cache is None else _MaskCached(self, mask, id(node))
            res = masked_plan_of(node.fn).run(a[0], mask, backend)
        elif op is OpKind.POLY:
            f = folded_fit(node.fn)
            if f is None:
                raise CircuitError(f"{node.fn.name} has no evaluation plan")
            res = f.plan().run(a[0], ev)
        else:
            raise CircuitError(f"no encrypted semantics for {op.value}")
        return res

    def _refresh_map(self, cts: list[seal.Ciphertext], f) -> tuple[list[seal.Ciphertext], float]:
        """Mask each input, let the client decrypt, apply the public map f and re-encrypt, then
        subtract f(mask): f is linear, so f(x + r) - f(r) = f(x). Also the client's seconds."""
        rs = [self._rng.uniform(-self.mask_bound, self.mask_bound, self.params.slots) for _ in cts]
        masked = []
        for ct, r in zip(cts, rs):
            out = seal.Ciphertext()
            self._seal.add_plain(ct, self._encode(r, level_of(self.ctx, ct), ct.scale), out)
            masked.append(out)
        t = time.perf_counter()
        fresh = [self.keys.encrypt(y, self.params.depth)  # the client's side
                 for y in f.apply([np.asarray(self.keys.decrypt(c)) for c in masked])]
        on_client = time.perf_counter() - t
        outs = []
        for ct, fr in zip(fresh, f.apply(rs)):
            out = seal.Ciphertext()
            self._seal.sub_plain(ct, self._encode(fr, self.params.depth, ct.scale), out)
            outs.append(out)
        return outs, on_client

    def _refresh(self, ct: seal.Ciphertext) -> tuple[seal.Ciphertext, float]:
        """Mask, client re-encryption at the top of the chain, unmask; also the client's seconds."""
        r = self._rng.uniform(-self.mask_bound, self.mask_bound, self.params.slots)
        masked = seal.Ciphertext()
        self._seal.add_plain(ct, self._encode(r, level_of(self.ctx, ct), ct.scale), masked)
        t = time.perf_counter()
        fresh = self.keys.encrypt(self.keys.decrypt(masked), self.params.depth)  # the client's side
        on_client = time.perf_counter() - t
        out = seal.Ciphertext()
        self._seal.sub_plain(fresh, self._encode(r, self.params.depth, fresh.scale), out)
        return out, on_client


class _MaskCached:
    """A masked plan's backend: the evaluator, with its vector plaintexts (constant * key mask)
    encoded once per (instruction, chain index) and kept per node for the last mask it saw.

    Keyed by the mask's own bytes, the cache can never serve another sentence
    length's plaintexts, and it holds one length at a time (~300 MB at N = 16384).
    """

    def __init__(self, ex: EncryptedExecutor, mask: np.ndarray, node: int) -> None:
        digest = hashlib.blake2b(mask.tobytes(), digest_size=16).digest()
        if ex._masks.get(node, (None,))[0] != digest:
            ex._masks[node] = (digest, {})
        self.ex, self.cache, self.n = ex, ex._masks[node][1], 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ex.ev, name)

    def _plain(self, values: np.ndarray, ct: seal.Ciphertext, scale: float) -> seal.Plaintext:
        c = level_of(self.ex.ctx, ct)
        k = (self.n, c)
        self.n += 1
        if k not in self.cache:
            self.cache[k] = self.ex._encode(values, c, scale)
        return self.cache[k]

    def mul_plain(self, a: seal.Ciphertext, values: np.ndarray) -> seal.Ciphertext:
        """As CkksEvaluator.mul_plain: encoded so that the rescale lands on Delta_{c-1} exactly."""
        ex = self.ex
        c = level_of(ex.ctx, a)
        out = seal.Ciphertext()
        ex._seal.multiply_plain(a, self._plain(values, a, ex.ev.scales[c - 1] * ex._prime(c) / a.scale), out)
        ex._seal.rescale_to_next_inplace(out)
        out.scale = ex.ev.scales[c - 1]
        return out

    def add_plain(self, a: seal.Ciphertext, values: np.ndarray) -> seal.Ciphertext:
        out = seal.Ciphertext()
        self.ex._seal.add_plain(a, self._plain(values, a, a.scale), out)
        return out
