"""Per-primitive, per-level SEAL timings measured on this machine (the simulator's latency model).

A primitive's cost depends on the ring degree and on how many data primes the
ciphertext still carries, not on which chain it came from, so one table per N
(keyed by primes remaining) serves every chain length at that N. `measure`
times each primitive with `tenseal.sealapi` on one core (its calls hold the
GIL), in CPU time; `CostTable.seconds` is what the simulator sums.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from he_inhibitor.paths import COSTS_DIR

PRIMITIVES = ("rotate", "mul", "relinearize", "rescale", "mul_plain", "add", "add_plain", "mod_switch", "encode")


@dataclass(frozen=True)
class CostTable:
    n: int
    table: dict[str, dict[int, float]]  # primitive -> primes remaining -> seconds

    def seconds(self, op: str, primes: int) -> float:
        """Cost of one `op` on a ciphertext with `primes` data primes (nearest measured count)."""
        row = self.table.get(op)
        if not row:
            return 0.0
        nearest = min(row, key=lambda p: abs(p - primes))
        return row[nearest]

    def to_json(self) -> str:
        return json.dumps({"n": self.n, "table": {op: {str(p): s for p, s in row.items()}
                                                   for op, row in self.table.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CostTable:
        d = json.loads(text)
        return cls(int(d["n"]), {op: {int(p): float(s) for p, s in row.items()} for op, row in d["table"].items()})

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def shipped(cls, n: int) -> CostTable | None:
        """The table measured on this machine for ring degree n (circuit/data), if there is one."""
        path = COSTS_DIR / f"costs_n{n}.json"
        return cls.load(path) if path.is_file() else None


def measure(n: int = 16384, levels: int = 11, scale_bits: int = 30, reps: int = 3) -> CostTable:
    """Time every primitive at every level of a [50, scale_bits x levels, 50] chain."""
    import tenseal.sealapi as seal

    from he_inhibitor.ckks import CkksParams, keygen
    from he_inhibitor.ckks.context import parms_id_at

    params = CkksParams.for_depth(levels, n, scale_bits, 50, 50)
    keys = keygen(params, [1])
    public = keys.public_context()
    ctx = keys.context
    ev = seal.Evaluator(ctx)
    enc = seal.CKKSEncoder(ctx)
    vec = list(np.random.default_rng(0).uniform(-1, 1, n // 2))

    def best(fn) -> float:  # CPU time: on a loaded machine wall clock would time the load
        times = []
        for _ in range(reps):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return min(times)

    table: dict[str, dict[int, float]] = {op: {} for op in PRIMITIVES}
    for level in range(levels, -1, -1):
        primes = level + 1
        ct = keys.encrypt(np.asarray(vec), level)
        ct.scale = 2.0**8  # timings do not depend on the scale; products must stay below q
        pid = parms_id_at(ctx, level)
        pt = seal.Plaintext()
        enc.encode(vec, pid, ct.scale, pt)
        out = seal.Ciphertext()
        table["encode"][primes] = best(lambda: enc.encode(vec, pid, ct.scale, seal.Plaintext()))
        table["rotate"][primes] = best(lambda: ev.rotate_vector(ct, 1, public.galois_keys, out))
        table["add"][primes] = best(lambda: ev.add(ct, ct, out))
        table["add_plain"][primes] = best(lambda: ev.add_plain(ct, pt, out))
        table["mul_plain"][primes] = best(lambda: ev.multiply_plain(ct, pt, out))
        prod = seal.Ciphertext()
        ev.multiply(ct, ct, prod)
        table["mul"][primes] = best(lambda: ev.multiply(ct, ct, seal.Ciphertext()))
        table["relinearize"][primes] = best(lambda: ev.relinearize(prod, public.relin_keys, seal.Ciphertext()))
        if level > 0:
            table["rescale"][primes] = best(lambda: ev.rescale_to_next(ct, seal.Ciphertext()))
            table["mod_switch"][primes] = best(lambda: ev.mod_switch_to_next(ct, seal.Ciphertext()))
    return CostTable(n, table)

