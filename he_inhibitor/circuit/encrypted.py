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
once per (constant, chain index) and cached across requests.

Refresh nodes play both sides in one process (this executor holds the client
keys): the server adds a uniform mask, the client decrypts and re-encrypts at
the top of the chain, the server subtracts the mask. Each is counted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import tenseal.sealapi as seal

from he_inhibitor.ckks import CkksEvaluator, CkksParams, ClientKeys, keygen
from he_inhibitor.ckks.context import level_of, parms_id_at
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.ir import CircuitError, OpKind, levels_and_degrees
from he_inhibitor.circuit.masked import masked_plan_of
from he_inhibitor.circuit.plain import last_uses, resolve
from he_inhibitor.circuit.poly import folded_fit


@dataclass
class EncryptedResult:
    logits: np.ndarray
    chain_index: dict[int, int]  # node -> SEAL chain index of its ciphertext
    refreshes: int
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (server side)
    client_seconds: float = 0.0  # encryption, refresh round trips, decryption


class EncryptedExecutor:
    """Keys for exactly the circuit's rotation steps; run() evaluates one sentence.

    cache keeps every weight plaintext encoded across requests (about 1 MB
    each at N = 16384: ~2 GB for the two-layer student); without it they are
    encoded as they are used and freed.
    """

    def __init__(self, compiled: Compiled, params: CkksParams, keys: ClientKeys | None = None,
                 mask_bound: float = 16.0, seed: int | None = None, cache: bool = True) -> None:
        if params.slots != compiled.circuit.n_slots:
            raise CircuitError(f"circuit built for {compiled.circuit.n_slots} slots, parameters give {params.slots}")
        self.compiled, self.params = compiled, params
        self.keys = keys or keygen(params, sorted(compiled.circuit.rotation_steps()))
        self.public = self.keys.public_context()
        self.ev = CkksEvaluator(self.public)
        self.ctx = self.public.context
        self.encoder = seal.CKKSEncoder(self.ctx)
        self._seal = seal.Evaluator(self.ctx)
        self.levels, self.degrees = levels_and_degrees(compiled.circuit)
        if self.levels.max() > params.depth:
            raise CircuitError(f"circuit reaches level {self.levels.max()} > chain of {params.depth}")
        self._cache: dict[tuple[int, int], seal.Plaintext] | None = {} if cache else None
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
    def run(self, x0: np.ndarray, m: np.ndarray) -> EncryptedResult:
        circuit, comp = self.circuit, self.compiled
        public = comp.public_plaintexts(m)
        seconds: dict[str, float] = defaultdict(float)
        client = 0.0
        t = time.perf_counter()
        inputs = {k: self.keys.encrypt(v, self.params.depth) for k, v in comp.pack_input(x0).items()}
        client += time.perf_counter() - t
        values: dict[int, object] = {}
        chain: dict[int, int] = {}
        drops = last_uses(circuit)
        refreshes = 0
        out = None
        for i, node in enumerate(circuit.nodes):
            op = node.op
            t = time.perf_counter()
            on_client = 0.0
            if op is OpKind.CONST:
                values[i] = (node.arg, circuit.consts[node.arg])
            elif op is OpKind.INPUT:
                values[i] = inputs[node.name]
            else:
                a = [values[j] for j in node.args]
                if op is OpKind.REFRESH:
                    values[i], on_client = self._refresh(a[0])
                    refreshes += 1
                elif op is OpKind.OUTPUT:
                    c0 = time.perf_counter()
                    out = np.asarray(self.keys.decrypt(a[0]))
                    on_client = time.perf_counter() - c0
                    values[i] = a[0]
                else:
                    values[i] = self._op(node, a, public)
                chain[i] = level_of(self.ctx, values[i])
            seconds[node.stage] += time.perf_counter() - t - on_client
            client += on_client
            for j in drops[i]:
                del values[j]
        return EncryptedResult(comp.read_logits(out), chain, refreshes, dict(seconds), client)

    @property
    def circuit(self):
        return self.compiled.circuit

    def _op(self, node, a: list, public: dict[str, np.ndarray]) -> seal.Ciphertext:
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
            res = masked_plan_of(node.fn).run(a[0], np.asarray(resolve(a[1][1], public)), ev)
        elif op is OpKind.POLY:
            f = folded_fit(node.fn)
            if f is None:
                raise CircuitError(f"{node.fn.name} has no evaluation plan")
            res = f.plan().run(a[0], ev)
        else:
            raise CircuitError(f"no encrypted semantics for {op.value}")
        return res

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
