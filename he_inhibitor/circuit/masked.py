"""m * p(x) at p's own depth: a plaintext vector folded into a polynomial's evaluation plan.

The key mask multiplies each ReLU output (exact zeros for padded keys). As a
separate product it costs a level per layer; folded into the plan it costs
none. A plan is a straight line over registers; a register r is *scalable*
when m * r can be computed at r's own depth:

    mul_const(a, c)   -> mul_plain(a, c*m)            (a leaf: the constant becomes a vector)
    add_const(a, c)   -> add_plain(m*a, c*m)          if a is scalable
    add/sub(a, b)     -> add/sub(m*a, m*b)            if both are
    mul(a, b)         -> mul(m*a, b) or mul(a, m*b)   if either is
    square(a)         -> mul(m*a, a)                  if a is

Paterson-Stockmeyer plans combine coefficient-bearing leaves with powers of
x, so their output is scalable; when it is not, `mask_plan` returns None and
the compiler multiplies by the mask separately (one level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from he_inhibitor.circuit.poly import folded_fit

_BUMP = {"mul": 1, "square": 1, "mul_const": 1, "mul_plain": 1}


@dataclass(frozen=True)
class MaskedInstr:
    """dst <- op(args, const); for mul_plain/add_plain the operand is const * mask."""

    op: str
    dst: int
    args: tuple[int, ...]
    const: float | None = None


@dataclass(frozen=True)
class MaskedPlan:
    instrs: tuple[MaskedInstr, ...]
    output: int

    @property
    def depth(self) -> int:
        d = {0: 0}
        for ins in self.instrs:
            d[ins.dst] = max(d[a] for a in ins.args) + _BUMP.get(ins.op, 0)
        return d[self.output]

    def run(self, x: Any, mask: np.ndarray, backend: Any) -> Any:
        """Backend: the plan ops plus mul_plain(a, vector) and add_plain(a, vector)."""
        regs = {0: x}
        for ins in self.instrs:
            fn = getattr(backend, ins.op)
            args = [regs[a] for a in ins.args]
            if ins.op in ("mul_plain", "add_plain"):
                regs[ins.dst] = fn(*args, ins.const * mask)
            elif ins.const is not None:
                regs[ins.dst] = fn(*args, ins.const)
            else:
                regs[ins.dst] = fn(*args)
        return regs[self.output]


def mask_plan(plan: Any) -> MaskedPlan | None:
    """The plan of m * p(x) at p's depth (see module docstring), or None."""
    instrs: list[MaskedInstr] = []
    scaled: dict[int, int] = {}
    nxt = max([i.dst for i in plan.instrs] + [0]) + 1

    def emit(op: str, args: tuple[int, ...], const: float | None = None) -> int:
        nonlocal nxt
        instrs.append(MaskedInstr(op, nxt, args, const))
        nxt += 1
        return nxt - 1

    for ins in plan.instrs:
        instrs.append(MaskedInstr(ins.op, ins.dst, ins.args, ins.const))
        a = ins.args
        if ins.op == "mul_const":
            scaled[ins.dst] = emit("mul_plain", (a[0],), ins.const)
        elif ins.op == "add_const" and a[0] in scaled:
            scaled[ins.dst] = emit("add_plain", (scaled[a[0]],), ins.const)
        elif ins.op in ("add", "sub") and a[0] in scaled and a[1] in scaled:
            scaled[ins.dst] = emit(ins.op, (scaled[a[0]], scaled[a[1]]))
        elif ins.op == "mul" and (a[0] in scaled or a[1] in scaled):
            scaled[ins.dst] = emit("mul", (scaled[a[0]], a[1]) if a[0] in scaled else (a[0], scaled[a[1]]))
        elif ins.op == "square" and a[0] in scaled:
            scaled[ins.dst] = emit("mul", (scaled[a[0]], a[0]))
    if plan.output not in scaled:
        return None
    out = MaskedPlan(tuple(_live(instrs, scaled[plan.output])), scaled[plan.output])
    return out if out.depth == plan.depth else None


def _live(instrs: list[MaskedInstr], output: int) -> list[MaskedInstr]:
    """Drop instructions the output does not depend on (the unmasked leaves)."""
    need, keep = {output}, []
    for ins in reversed(instrs):
        if ins.dst in need:
            keep.append(ins)
            need.update(ins.args)
    return keep[::-1]


def masked_plan_of(fn: Any) -> MaskedPlan | None:
    """The masked plan of a circuit polynomial (its folded fit's plan), or None."""
    f = folded_fit(fn)
    return None if f is None else mask_plan(f.plan())
