"""Parameters from the circuit: N from the layout, the chain priced by the simulator.

The layout fixes the slot count (2*T*d = N/2 fills one ciphertext at T = 32,
d = 128, N = 16384). The chain [first, scale_bits x L, special] is the one
whose circuit this machine's cost table prices cheapest per sentence: a
shorter chain makes every primitive cheaper (key switching most) and the keys
smaller, but the circuit must then refresh through the client more often,
which costs the client's decryptions and encryptions and a network round trip
each (`plan_student`). Every set goes through `he_inhibitor.ckks.CkksParams`,
which refuses anything below 128 bits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from he_inhibitor.ckks.params import MAX_BITS_128, CkksParams
from he_inhibitor.circuit.arrange import ShiftPlan
from he_inhibitor.circuit.compile import Compiled, compile_student
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.ir import LevelError, OpKind, depth, levels_and_degrees, refresh_round_trips
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.weights import StudentWeights


@dataclass(frozen=True)
class Precision:
    """Bit sizes: scale (and mid primes), first prime (holds the result), special prime."""

    scale_bits: int = 30
    first_bits: int = 40  # results up to 2^(40-30) in magnitude at the last level
    special_bits: int = 60  # 2^20 above every data prime: key switching adds no noise (noise.py)
    levels: int | None = None  # the chain's mid primes; None: the cheapest (chain_prices)

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


ROUND_TRIP_SECONDS = 0.05
"""What a refresh round trip is priced at when the chain is chosen: a realistic network's (bench --rtt-ms)."""


@dataclass(frozen=True)
class ChainPrice:
    """One candidate chain: the circuit compiled for it, its refresh round trips, and what one sentence of
    T tokens costs on it (server seconds + the client's refresh work + round trips x round_trip; None
    without a cost table)."""

    levels: int
    compiled: Compiled
    round_trips: int
    seconds: float | None


def chain_prices(sw: StudentWeights, T: int, n: int = 16384, precision: Precision = Precision(),
                 shifts: ShiftPlan | None = None, round_trip: float = ROUND_TRIP_SECONDS) -> list[ChainPrice]:
    """Every chain from the longest 128-bit-secure one (or the circuit's depth, if less) down to the
    shortest that holds its deepest polynomial, longest first, priced by this machine's cost table;
    with `precision.levels`, that chain alone (a ValueError where it does not hold the circuit)."""
    if precision.levels is None:
        need = int(levels_and_degrees(compile_student(sw, T, n // 2, shifts=shifts).circuit)[0].max())
        chains = range(min(need, precision.max_levels(n)), 0, -1)
    elif not 0 < precision.levels <= precision.max_levels(n):
        raise ValueError(f"a chain of {precision.levels} levels: at N = {n} from 1 to {precision.max_levels(n)} "
                         "are 128-bit secure")
    else:
        chains = range(precision.levels, precision.levels - 1, -1)
    costs = CostTable.shipped(n)
    out = []
    for levels in chains:
        try:
            compiled = compile_student(sw, T, n // 2, max_level=levels, shifts=shifts)
        except LevelError as err:  # a single polynomial deeper than the chain
            if precision.levels is not None:
                raise ValueError(f"a chain of {levels} levels does not hold the circuit: {err}") from None
            break
        trips, seconds = refresh_round_trips(compiled.circuit), None
        if costs is not None:
            # only the op counts are priced: the noise estimate at its fewest draws
            noise = replace(NoiseModel.of(params_for(levels, n, precision)), draws=2)
            sim = simulate(compiled, noise, np.zeros((T, compiled.layout.d)), np.ones(T), costs, chain=levels,
                           strict=False)
            seconds = sum(sim.seconds.values()) + sim.client_seconds + trips * round_trip
        out.append(ChainPrice(levels, compiled, trips, seconds))
    if not out:
        raise LevelError(f"no chain at N = {n} holds the circuit's deepest polynomial")
    return out


def plan_student(sw: StudentWeights, T: int, n: int = 16384, precision: Precision = Precision(),
                 shifts: ShiftPlan | None = None, round_trip: float = ROUND_TRIP_SECONDS) -> Plan:
    """Compile for ring degree n on the chain `chain_prices` prices cheapest (design §6).

    A shorter chain makes every primitive cheaper and the keys smaller, and costs refreshes (the
    compiler refreshes where the chain runs out, builder.Builder.headroom): the price weighs both.
    Without a cost table for n: the shortest chain that needs no more round trips than the longest;
    with `precision.levels`, that chain.

    shifts: the attention's packing (default: the plan that holds every n <= T).
    """
    prices = chain_prices(sw, T, n, precision, shifts, round_trip)
    if prices[0].seconds is None:
        best = min(prices, key=lambda c: (c.round_trips, c.levels))
    else:
        best = min(prices, key=lambda c: c.seconds)
    return plan_of(best.compiled, params_for(best.levels, n, precision))


def params_for(levels: int, n: int, precision: Precision) -> CkksParams:
    """The chain [first, scale_bits x levels, special] at ring degree n."""
    return CkksParams.for_depth(levels, n, precision.scale_bits, precision.first_bits, precision.special_bits)


def plan_of(compiled: Compiled, params: CkksParams) -> Plan:
    """A compiled circuit with its parameters and the figures derived from it."""
    c = compiled.circuit
    return Plan(compiled, params, depth(c, through_refresh=True), len(c.of_kind(OpKind.REFRESH)),
                refresh_round_trips(c))

