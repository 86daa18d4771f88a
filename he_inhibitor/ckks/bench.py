"""Per-primitive latency table, measured on this machine (the simulator's cost model).

Costs depend on the level: every operation works on (level + 1) RNS limbs, and
key switching (relinearization, rotation) additionally on the special prime.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .evaluator import CkksEvaluator
from .keys import keygen
from .params import CkksParams

OPS = ("mul", "square", "mul_const", "mul_plain", "add", "rotate")


def _timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_costs(params: CkksParams, repeats: int = 3, seed: int = 0) -> dict[str, dict[int, float]]:
    """Best-of-`repeats` seconds per op at every level l >= 1 (l = chain index of the inputs).

    mul and square include relinearization and rescale; mul_const/mul_plain
    include the rescale and the encoding of the constant; rotate is one key
    switch with a step that has its own Galois key.
    """
    keys = keygen(params, rotation_steps=[1])
    ev = CkksEvaluator(keys.public_context())
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, params.slots)
    w = x.tolist()
    ct = keys.encrypt(x)
    table: dict[str, dict[int, float]] = {op: {} for op in OPS}
    for level in range(params.depth, 0, -1):
        a = ev.drop_to(ct, level)
        runs = {"mul": lambda: ev.mul(a, a), "square": lambda: ev.square(a), "mul_const": lambda: ev.mul_const(a, 0.5),
                "mul_plain": lambda: ev.mul_plain(a, w), "add": lambda: ev.add(a, a), "rotate": lambda: ev.rotate(a, 1)}
        for op, fn in runs.items():
            table[op][level] = _timed(fn, repeats)
    return table
