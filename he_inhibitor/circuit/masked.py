"""m * p(x) at p's own depth: a plaintext vector folded into a polynomial's evaluation plan.

The key mask multiplies each ReLU output (exact zeros for padded keys). As a
separate product it costs a level per layer; folded into the plan it costs
none. A plan is a straight line over registers; a register r is *scalable*
when m * r can be computed at r's own depth:

    lin(a.., c..)     -> lin_plain(a.., c*m..)        (a leaf: its constants become vectors)
    add_const(a, c)   -> add_plain(m*a, c*m)          if a is scalable
    add/sub(a, b)     -> add/sub(m*a, m*b)            if both are
    mul(a, b)         -> mul(m*a, b) or mul(a, m*b)   if either is
    square(a)         -> mul(m*a, a)                  if a is
    drop(a)           -> drop(m*a)                    if a is

Paterson-Stockmeyer plans combine coefficient-bearing leaves with powers of
x, so their output is scalable; when it is not, `mask_plan` returns None and
the compiler multiplies by the mask separately (one level). The plan's
levels carry over (approx/plan.py): every scaled register sits at its
unscaled one's depth.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from he_inhibitor.approx.plan import depth_of
from he_inhibitor.circuit.poly import plan_of


@dataclass(frozen=True)
class MaskedInstr:
    """dst <- op(args, const); for lin_plain/add_plain the operands are const * mask."""

    op: str
    dst: int
    args: tuple[int, ...]
    const: float | tuple[float, ...] | None = None
    drop: int = 0


@dataclass(frozen=True)
class MaskedPlan:
    instrs: tuple[MaskedInstr, ...]
    output: int

    @property
    def depth(self) -> int:
        d = {0: 0}
        for ins in self.instrs:
            d[ins.dst] = depth_of(ins.op.removesuffix("_plain"), [d[a] for a in ins.args], ins.drop)
        return d[self.output]

    def run(self, x: Any, mask: np.ndarray, backend: Any) -> Any:
        """Backend: the plan ops plus lin_plain(xs, vectors, drop) and add_plain(a, vector)."""
        regs = {0: x}
        for ins in self.instrs:
            fn = getattr(backend, ins.op)
            args = [regs[a] for a in ins.args]
            if ins.op == "lin_plain":
                regs[ins.dst] = fn(args, [c * mask for c in ins.const], ins.drop)
            elif ins.op == "add_plain":
                regs[ins.dst] = fn(*args, ins.const * mask)
            elif ins.op == "drop":
                regs[ins.dst] = fn(*args, ins.drop)
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

    def emit(op: str, args: tuple[int, ...], const: float | tuple[float, ...] | None = None, drop: int = 0) -> int:
        nonlocal nxt
        instrs.append(MaskedInstr(op, nxt, args, const, drop))
        nxt += 1
        return nxt - 1

    for ins in plan.instrs:
        instrs.append(MaskedInstr(ins.op, ins.dst, ins.args, ins.const, ins.drop))
        a = ins.args
        if ins.op == "lin":
            scaled[ins.dst] = emit("lin_plain", a, ins.const, ins.drop)
        elif ins.op == "drop" and a[0] in scaled:
            scaled[ins.dst] = emit("drop", (scaled[a[0]],), None, ins.drop)
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


@functools.lru_cache(maxsize=256)
def masked_plan_of(fn: Any) -> MaskedPlan | None:
    """The masked plan of a circuit polynomial (its folded fit's plan), or None; made once per polynomial."""
    plan = plan_of(fn)
    return None if plan is None else mask_plan(plan)
