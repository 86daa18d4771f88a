"""One interface over the three executors: `make_executor(mode, ...).run(x0, m).logits`.

* plain: float64 numpy on the circuit (plain.py),
* simulate: plain plus levels, ranges, noise and cost (simulate.py),
* encrypted: SEAL (encrypted.py).

Every result has `logits`; the simulator's and the encrypted executor's
carry their own extras (bounds, counts, timings, chain indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from he_inhibitor.circuit import plain
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.simulate import SimResult, simulate


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
    params: Any  # he_inhibitor.ckks.CkksParams
    costs: CostTable | None = None
    strict: bool = True

    def run(self, x0: np.ndarray, m: np.ndarray) -> SimResult:
        return simulate(self.compiled, NoiseModel.of(self.params), x0, m, self.costs,
                        chain=self.params.depth, strict=self.strict)


def make_executor(mode: str, compiled: Compiled, params: Any = None, costs: CostTable | None = None) -> Executor:
    """mode in {"plain", "simulate", "encrypted"}; the last two need parameters."""
    if mode == "plain":
        return PlainExecutor(compiled)
    if params is None:
        raise ValueError(f"the {mode} executor needs CKKS parameters")
    if mode == "simulate":
        return SimulateExecutor(compiled, params, costs)
    if mode == "encrypted":
        from he_inhibitor.circuit.encrypted import EncryptedExecutor  # imports SEAL only when asked

        return EncryptedExecutor(compiled, params)
    raise ValueError(f"unknown mode {mode!r}: expected plain, simulate or encrypted")
