"""The server's half of an encrypted evaluation: a compiled circuit, a PublicContext, no secret key.

`circuit.encrypted.EncryptedExecutor.run` plays both parties in one process
(it encrypts, decrypts and refreshes with the client's keys). The server needs
only the evaluation loop, with each client-aided refresh turned into a round
trip: `CircuitEvaluator.run` is a generator that yields a `Refresh` (masked
ciphertexts and the public map the client applies to them, arrange.py),
receives the client's fresh encryptions of the map's outputs, unmasks them
and goes on, and finally returns the output ciphertexts. A bucket's sentences
run the circuit of their length's attention plan (circuit/bundle.Bucket). The per-op semantics are the executor's own
(`EncryptedExecutor.op`, weights encoded exactly as the encrypted executor
does), so server and in-process results are the same computation.

Interface assumed from circuit/ (to be replaced when it exposes a keyless
evaluation): EncryptedExecutor(compiled, params, keys, cache) reads only
`keys.public_context()` at construction; `op(node, args, public_plaintexts)`
evaluates one non-refresh, non-output op; CONST values are (const id, payload).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from he_inhibitor.ckks import CkksParams, PublicContext
from he_inhibitor.circuit.arrange import ShiftPlan
from he_inhibitor.circuit.bundle import Bucket
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.ir import Circuit, Node, OpKind, refresh_groups
from he_inhibitor.circuit.plain import last_uses, resolve
from he_inhibitor.service import sealio
from he_inhibitor.service.cancel import checkpoint
from he_inhibitor.service.protocol import Signature



@dataclass(frozen=True)
class Refresh:
    """One refresh round trip: masked ciphertexts for the client, who returns, for each public map in
    `maps` (arrange.MAP_*; None: the ciphertexts themselves), fresh encryptions of its `outputs[k]`
    result ciphertexts, concatenated in that order."""

    cts: list[seal.Ciphertext]
    maps: tuple[str | None, ...]
    outputs: tuple[int, ...]


Evaluation = Generator[Refresh, list[seal.Ciphertext], dict[str, seal.Ciphertext]]


class _PublicOnly:
    """What EncryptedExecutor asks of its keys at construction, and nothing secret."""

    def __init__(self, public: PublicContext) -> None:
        self._public = public

    def public_context(self) -> PublicContext:
        return self._public


def signature_of(bucket: Bucket | Compiled, params: CkksParams, labels: tuple[str, ...]) -> Signature:
    """A bucket's client-facing description: parameters, the layout of x, the plan of every length."""
    if isinstance(bucket, Compiled):
        bucket = Bucket.of(bucket, params)
    compiled = bucket.plan_for(max(bucket.plans)).compiled
    circuit = compiled.circuit
    n_labels = compiled.pool_w.shape[1]
    if len(labels) != n_labels:
        raise ValueError(f"{len(labels)} label names for a circuit with {n_labels} logits")
    logit_slots = tuple(int(s) for s in compiled.read_logits(np.arange(circuit.n_slots, dtype=np.float64)))
    return Signature(
        poly_modulus_degree=params.poly_modulus_degree, coeff_bits=tuple(params.coeff_bits),
        scale_bits=params.scale_bits, T=compiled.T, n_slots=circuit.n_slots,
        block_of=tuple(compiled.layout.block_of), outputs=tuple(circuit.outputs),
        input_level=params.depth, rotation_steps=tuple(bucket.rotation_steps),
        logit_slots=logit_slots, labels=tuple(labels), depth=bucket.plan_for(max(bucket.plans)).depth,
        refreshes=max(bucket.trips.values()), n_heads=compiled.n_heads, plans=bucket.plans_json(),
        round_trips=bucket.trips_json(),
    )


