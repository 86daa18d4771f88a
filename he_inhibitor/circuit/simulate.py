"""The `simulate` executor: the plain circuit, plus what encryption would do to it.

It evaluates the same graph as `plain` and, per node, tracks

* level and scale degree (the level pass),
* the value range, and for every polynomial how close its input comes to the
  interval edge, separately for first halves (what the model computes) and
  second halves (garbage that is never read, but that must stay in range: a
  polynomial far outside its interval can exceed the modulus and wreck every
  slot); a RangeError is raised when any slot leaves the interval,
* the CKKS noise (encoding, fresh encryption, rescale rounding, key
  switching) per slot, propagated through every op and through each
  polynomial's own evaluation plan, as a Monte Carlo estimate that keeps the
  correlations between slots and between paths (k times its standard
  deviation is the predicted bound on |encrypted - plain|) and as a rigorous
  but loose worst case (noise.Err, noise.Sampler),
* the polynomials' approximation error: measured, by running the same
  circuit with exact |x| and ReLU in place of the fits, and as a worst case,
* counts of every primitive per stage (polynomials expanded into their plans'
  multiplications, constant multiplications, rescales and relinearisations),
  and, given a cost table, predicted seconds per stage.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from he_inhibitor.approx.plan import Plan
from he_inhibitor.circuit import plain
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.interpret import Answer, Backend, RefreshPoint, answered, interpret
from he_inhibitor.circuit.ir import Node, OpKind, RangeError, depth, levels_and_degrees, refresh_round_trips
from he_inhibitor.circuit.masked import MaskedPlan, masked_plan_of
from he_inhibitor.circuit.noise import Err, NoiseModel, Sampler
from he_inhibitor.circuit.poly import PolyFn, exact_form, plan_of


@dataclass(frozen=True)
class PolyRange:
    node: int
    stage: str
    name: str
    ratio: float  # max |x| / interval half-width over first halves
    garbage_ratio: float  # the same over second halves


@dataclass
class SimResult:
    logits: np.ndarray
    noise_bound: float  # predicted k-sigma bound on max |encrypted logit - plain logit|
    worst_case_bound: float  # every noise term at k sigma and aligned (rigorous, loose)
    approx_error: float  # measured max |plain logit - logit with exact |x| and ReLU|
    approx_worst_case: float  # every fit at its max error, aligned (rigorous, loose)
    depth: int  # levels on one unbroken chain
    max_level: int  # deepest level reached (<= chain length)
    refreshes: int
    round_trips: int
    counts: dict[str, Counter] = field(default_factory=dict)
    ranges: list[PolyRange] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    parallel_seconds: float = 0.0  # predicted with each lane in its own process (ray_lanes.py): the critical path
    client_seconds: float = 0.0  # predicted for the client's half of the refreshes: decrypt, map, encrypt

    def totals(self) -> Counter:
        out: Counter = Counter()
        for c in self.counts.values():
            out.update(c)
        return out


class _Tracked:
    """A plan register: values, per-slot error, register level."""

    __slots__ = ("v", "e", "lvl")

    def __init__(self, v: np.ndarray, e: Err, lvl: int) -> None:
        self.v, self.e, self.lvl = v, e, lvl


class _PlanTracker:
    """Backend for `Plan.run`: propagates per-slot errors and logs (primitive, level) per instruction.

    ``plan``: the plan (or masked plan) it runs, whose registers read more
    than once have their error drawn joint as they are made (noise.Sampler).
    """

    def __init__(self, noise: NoiseModel, log: list[tuple[str, int]], sampler: Sampler, plan: Plan | MaskedPlan) -> None:
        self.noise, self.log, self.sampler = noise, log, sampler
        reads = Counter(a for ins in plan.instrs for a in ins.args)
        self.shared = iter([reads[ins.dst] > 1 for ins in plan.instrs])  # per instruction, in run order
        self.mul_noise = Err.fresh(math.hypot(noise.key_switch(2), noise.rounding), noise.k)
        self.const_noise = Err.fresh(noise.rounding, noise.k)
        self.vector = Err.fresh(noise.encode, noise.k)

    def _made(self, v: np.ndarray, e: Err, lvl: int) -> _Tracked:
        """The next register, its error drawn joint where the plan reads it more than once."""
        return _Tracked(v, self.sampler.shared(e) if next(self.shared) else e, lvl)

    def _scalar(self) -> Err:
        return self.sampler.scalar(self.noise.scalar_encode, self.noise.k)

    def _mul(self, a: _Tracked, b: _Tracked, op: str) -> _Tracked:
        lvl = max(a.lvl, b.lvl)
        self.log += [(op, lvl), ("relinearize", lvl), ("rescale", lvl)]
        return self._made(a.v * b.v, a.e.times(b.e, a.v, b.v) + self.mul_noise, lvl + 1)

    def mul(self, a: _Tracked, b: _Tracked) -> _Tracked:
        return self._mul(a, b, "mul")

    def square(self, a: _Tracked) -> _Tracked:
        return self._mul(a, a, "mul")

    def _lin(self, xs: list[_Tracked], consts: list, drop: int, encoding: Callable[[], Err]) -> _Tracked:
        """Each x mod-switched to one level, times its constant, summed, one rescale (CkksEvaluator.lin);
        ``encoding()``: each constant's encoding error."""
        lvl = max(x.lvl for x in xs) + drop  # the products' level; the result sits one deeper
        for x in xs:
            self.log += [("mod_switch", x.lvl + k) for k in range(lvl - x.lvl)]
        self.log += [("mul_plain", lvl)] * len(xs) + [("add", lvl)] * (len(xs) - 1)
        self.log += [("add_plain", lvl)] * bool(np.any(consts[0])) + [("rescale", lvl)]
        v = consts[0] + sum(c * x.v for c, x in zip(consts[1:], xs))
        e = self.const_noise + encoding() if np.any(consts[0]) else self.const_noise
        for c, x in zip(consts[1:], xs):
            e = e + x.e.scaled(c) + encoding().scaled(x.v)
        return self._made(v, e, lvl + 1)

    def lin(self, xs: list[_Tracked], consts: tuple[float, ...], drop: int) -> _Tracked:
        return self._lin(xs, list(consts), drop, self._scalar)

    def lin_plain(self, xs: list[_Tracked], consts: list[np.ndarray], drop: int) -> _Tracked:
        return self._lin(xs, consts, drop, lambda: self.vector)

    def drop(self, a: _Tracked, levels: int) -> _Tracked:
        """Mod-switch, times 1, rescale (CkksEvaluator.drop_to)."""
        lvl = a.lvl + levels - 1
        self.log += [("mod_switch", a.lvl + k) for k in range(levels - 1)] + [("mul_plain", lvl), ("rescale", lvl)]
        return self._made(a.v, a.e + self._scalar().scaled(a.v) + self.const_noise, lvl + 1)

    def add(self, a: _Tracked, b: _Tracked) -> _Tracked:
        self.log.append(("add", max(a.lvl, b.lvl)))
        return self._made(a.v + b.v, a.e + b.e, max(a.lvl, b.lvl))

    def sub(self, a: _Tracked, b: _Tracked) -> _Tracked:
        self.log.append(("add", max(a.lvl, b.lvl)))
        return self._made(a.v - b.v, a.e + b.e.scaled(-1.0), max(a.lvl, b.lvl))

    def add_const(self, a: _Tracked, c: float) -> _Tracked:
        self.log.append(("add_plain", a.lvl))
        return self._made(a.v + c, a.e + self._scalar(), a.lvl)

    def add_plain(self, a: _Tracked, p: np.ndarray) -> _Tracked:
        self.log.append(("add_plain", a.lvl))
        return self._made(a.v + p, a.e + self.vector, a.lvl)


