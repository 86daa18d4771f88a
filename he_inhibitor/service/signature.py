"""A bucket's client-facing signature (service/protocol.Signature): what a client needs to talk to the server."""

from __future__ import annotations

import numpy as np

from he_inhibitor.ckks import CkksParams
from he_inhibitor.circuit.bundle import Bucket
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.service.protocol import Signature


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
