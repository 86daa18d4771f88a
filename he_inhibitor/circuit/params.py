"""Parameters from the circuit: N from the layout, the chain from the depth.

The layout fixes the slot count (2*T*d = N/2 fills one ciphertext at T = 32,
d = 128, N = 16384). The chain is then the shortest that holds the circuit:
[first, scale_bits x depth, special]. Where even the longest 128-bit-secure
chain at that N is too short, the circuit is recompiled with client-aided
refreshes of the residual stream, for the shortest chain that needs no more
refresh round trips than the longest: keys shrink quadratically with the
chain and every primitive gets cheaper, so the shortest chain is also the
cheapest to send and to run. Every set goes
through `he_inhibitor.ckks.CkksParams`, which refuses anything below 128 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from he_inhibitor.ckks.params import MAX_BITS_128, CkksParams
from he_inhibitor.circuit.arrange import ShiftPlan
from he_inhibitor.circuit.compile import Compiled, compile_student
from he_inhibitor.circuit.ir import LevelError, OpKind, depth, levels_and_degrees, refresh_round_trips
from he_inhibitor.circuit.weights import StudentWeights


@dataclass(frozen=True)
class Precision:
    """Bit sizes: scale (and mid primes), first prime (holds the result), special prime."""

    scale_bits: int = 30
    first_bits: int = 40  # results up to 2^(40-30) in magnitude at the last level
    special_bits: int = 60  # 2^20 above every data prime: key switching adds no noise (noise.py)

    def max_levels(self, n: int) -> int:
        """Mid primes the 128-bit limit allows at ring degree n."""
        return (MAX_BITS_128[n] - self.first_bits - self.special_bits) // self.scale_bits


@dataclass(frozen=True)
class Plan:
    compiled: Compiled
    params: CkksParams
    depth: int  # levels on one unbroken chain
    refreshes: int  # ciphertexts refreshed through the client
    round_trips: int  # refresh round trips (refreshes of equal rank travel together)


def plan_student(sw: StudentWeights, T: int, n: int = 16384, precision: Precision = Precision(),
                 shifts: ShiftPlan | None = None) -> Plan:
    """Compile for ring degree n and pick the chain; refresh only where the chain is too short.

    shifts: the attention's packing (default: the plan that holds every n <= T).
    """
    compiled = compile_student(sw, T, n // 2, shifts=shifts)
    need = int(levels_and_degrees(compiled.circuit)[0].max())  # the deepest segment between refreshes
    avail = precision.max_levels(n)
    levels = min(need, avail)
    if need > avail:
        compiled = compile_student(sw, T, n // 2, max_level=avail, shifts=shifts)
        trips = refresh_round_trips(compiled.circuit)
        for shorter in range(avail - 1, 0, -1):
            try:
                candidate = compile_student(sw, T, n // 2, max_level=shorter, shifts=shifts)
            except LevelError:  # a single polynomial deeper than the chain
                break
            if refresh_round_trips(candidate.circuit) > trips:
                break
            compiled, levels = candidate, shorter
    if compiled.max_level is None:  # bound to the chosen chain: the compiler then knows which levels are spare
        compiled = compile_student(sw, T, n // 2, max_level=levels, shifts=shifts)
    params = CkksParams.for_depth(levels, n, precision.scale_bits, precision.first_bits, precision.special_bits)
    return plan_of(compiled, params)


def plan_of(compiled: Compiled, params: CkksParams) -> Plan:
    """A compiled circuit with its parameters and the figures derived from it."""
    c = compiled.circuit
    return Plan(compiled, params, depth(c, through_refresh=True), len(c.of_kind(OpKind.REFRESH)),
                refresh_round_trips(c))