def _slope(fn: PolyFn, x: np.ndarray) -> np.ndarray:
    """fn'(x) per slot (central difference; fn is a polynomial): signed, since an error reaching a sum
    along two paths adds with the signs each path gives it."""
    h = 1e-6
    return (fn(x + h) - fn(x - h)) / (2 * h)


class _Noisy:
    """A simulated ciphertext: its message, its per-slot noise and the polynomials' approximation error."""

    __slots__ = ("v", "e", "a")

    def __init__(self, v: np.ndarray, e: Err, a: Err) -> None:
        self.v, self.e, self.a = v, e, a


class _SimBackend(Backend):
    """The simulate backend: each op's message as `plain.evaluate` computes it, its noise and
    approximation error propagated, its primitives counted (and costed) per stage."""

    def __init__(self, compiled: Compiled, noise: NoiseModel, m: np.ndarray, costs: CostTable | None,
                 chain: int | None, strict: bool, on_node: Callable[[int, Node, _Noisy], None] | None = None,
                 seed: int = 0) -> None:
        circuit = compiled.circuit
        self.noise, self.costs, self.strict, self.on_node = noise, costs, strict, on_node
        self.sampler = Sampler(noise.draws, circuit.n_slots, seed)
        reads = Counter(a for node in circuit.nodes for a in node.args)
        self.shared = [reads[i] > 1 for i in range(len(circuit.nodes))]  # errors drawn joint as they are made
        self.public = compiled.public_plaintexts(m)
        self.levels, self.degrees = levels_and_degrees(circuit)
        self.chain = int(self.levels.max()) if chain is None else chain
        T, self.n_slots = compiled.T, circuit.n_slots
        self.first = np.tile(np.repeat([True, False], T), circuit.n_slots // (2 * T))
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.seconds: dict[str, float] = defaultdict(float)
        self.client_seconds = 0.0
        self.ranges: list[PolyRange] = []
        self.node_seconds = np.zeros(len(circuit.nodes))
        self.current = 0  # the node being evaluated
        self.enc = Err.fresh(noise.encode, noise.k)
        self.rounding = Err.fresh(noise.rounding, noise.k)
        self.fresh_refresh = Err.fresh(noise.fresh, noise.k) + self.enc + self.enc

    def charge(self, stage: str, op: str, level: int) -> None:
        self.counts[stage][op] += 1
        if self.costs is not None:
            cost = self.costs.seconds(op, self.chain + 1 - level)
            self.seconds[stage] += cost
            self.node_seconds[self.current] += cost

    def encrypted(self, x: np.ndarray) -> _Noisy:
        """The client's fresh encryption of an input."""
        n = self.n_slots
        fresh = Err.fresh(self.noise.fresh, self.noise.k, np.zeros(n))
        return _Noisy(np.asarray(x, dtype=np.float64), self.sampler.shared(fresh), Err(np.zeros(n)))

    def const(self, index: int, payload) -> np.ndarray | float:
        return plain.resolve(payload, self.public)

    def refresh(self, point: RefreshPoint) -> Answer:
        """The client's map carries the inputs' errors along with their values; re-encryption adds its own."""
        xs = point.values
        if self.costs is not None:  # each ciphertext decrypted once, every output encrypted at the top
            top = self.chain + 1
            self.client_seconds += sum(self.costs.seconds("decrypt", top - self.levels[j]) for j in point.nodes)
            self.client_seconds += sum(point.maps.values()) * self.costs.seconds("encrypt", top)
        share = self.sampler.shared
        errs = [share(x.e) for x in xs]  # a map copies slots: their errors go along as one
        out: Answer = {}
        for name, count in point.maps.items():
            if name is None:
                out[name] = [_Noisy(x.v, share(e + self.fresh_refresh), x.a) for x, e in zip(xs, errs)]
                continue
            f = plain.resolve(name, self.public)
            vs, es = f.apply([x.v for x in xs]), self._mapped(f, errs)
            was = f.apply([np.broadcast_to(x.a.wc, (self.n_slots,)) for x in xs])
            out[name] = [_Noisy(vs[k], share(es[k] + self.fresh_refresh), Err(was[k])) for k in range(count)]
        return out

    def _mapped(self, f, errs: list[Err]) -> list[Err]:
        """A client map applied to errors drawn joint: the worst case maps as values do (a sum of the
        source slots, each counted once per copy), each draw as the map's own input."""
        n, draws = self.n_slots, self.noise.draws
        wcs = f.apply([np.broadcast_to(e.wc, (n,)) for e in errs])
        ss = f.apply([np.broadcast_to(e.s, (draws, n)) for e in errs])
        return [Err(wc, s.astype(np.float32)) for wc, s in zip(wcs, ss)]

    def leave(self, i: int, node: Node, value: _Noisy) -> None:
        if node.op is OpKind.REFRESH:
            self.counts[node.stage]["refresh"] += 1
        if self.on_node is not None:
            self.on_node(i, node, value)

    def op(self, i: int, node: Node, args: list) -> _Noisy:
        op, noise = node.op, self.noise
        lvl, st = int(self.levels[i]), node.stage
        self.current = i
        x = args[0]
        vals = [a.v if isinstance(a, _Noisy) else a for a in args]
        value = plain.evaluate(node, vals)
        e0, a0 = x.e, x.a
        if op is OpKind.ADD:
            e, a = e0 + args[1].e, a0 + args[1].a
            self.charge(st, "add", lvl)
        elif op is OpKind.SUB:
            e, a = e0 + args[1].e.scaled(-1.0), a0 + args[1].a
            self.charge(st, "add", lvl)
        elif op is OpKind.ADD_PLAIN:
            e, a = e0 + self.enc, a0
            self.charge(st, "add_plain", lvl)
        elif op is OpKind.MUL_PLAIN:
            e = e0.times(self.enc, vals[0], vals[1])
            a = a0.scaled(vals[1])
            self.charge(st, "mul_plain", lvl)
        elif op is OpKind.MUL:
            e = e0.times(args[1].e, vals[0], vals[1]) + Err.fresh(noise.key_switch(2), noise.k)
            a = a0.times(args[1].a, vals[0], vals[1])
            self.charge(st, "mul", lvl)
            self.charge(st, "relinearize", lvl)
        elif op is OpKind.ROTATE:
            e = e0.rotated(node.arg) + Err.fresh(noise.key_switch(int(self.degrees[i])), noise.k)
            a = a0.rotated(node.arg)
            self.charge(st, "rotate", lvl)
        elif op is OpKind.RESCALE:
            e, a = e0 + self.rounding, a0
            self.charge(st, "rescale", lvl - 1)
        elif op is OpKind.MOD_SWITCH:
            # as the ckks evaluator's drop_to runs it: mod-switch to one level above the
            # target, then multiply by 1 encoded so that the rescale lands on the target's
            # exact scale (a scalar encoding and a rescale rounding: measured, not free)
            scalar = self.sampler.scalar(noise.scalar_encode, noise.k)
            e, a = e0 + scalar.scaled(vals[0]) + self.rounding, a0
            for k in range(node.arg - 1):
                self.charge(st, "mod_switch", int(self.levels[node.args[0]]) + k)
            self.charge(st, "mul_plain", lvl - 1)
            self.charge(st, "rescale", lvl - 1)
        else:  # POLY
            mask = vals[1] if len(vals) > 1 else None
            e, a = self._poly(i, node, vals[0], mask, e0, a0, int(self.levels[node.args[0]]))
        return _Noisy(value, self.sampler.shared(e) if self.shared[i] else e, a)

    def _poly(self, i: int, node: Node, x: np.ndarray, mask: np.ndarray | None, e_in: Err, a_in: Err,
              lvl: int) -> tuple[Err, Err]:
        fn, noise, first = node.fn, self.noise, self.first
        lo, hi = fn.interval
        half = max(abs(lo), abs(hi))
        self.ranges.append(PolyRange(i, node.stage, fn.name, float(np.abs(x[first]).max() / half),
                                     float(np.abs(x[~first]).max() / half)))
        if self.strict and (x.min() < lo or x.max() > hi):
            where = "first halves" if (x[first].min() < lo or x[first].max() > hi) else "second halves (garbage)"
            raise RangeError(f"node {i} ({node.stage}, {fn.name}): input in [{x.min():.4g}, {x.max():.4g}] "
                             f"leaves the interval [{lo}, {hi}] in the {where}")
        gain = _slope(fn, x) if mask is None else _slope(fn, x) * mask
        log: list[tuple[str, int]] = []
        plan = plan_of(fn)
        zero = _Tracked(x, Err(np.zeros_like(x)), lvl)
        if mask is not None:  # the builder folds a mask only where the masked plan exists
            masked = masked_plan_of(fn)
            e_eval = masked.run(zero, mask, _PlanTracker(noise, log, self.sampler, masked)).e
        elif plan is not None:
            e_eval = plan.run(zero, _PlanTracker(noise, log, self.sampler, plan)).e
        else:  # no plan to follow: each level's rounding, amplified by the function's range
            amp = max(1.0, float(np.abs(fn(np.linspace(lo, hi, 1001))).max()))
            e_eval = Err.fresh(math.sqrt(fn.depth) * noise.rounding * amp, noise.k, x)
            log = [("poly", lvl)]
        for op, level in log:
            self.charge(node.stage, op, level)
        fit_err = fn.max_error if mask is None else fn.max_error * np.abs(mask)
        return e_in.scaled(gain) + e_eval, a_in.scaled(gain) + Err(fit_err)


def simulate(
    compiled: Compiled,
    noise: NoiseModel,
    x0: np.ndarray,
    m: np.ndarray,
    costs: CostTable | None = None,
    chain: int | None = None,
    strict: bool = True,
    on_refresh: Callable[[RefreshPoint], None] | None = None,
    on_node: Callable[[int, Node, _Noisy], None] | None = None,
    seed: int = 0,
) -> SimResult:
    """Run one sentence (x0 [T, d], mask m [T]) through the circuit with full tracking.

    chain: levels in the modulus chain (for the cost table: primes remaining
    = chain + 1 - level); strict: raise RangeError when a polynomial input
    leaves its interval in any slot; on_refresh: called with each round trip's
    point before it is answered (its values carry value ``v`` and error ``e``),
    so that the model can be checked where a client decrypts anyway; on_node:
    called with every node's index, node and value once it is made (the same
    check node by node; scripts/noise_by_refresh.py); seed: of the noise estimate's draws.
    """
    circuit = compiled.circuit
    sim = _SimBackend(compiled, noise, m, costs, chain, strict, on_node, seed)
    inputs = {k: sim.encrypted(v) for k, v in compiled.pack_input(x0, m).items()}

    def refresh(point: RefreshPoint) -> Answer:
        if on_refresh is not None:
            on_refresh(point)
        return sim.refresh(point)

    final = answered(interpret(circuit, sim, inputs), refresh)["logits"]
    e_out, wc_out, awc_out = (compiled.read_logits(v) for v in (final.e.bound(noise.k), final.e.wc, final.a.wc))
    logits = compiled.read_logits(final.v)
    exact = plain.run(circuit, compiled.pack_input(x0, m), sim.public, substitute=exact_form)

    return SimResult(
        logits=logits,
        noise_bound=float(e_out.max()),
        worst_case_bound=float(wc_out.max()),
        approx_error=float(np.abs(compiled.read_logits(exact["logits"]) - logits).max()),
        approx_worst_case=float(awc_out.max()),
        depth=depth(circuit, through_refresh=True),
        max_level=int(sim.levels.max()),
        refreshes=len(circuit.of_kind(OpKind.REFRESH)),
        round_trips=refresh_round_trips(circuit),
        counts=dict(sim.counts),
        ranges=sim.ranges,
        seconds=dict(sim.seconds),
        parallel_seconds=_makespan(circuit, sim.node_seconds),
        client_seconds=sim.client_seconds,
    )


def _makespan(circuit, node_seconds: np.ndarray) -> float:
    """When the output is ready if each lane runs its nodes in circuit order in its own process.

    A node starts once its lane is free and its arguments are done, wherever
    they ran: the serial stages of lane 0 leave lane 1 idle, so this is the
    floor two processes can reach, not the larger lane's sum.
    """
    done = np.zeros(len(circuit.nodes))
    free: dict[int, float] = defaultdict(float)
    for i, node in enumerate(circuit.nodes):
        start = max([free[node.lane]] + [done[a] for a in node.args])
        done[i] = start + node_seconds[i]
        if node_seconds[i]:
            free[node.lane] = done[i]
    return float(max(done[i] for i in circuit.of_kind(OpKind.OUTPUT)))
