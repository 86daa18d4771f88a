"""The server's half of an encrypted evaluation: a compiled circuit, a PublicContext, no secret key.

`circuit.encrypted.EncryptedExecutor.run` plays both parties in one process
(it encrypts, decrypts and refreshes with the client's keys). The server needs
only the evaluation loop, with each client-aided refresh turned into a round
trip: `CircuitEvaluator.run` is a generator that yields a masked ciphertext,
receives the client's fresh re-encryption, unmasks it and goes on, and finally
returns the output ciphertexts. The per-op semantics are the executor's own
(`EncryptedExecutor.op`, weights encoded exactly as the encrypted executor
does), so server and in-process results are the same computation.

Interface assumed from circuit/ (to be replaced when it exposes a keyless
evaluation): EncryptedExecutor(compiled, params, keys, cache) reads only
`keys.public_context()` at construction; `op(node, args, public_plaintexts)`
evaluates one non-refresh, non-output op; CONST values are (const id, payload).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from he_inhibitor.ckks import CkksParams, PublicContext
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.ir import OpKind, depth
from he_inhibitor.circuit.plain import last_uses
from he_inhibitor.service import sealio
from he_inhibitor.service.cancel import checkpoint
from he_inhibitor.service.protocol import Signature

Evaluation = Generator[seal.Ciphertext, seal.Ciphertext, dict[str, seal.Ciphertext]]


class _PublicOnly:
    """What EncryptedExecutor asks of its keys at construction, and nothing secret."""

    def __init__(self, public: PublicContext) -> None:
        self._public = public

    def public_context(self) -> PublicContext:
        return self._public


def signature_of(compiled: Compiled, params: CkksParams, labels: tuple[str, ...]) -> Signature:
    """The circuit's client-facing description (inputs in the order `Layout.pack` yields them)."""
    circuit = compiled.circuit
    n_labels = compiled.pool_w.shape[1]
    if len(labels) != n_labels:
        raise ValueError(f"{len(labels)} label names for a circuit with {n_labels} logits")
    inputs = tuple(compiled.pack_input(np.zeros((compiled.T, compiled.layout.d))))
    logit_slots = tuple(int(s) for s in compiled.read_logits(np.arange(circuit.n_slots, dtype=np.float64)))
    return Signature(
        poly_modulus_degree=params.poly_modulus_degree, coeff_bits=tuple(params.coeff_bits),
        scale_bits=params.scale_bits, T=compiled.T, n_slots=circuit.n_slots,
        block_of=tuple(compiled.layout.block_of), inputs=inputs, outputs=tuple(circuit.outputs),
        input_level=params.depth, rotation_steps=tuple(sorted(circuit.rotation_steps())),
        logit_slots=logit_slots, labels=tuple(labels), depth=depth(circuit, through_refresh=True),
        refreshes=len(circuit.of_kind(OpKind.REFRESH)),
    )


class CircuitEvaluator:
    """One client's evaluation keys bound to the circuit.

    Weight plaintexts are encoded per request (cache=False): the executor's
    cache lives per instance, i.e. per registered key, and would multiply the
    server's memory by the registry size.
    """

    def __init__(self, compiled: Compiled, params: CkksParams, public: PublicContext, lanes: Any = None) -> None:
        self.compiled = compiled
        self.params = params
        self.public = public
        self._q_last = float(public.context.last_context_data().parms().coeff_modulus()[0].value())
        self._ex = EncryptedExecutor(compiled, params, keys=_PublicOnly(public), cache=False)
        self._rng = np.random.default_rng()  # OS entropy: the client must not predict the masks
        self._seal = seal.Evaluator(public.context)
        self._names = list(compiled.pack_input(np.zeros((compiled.T, compiled.layout.d))))
        self._drops = last_uses(compiled.circuit)
        # serve --ray: lanes 1..K-1 of each evaluation on Ray actors (circuit/ray_lanes.py, a RayLanes pool),
        # or the whole evaluation on a Ray actor (circuit/ray_sentences.py, a RaySentences pool)
        self._lanes = lanes
        if lanes is not None:
            from he_inhibitor.circuit.ray_lanes import public_blob

            self._lane_blob = lambda: public_blob(public)  # rebuilt only if the pool dropped the keys
            self._lane_ids = lanes.register(compiled, params), lanes.register_keys(self._lane_blob())

    def run(self, inputs: list[seal.Ciphertext], n_tokens: int) -> Evaluation:
        """Evaluate on ciphertexts in signature order; yields one masked ciphertext per refresh."""
        if hasattr(self._lanes, "evaluation"):  # the whole evaluation on a Ray actor, refreshes relayed
            return (yield from self._lanes.evaluation(*self._lane_ids, self._lane_blob,
                                                      [sealio.to_bytes(c) for c in inputs], n_tokens,
                                                      self.public.context))
        circuit, comp = self.compiled.circuit, self.compiled
        by_name = dict(zip(self._names, inputs, strict=True))
        public = comp.public_plaintexts((np.arange(comp.T) < n_tokens).astype(np.float64))
        values: dict[int, object] = {}
        outputs: dict[str, seal.Ciphertext] = {}
        link = None if self._lanes is None or hasattr(self._lanes, "evaluation") else self._lanes.link(
            *self._lane_ids, (np.arange(comp.T) < n_tokens).astype(np.float64), self.public.context,
            self._lane_blob)
        for i, node in enumerate(circuit.nodes):
            checkpoint()  # a disconnected client's evaluation stops here (service/cancel.py)
            if link is not None and node.op is not OpKind.CONST and link.remote(i):  # on a Ray lane worker
                for j in self._drops[i]:
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
                    values[i] = yield from self._refresh(a[0])
                elif node.op is OpKind.OUTPUT:
                    values[i] = outputs[node.name] = a[0]
                else:
                    values[i] = self._ex.op(node, a, public)
            if link is not None and node.op is not OpKind.CONST:
                link.offer(i, values[i])
            for j in self._drops[i]:
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

    def _refresh(self, ct: seal.Ciphertext) -> Evaluation:
        """Add a uniform mask in [-R, R] (mask_bound), let the client re-encrypt, subtract the mask."""
        r = self._rng.uniform(-1.0, 1.0, self.params.slots) * self.mask_bound(ct.scale)
        fresh = yield self._ex.ev.add_plain(ct, r)
        return self._ex.ev.add_plain(fresh, -r)
