"""Evaluation plans: a polynomial as a straight-line program over registers.

A plan is data, not code.  Register 0 holds the input x; every instruction
writes one new register.  The instruction set is what CKKS offers cheaply, and
each instruction has a fixed depth rule (levels consumed on its result):

    op          args        const           depth(result)                 CKKS meaning
    mul         a, b        -               d_a + 1 (d_a = d_b)           ct*ct, relinearize, rescale
    square      a           -               d_a + 1                       ct*ct (a*a), relinearize, rescale
    lin         a_1..a_k    (c_0, c_1..c_k) max d_ai + 1 + drop           c_0 + sum c_i a_i: each a_i mod-switched to
                                                                          one level, times its scalar, one rescale
    add / sub   a, b        -               d_a (d_a = d_b)               add/sub
    add_const   a           c               d_a                           add scalar plaintext
    drop        a           -               d_a + drop                    a, `drop` levels lower (times 1, rescale)

`Plan.run(x, backend)` executes it with any object offering these methods
(`Backend`), so the same plan runs on numpy (`NumpyBackend`), on SEAL
ciphertexts (`he_inhibitor.ckks.CkksEvaluator`), in the simulator's tracker
and, with a mask folded in, in the circuit (`circuit/masked.py`).

Compilation (`compile_series`) evaluates sum c_k T_k(t) at depth
ceil(log2(deg+1)) *counting* scalar multiplications.  The trick: split
p = q * T_K + r with K the largest power of two <= deg (Chebyshev division).
q must be ready one level earlier than p (it is multiplied by T_K), r may use
p's full budget.  Scalar multiplications c_k * T_k cost a level, so a leaf
sum_k c_k T_k is only evaluated directly where every T_k used has depth at
most budget - 1; otherwise it is split again.  Along the tight path (the q of
a q of ...) splitting reaches degree-1 leaves c_1 t + c_0, which cost exactly
one level on t; branches with slack stop at baby-step leaves
(Paterson-Stockmeyer).  The baby-step bound is chosen per polynomial to
minimise ct-ct multiplications.  Zero coefficients (parity) cost nothing, and
2*a is computed as a + a so Chebyshev recurrences need no scalar level.

Levels (`_leveled`, run on every compiled plan): under CKKS two operands of
one add or product must sit at one level with one scale, and bringing the
shallower one down exactly costs a multiplication by 1 and a rescale. A leaf
is one `lin` instruction, so its terms share that one rescale, and a leaf
consumed only deeper than it is made is made there at once (`drop` levels
lower, its inputs mod-switched first: free, and exact, because each scalar
is encoded at the scale that lands the sum on the level's scale). What still
needs aligning (a power or a product met deeper) is an explicit `drop`,
made once per register and level: the counts and the simulator's noise then
see every multiplication by 1 that the encrypted run performs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from .basis import unit_map

CT_MULT_OPS = ("mul", "square")


class Backend(Protocol):
    """What a plan needs from an executor (numpy, SEAL, circuit IR)."""

    def mul(self, a: Any, b: Any) -> Any: ...
    def square(self, a: Any) -> Any: ...
    def lin(self, xs: Sequence[Any], consts: Sequence[float], drop: int) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def add_const(self, a: Any, c: float) -> Any: ...
    def drop(self, a: Any, levels: int) -> Any: ...


class NumpyBackend:
    """Exact float64 executor (the reference the encrypted run is compared with)."""

    def mul(self, a: Any, b: Any) -> Any:
        return a * b

    def square(self, a: Any) -> Any:
        return a * a

    def lin(self, xs: Sequence[Any], consts: Sequence[float], drop: int) -> Any:
        return sum((c * x for c, x in zip(consts[1:], xs)), consts[0])

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def sub(self, a: Any, b: Any) -> Any:
        return a - b

    def add_const(self, a: Any, c: float) -> Any:
        return a + c

    def drop(self, a: Any, levels: int) -> Any:
        return a


@dataclass(frozen=True)
class Instr:
    """dst <- op(args..., const); `drop`: the extra levels of a lin or drop."""

    op: str
    dst: int
    args: tuple[int, ...]
    const: float | tuple[float, ...] | None = None
    drop: int = 0


def depth_of(op: str, arg_depths: list[int], drop: int = 0) -> int:
    bump = 1 if op in ("mul", "square", "lin") else 0
    return max(arg_depths) + bump + drop


@dataclass(frozen=True)
class Plan:
    """A straight-line program; register 0 is the input, `output` the result."""

    instrs: tuple[Instr, ...]
    output: int

    @property
    def depths(self) -> list[int]:
        """Depth of every register (index = register)."""
        d = [0]
        for ins in self.instrs:
            d.append(depth_of(ins.op, [d[a] for a in ins.args], ins.drop))
        return d

    @property
    def depth(self) -> int:
        return self.depths[self.output]

    @property
    def counts(self) -> dict[str, int]:
        """Operation counts: ct-ct `mults` (mul + square), `const_mults` (a lin's terms and a drop's 1),
        `rescales` (one per mult, lin and drop), `adds` (add/sub/add_const and a lin's sums)."""
        def terms(i: Instr) -> int:
            return len(i.args) if i.op in ("lin", "drop") else 0

        return {
            "mults": sum(i.op in CT_MULT_OPS for i in self.instrs),
            "const_mults": sum(terms(i) for i in self.instrs),
            "rescales": sum(i.op in (*CT_MULT_OPS, "lin", "drop") for i in self.instrs),
            "adds": sum((i.op in ("add", "sub", "add_const")) + max(0, terms(i) - 1) for i in self.instrs),
        }

    def run(self, x: Any, backend: Backend) -> Any:
        regs: list[Any] = [x]
        for ins in self.instrs:
            args = [regs[a] for a in ins.args]
            if ins.op == "lin":
                regs.append(backend.lin(args, ins.const, ins.drop))
            elif ins.op == "drop":
                regs.append(backend.drop(args[0], ins.drop))
            elif ins.const is not None:
                regs.append(getattr(backend, ins.op)(*args, ins.const))
            else:
                regs.append(getattr(backend, ins.op)(*args))
        return regs[self.output]


@dataclass(frozen=True)
class _Const:
    value: float


class _Builder:
    """Appends instructions and tracks register depths."""

    def __init__(self) -> None:
        self.instrs: list[Instr] = []
        self.depth: list[int] = [0]

    def emit(self, op: str, args: tuple[int, ...], const: float | tuple[float, ...] | None = None,
             drop: int = 0) -> int:
        dst = len(self.depth)
        self.instrs.append(Instr(op, dst, args, const, drop))
        self.depth.append(depth_of(op, [self.depth[a] for a in args], drop))
        return dst

    def plan(self, output: int) -> Plan:
        return Plan(tuple(self.instrs), output)


class _Series:
    """Evaluates Chebyshev series in one input register t on a builder."""

    def __init__(self, b: _Builder, t: int, baby_limit: int) -> None:
        self.b, self.baby_limit = b, baby_limit
        self.T: dict[int, int] = {1: t}

    def cheb(self, n: int) -> int:
        """Register of T_n(t) at depth depth(t) + ceil(log2 n), built on demand."""
        if n not in self.T:
            a = 1 << ((n - 1).bit_length() - 1)
            if n == 3:  # T_3 = t (2 T_2 - 1): t meets one level lower only once (2 T_2 t - t meets it twice)
                two = self.b.emit("add_const", (self.b.emit("add", (self.cheb(2), self.cheb(2))),), -1.0)
                self.T[n] = self.b.emit("mul", (self.T[1], two))
            elif a == n - a:
                sq = self.b.emit("square", (self.cheb(a),))
                self.T[n] = self.b.emit("add_const", (self.b.emit("add", (sq, sq)),), -1.0)
            else:
                prod = self.b.emit("mul", (self.cheb(a), self.cheb(n - a)))
                twice = self.b.emit("add", (prod, prod))
                self.T[n] = self.b.emit("sub", (twice, self.cheb(2 * a - n)))
        return self.T[n]

    def cheb_depth(self, n: int) -> int:
        return self.b.depth[self.T[1]] + (n - 1).bit_length()

    def evaluate(self, c: np.ndarray, budget: int) -> int | _Const:
        nz = np.flatnonzero(c)
        if nz.size == 0:
            return _Const(0.0)
        deg = int(nz[-1])
        if deg == 0:
            return _Const(float(c[0]))
        if deg < self.baby_limit and self.cheb_depth(deg) + 1 <= budget:
            return self._direct(c[: deg + 1])
        K = 1 << (deg.bit_length() - 1)
        q = c[K : deg + 1].copy()
        q[1:] *= 2.0
        r = c[:K].copy()
        for i in range(1, deg - K + 1):
            r[K - i] -= c[K + i]
        qv, rv = self.evaluate(q, budget - 1), self.evaluate(r, budget)
        tk = self.cheb(K)
        prod = self.b.emit("lin", (tk,), (0.0, qv.value)) if isinstance(qv, _Const) else self.b.emit("mul", (qv, tk))
        if isinstance(rv, _Const):
            return self.b.emit("add_const", (prod,), rv.value) if rv.value != 0.0 else prod
        return self.b.emit("add", (prod, rv))

    def _direct(self, c: np.ndarray) -> int:
        ks = [int(k) for k in np.flatnonzero(c[1:]) + 1]  # deg >= 1 guarantees one term
        return self.b.emit("lin", tuple(self.cheb(k) for k in ks), (float(c[0]), *(float(c[k]) for k in ks)))


def _map_input(b: _Builder, interval: tuple[float, float], unit_input: bool) -> int:
    """Register holding t = alpha*x + beta (one scalar level unless already done upstream)."""
    if unit_input:
        return 0
    alpha, beta = unit_map(interval)
    if alpha != 1.0:
        return b.emit("lin", (0,), (beta, alpha))
    return b.emit("add_const", (0,), beta) if beta != 0.0 else 0


def _series_on(b: _Builder, t: int, coeffs: np.ndarray, baby_limit: int) -> int:
    deg = int(np.flatnonzero(coeffs)[-1]) if np.any(coeffs) else 0
    budget = b.depth[t] + deg.bit_length()
    out = _Series(b, t, baby_limit).evaluate(coeffs, budget)
    if isinstance(out, _Const):
        raise ValueError("a constant polynomial has nothing to evaluate")
    return out


_PAIRED = ("add", "sub", "mul")  # two operands that must share a level


def _leveled(plan: Plan) -> Plan:
    """The same polynomial and depth with the two operands of every add, sub and mul at one level.

    A lin is made as deep as the shallowest of its consumers needs it (which
    changes no other register's depth: a consumer's depth is its deeper
    operand's); any other operand met deeper than it is made goes through an
    explicit `drop`, one per register and depth.
    """
    depth = plan.depths
    need: dict[int, int] = {plan.output: depth[plan.output]}
    for ins in plan.instrs:
        paired = ins.op in _PAIRED and len(ins.args) == 2
        for j, a in enumerate(ins.args):
            want = max(depth[a], depth[ins.args[1 - j]]) if paired else depth[a]
            need[a] = min(need.get(a, want), want)
    b = _Builder()
    reg = {0: 0}
    drops: dict[tuple[int, int], int] = {}

    def at(r: int, d: int) -> int:
        if b.depth[r] == d:
            return r
        if (r, d) not in drops:
            drops[(r, d)] = b.emit("drop", (r,), None, d - b.depth[r])
        return drops[(r, d)]

    for ins in plan.instrs:
        args = tuple(reg[a] for a in ins.args)
        if ins.op == "lin":
            reg[ins.dst] = b.emit("lin", args, ins.const, ins.drop + need[ins.dst] - depth[ins.dst])
        elif ins.op in _PAIRED:
            d = max(b.depth[a] for a in args)
            reg[ins.dst] = b.emit(ins.op, tuple(at(a, d) for a in args), ins.const)
        else:
            reg[ins.dst] = b.emit(ins.op, args, ins.const, ins.drop)
    return b.plan(reg[plan.output])


def _best(build: Any, max_degree: int) -> Plan:
    """Try every power-of-two baby-step bound; keep the cheapest plan (levels aligned: drops cost)."""
    limits = [1 << k for k in range(1, max(1, max_degree.bit_length()) + 1)]
    plans = [_leveled(build(lim)) for lim in limits]
    return min(plans, key=lambda p: (p.depth, p.counts["mults"], p.counts["const_mults"], len(p.instrs)))


def compile_series(coeffs: Sequence[float], interval: tuple[float, float], unit_input: bool = False) -> Plan:
    """Plan for sum c_k T_k(t), t = interval mapped onto [-1, 1].

    The input register holds x, or t itself when `unit_input` (the producer,
    e.g. a linear layer, folded the map into its weights: one level saved).
    """
    c = np.asarray(coeffs, dtype=float)

    def build(limit: int) -> Plan:
        b = _Builder()
        return b.plan(_series_on(b, _map_input(b, interval, unit_input), c, limit))

    return _best(build, c.size - 1)


def compile_composite(stages: Sequence[Sequence[float]], interval: tuple[float, float], times_input: bool,
                      unit_input: bool = False) -> Plan:
    """Plan for stages[-1](...stages[0](t)), optionally multiplied by x.

    `times_input` gives |x| = x * sign(x) (and ReLU once the last stage has been
    folded to (1 + sign)/2): one more ct-ct multiplication and one more level.
    With `unit_input` the register holds t = x / B (symmetric interval), so
    x * chain is computed as t * (B * chain) with B folded into the last stage.
    """
    cs = [np.asarray(s, dtype=float) for s in stages]
    if unit_input and times_input:
        cs[-1] = cs[-1] * interval[1]

    def build(limit: int) -> Plan:
        b = _Builder()
        reg = _map_input(b, interval, unit_input)
        for c in cs:
            reg = _series_on(b, reg, c, limit)
        return b.plan(b.emit("mul", (0, reg)) if times_input else reg)

    return _best(build, max(c.size - 1 for c in cs))
