"""Per-primitive SEAL timings at every level: the measurements behind the simulator's cost table
(circuit/costs.py keeps the table; SEAL is only touched here).

A primitive's cost depends on the ring degree and on how many data primes the
ciphertext still carries (every operation works on one RNS limb per prime;
key switching, in relinearization and rotation, also on the special prime),
not on which chain it came from. Each primitive is timed on one core (its
calls hold the GIL), best of `reps`, in CPU time: on a loaded machine wall
clock would time the load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import tenseal.sealapi as seal

from .context import parms_id_at
from .keys import keygen
from .params import CkksParams

PRIMITIVES = ("rotate", "mul", "relinearize", "rescale", "mul_plain", "add", "add_plain", "mod_switch", "encode",
              "encrypt", "decrypt")  # the last two: the client's half of a refresh (encode or decode included)


def _best(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def primitive_seconds(n: int = 16384, levels: int = 11, scale_bits: int = 30, reps: int = 3
                      ) -> dict[str, dict[int, float]]:
    """Seconds of every primitive (PRIMITIVES) by primes remaining, at every level of a
    [50, scale_bits x levels, 50] chain."""
    params = CkksParams.for_depth(levels, n, scale_bits, 50, 50)
    keys = keygen(params, [1])
    public = keys.public_context()
    ctx = keys.context
    ev = seal.Evaluator(ctx)
    enc = seal.CKKSEncoder(ctx)
    vec = list(np.random.default_rng(0).uniform(-1, 1, n // 2))
    table: dict[str, dict[int, float]] = {op: {} for op in PRIMITIVES}
    for level in range(levels, -1, -1):
        primes = level + 1
        ct = keys.encrypt(np.asarray(vec), level)
        ct.scale = 2.0**8  # timings do not depend on the scale; products must stay below q
        pid = parms_id_at(ctx, level)
        pt = seal.Plaintext()
        enc.encode(vec, pid, ct.scale, pt)
        out = seal.Ciphertext()
        table["encode"][primes] = _best(lambda: enc.encode(vec, pid, ct.scale, seal.Plaintext()), reps)
        table["encrypt"][primes] = _best(lambda: keys.encrypt(np.asarray(vec), level), reps)
        table["decrypt"][primes] = _best(lambda: keys.decrypt(ct), reps)
        table["rotate"][primes] = _best(lambda: ev.rotate_vector(ct, 1, public.galois_keys, out), reps)
        table["add"][primes] = _best(lambda: ev.add(ct, ct, out), reps)
        table["add_plain"][primes] = _best(lambda: ev.add_plain(ct, pt, out), reps)
        table["mul_plain"][primes] = _best(lambda: ev.multiply_plain(ct, pt, out), reps)
        prod = seal.Ciphertext()
        ev.multiply(ct, ct, prod)
        table["mul"][primes] = _best(lambda: ev.multiply(ct, ct, seal.Ciphertext()), reps)
        table["relinearize"][primes] = _best(lambda: ev.relinearize(prod, public.relin_keys, seal.Ciphertext()), reps)
        if level > 0:
            table["rescale"][primes] = _best(lambda: ev.rescale_to_next(ct, seal.Ciphertext()), reps)
            table["mod_switch"][primes] = _best(lambda: ev.mod_switch_to_next(ct, seal.Ciphertext()), reps)
    return table
