"""The one executor entry point: `make_executor(Mode.PLAIN | SIMULATE | ENCRYPTED, compiled, ...)` (design §9.1).

Concrete-ML's `FheMode` idea: one circuit, one call, the mode picks the backend
the one traversal (interpret.py) runs on:

* PLAIN: float64 numpy (plain.py),
* SIMULATE: plain plus levels, ranges, noise and cost (simulate.py),
* ENCRYPTED: SEAL (encrypted.py); with client keys it plays both parties in
  one process; with only a PublicContext it is the server's (its
  `evaluation` yields each refresh round trip); given a RayLanes `pool` a
  circuit with several lanes runs its lanes 1..K-1 on the pool's actors.

Every executor's `run(x0, m)` returns a result with `logits`; the simulator's
and the encrypted executor's carry their own extras (bounds, counts, timings,
chain indices). predict, bench and the server make theirs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import numpy as np

from he_inhibitor.ckks import CkksParams, ClientKeys, PublicContext
from he_inhibitor.circuit import plain
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.ray_lanes import RayLaneExecutor, RayLanes, lanes_of
from he_inhibitor.circuit.simulate import SimResult, simulate
from he_inhibitor.circuit.weight_store import WeightStore


class Mode(str, Enum):
    PLAIN = "plain"
    SIMULATE = "simulate"
    ENCRYPTED = "encrypted"


class Executor(Protocol):
    def run(self, x0: np.ndarray, m: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class PlainResult:
    logits: np.ndarray


@dataclass(frozen=True)
class PlainExecutor:
    compiled: Compiled

    def run(self, x0: np.ndarray, m: np.ndarray) -> PlainResult:
        c = self.compiled
        out = plain.run(c.circuit, c.pack_input(x0, m), c.public_plaintexts(m))
        return PlainResult(c.read_logits(out["logits"]))


@dataclass(frozen=True)
class SimulateExecutor:
    compiled: Compiled
    params: CkksParams
    costs: CostTable | None = None
    strict: bool = True

    def run(self, x0: np.ndarray, m: np.ndarray) -> SimResult:
        return simulate(self.compiled, NoiseModel.of(self.params), x0, m, self.costs,
                        chain=self.params.depth, strict=self.strict)


def make_executor(mode: Mode | str, compiled: Compiled, params: CkksParams | None = None,
                  costs: CostTable | None = None, *, strict: bool = True, keys: ClientKeys | None = None,
                  public: PublicContext | None = None, seed: int | None = None, cache: bool = True,
                  weights: WeightStore | None = None, prepare: bool = False, pool: RayLanes | None = None) -> Executor:
    """An executor of `compiled` in `mode`; SIMULATE and ENCRYPTED need the CKKS parameters.

    SIMULATE: `costs` (a cost table: predicted seconds) and `strict` (a polynomial input out of its
    interval raises). ENCRYPTED: `keys` (default: made for the circuit's rotations) or `public` alone
    (the server's), `seed` for the in-process refresh masks, `cache` (plaintexts that depend on no key kept
    across requests; in `weights`, a store shared by the process's executors, when given) and `prepare` (encode
    them now), `pool` (lanes 1..K-1 on Ray, where the circuit has them).
    """
    mode = Mode(mode)
    if mode is Mode.PLAIN:
        return PlainExecutor(compiled)
    if params is None:
        raise ValueError(f"the {mode.value} executor needs CKKS parameters")
    if mode is Mode.SIMULATE:
        return SimulateExecutor(compiled, params, costs, strict)
    ex = EncryptedExecutor(compiled, params, keys, seed=seed, cache=cache, public=public, weights=weights)
    if prepare:
        ex.prepare()
    if pool is not None and len(lanes_of(compiled.circuit)) > 1:
        return RayLaneExecutor(ex, pool)
    return ex