class CircuitEvaluator:
    """One client's evaluation keys bound to a bucket's circuits (one per attention plan, made when a
    sentence first needs it).

    Weight plaintexts are encoded per request (cache=False): the executor's
    cache lives per instance, i.e. per registered key, and would multiply the
    server's memory by the registry size.
    """

    def __init__(self, bucket: Bucket | Compiled, params: CkksParams, public: PublicContext, lanes: Any = None) -> None:
        self.bucket = Bucket.of(bucket, params) if isinstance(bucket, Compiled) else bucket
        self.params = params
        self.public = public
        self._q_last = float(public.context.last_context_data().parms().coeff_modulus()[0].value())
        self._rng = np.random.default_rng()  # OS entropy: the client must not predict the masks
        self._seal = seal.Evaluator(public.context)
        self._executors: dict[ShiftPlan | None, EncryptedExecutor] = {}
        # serve --ray: lanes 1..K-1 of each evaluation on Ray actors (circuit/ray_lanes.py, a RayLanes pool),
        # or the whole evaluation on a Ray actor (circuit/ray_sentences.py, a RaySentences pool)
        self._lanes = lanes
        if lanes is not None:
            from he_inhibitor.circuit.ray_lanes import public_blob

            self._lane_blob = lambda: public_blob(public)  # rebuilt only if the pool dropped the keys
            self._lane_key = lanes.register_keys(self._lane_blob())

    def compiled_for(self, n_tokens: int) -> Compiled:
        return self.bucket.plan_for(n_tokens).compiled

    def _executor(self, compiled: Compiled) -> EncryptedExecutor:
        if compiled.plan not in self._executors:
            self._executors[compiled.plan] = EncryptedExecutor(compiled, self.params, keys=_PublicOnly(self.public),
                                                               cache=False)
        return self._executors[compiled.plan]

    def run(self, inputs: list[seal.Ciphertext], n_tokens: int) -> Evaluation:
        """Evaluate on ciphertexts in the order of the signature's input names for n_tokens;
        yields one Refresh per round trip."""
        comp = self.compiled_for(n_tokens)
        m = (np.arange(comp.T) < n_tokens).astype(np.float64)
        if hasattr(self._lanes, "evaluation"):  # the whole evaluation on a Ray actor, refreshes relayed
            return (yield from self._lanes.evaluation(self._lanes.register(comp, self.params), self._lane_key,
                                                      self._lane_blob, [sealio.to_bytes(c) for c in inputs],
                                                      n_tokens, self.public.context))
        ex = self._executor(comp)
        circuit = comp.circuit
        by_name = dict(zip(comp.input_names(), inputs, strict=True))
        public = comp.public_plaintexts(m)
        drops = last_uses(circuit)
        groups = {i: (cts, nodes) for cts, nodes in refresh_groups(circuit).items() for i in nodes}
        refreshed: dict[tuple[int, ...], dict[str | None, list[seal.Ciphertext]]] = {}
        values: dict[int, object] = {}
        outputs: dict[str, seal.Ciphertext] = {}
        link = None if self._lanes is None else self._lanes.link(
            self._lanes.register(comp, self.params), self._lane_key, m, self.public.context, self._lane_blob)
        for i, node in enumerate(circuit.nodes):
            checkpoint()  # a disconnected client's evaluation stops here (service/cancel.py)
            if link is not None and node.op is not OpKind.CONST and link.remote(i):  # on a Ray lane worker
                for j in drops[i]:
                    values.pop(j, None)
                continue
            if link is not None:
                for j in node.args:
                    if j not in values:
                        values[j] = link.receive(j)
            if node.op is OpKind.CONST:
                values[i] = (node.arg, circuit.consts[node.arg])
            elif node.op is OpKind.INPUT:
                values[i] = by_name[node.name]
            else:
                a = [values[j] for j in node.args]
                if node.op is OpKind.REFRESH:
                    cts, members = groups[i]
                    if cts not in refreshed:
                        refreshed[cts] = yield from self._refresh([values[j] for j in cts],
                                                                  _maps(circuit, members), public)
                    values[i] = refreshed[cts][_map_name(circuit, node)][node.arg]
                elif node.op is OpKind.OUTPUT:
                    values[i] = outputs[node.name] = a[0]
                else:
                    values[i] = ex.op(node, a, public)
            if link is not None and node.op is not OpKind.CONST:
                link.offer(i, values[i])
            for j in drops[i]:
                del values[j]
        return outputs

    def reply_bytes(self, ct: seal.Ciphertext) -> bytes:
        """A ciphertext the client will only decrypt, mod-switched to the last level: fewer limbs, same message."""
        out = seal.Ciphertext()
        self._seal.mod_switch_to(ct, self.public.context.last_parms_id(), out)
        return sealio.to_bytes(out)

    def mask_bound(self, scale: float) -> float:
        """Half-width R of the refresh mask for a value at `scale`: half the headroom of the reply's level.

        The reply is mod-switched to the last level, modulus q_0; a value v
        decodes there while |v| * scale < q_0 / 2. R = q_0 / (4 scale) leaves
        the other half to the activation itself (|m| < R, far above any
        activation the polynomial bounds allow), and is as wide as the level
        allows: a slot's m + r is then within total-variation distance
        |m| / (2R) of r alone (with the shipped chain, q_0 ~ 2^40 and scale
        2^30: R ~ 256, distance ~ |m| / 512).
        """
        return self._q_last / (4.0 * scale)

    def _refresh(self, cts: list[seal.Ciphertext], maps: dict[str | None, int], public: dict
                 ) -> Generator[Refresh, list[seal.Ciphertext], dict[str | None, list[seal.Ciphertext]]]:
        """Add a uniform mask r in [-R, R] (mask_bound) to each ciphertext; the client returns fresh
        encryptions of f(x + r) for each public map f (or of x + r itself); subtract f(r): f is linear."""
        rs = [self._rng.uniform(-1.0, 1.0, self.params.slots) * self.mask_bound(ct.scale) for ct in cts]
        ev = self._executor(self.compiled_for(max(self.bucket.plans))).ev
        fresh = yield Refresh([ev.add_plain(ct, r) for ct, r in zip(cts, rs)], tuple(maps), tuple(maps.values()))
        if len(fresh) != sum(maps.values()):
            raise ValueError(f"a refresh returns {sum(maps.values())} ciphertexts, not {len(fresh)}")
        out, k = {}, 0
        for name, count in maps.items():
            masks = rs if name is None else resolve(name, public).apply(rs)
            out[name] = [ev.add_plain(c, -r) for c, r in zip(fresh[k:k + count], masks)]
            k += count
        return out


def _map_name(circuit: Circuit, node: Node) -> str | None:
    """The public map a REFRESH node takes an output of (None: the refreshed ciphertext itself)."""
    last = circuit.nodes[node.args[-1]]
    return circuit.consts[last.arg] if last.op is OpKind.CONST else None


def _maps(circuit: Circuit, members: list[int]) -> dict[str | None, int]:
    """A round trip's maps in circuit order, each with the number of its outputs the circuit uses."""
    out: dict[str | None, int] = {}
    for i in members:
        node = circuit.nodes[i]
        name = _map_name(circuit, node)
        out[name] = max(out.get(name, 0), node.arg + 1)  # a plain refresh (None) returns its one ciphertext
    return out
