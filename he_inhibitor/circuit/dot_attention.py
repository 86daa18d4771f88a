"""Dot-product attention (ReLU substitute for softmax) over all query/key pairs, same layout.

The comparison the project reports (docs/design.md §10): the inhibitor against
dot-product attention compiled by the same compiler, on the same packing.
Q, K, V arrive from the Q/K/V linear layer with zero second halves and heads
interleaved. K and V get their first halves copied into their second halves
(one rotation each), so rot(K2, s) and rot(V2, s) hold token (i+s) mod T at
offset i of every block's first half. For each shift s = 0..T-1:

    P  = sum_c Q_c * rot(K2_c, s)                ciphertext products, one rescale
    S  = head rotate-and-sum of P                s_{i,i+s} / B in every block of the head
    A  = (mask_s / n) * r(S)                     ReLU fit, key mask and 1/n folded in (no level)
    H += A * rot(V2, s)                          ciphertext product, summed unrescaled

and each lane's H is rescaled once after its last shift. As for the inhibitor, the
shifts are split into contiguous lanes (attention.shift_lanes), each with its
own accumulator, summed on lane 0: work a parallel executor runs in separate
processes. Q keeps its zero second halves
(unlike the inhibitor, which needs Q - K there), so P, S, A and every product
are exactly zero in second halves: the ReLU fit sees 0 there, never garbage.
Blocks no feature maps to hold Q = V = 0, so they add nothing either.

Levels: QKV 1, Q*K 1, ReLU r, A*V 1, Wo 1 -> 4 + r per attention block,
against 2 + a + r for the inhibitor (a = depth of |x|).
"""

from __future__ import annotations

from dataclasses import dataclass

from he_inhibitor.circuit.attention import half_copy, head_sum_steps, over_lanes, shift_steps
from he_inhibitor.circuit.builder import Builder
from he_inhibitor.circuit.dot_weights import DotFolded
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.linear import compile_group
from he_inhibitor.circuit.ops import Ops, V
from he_inhibitor.circuit.poly import PolyFn


def mask_name(s: int) -> str:
    """The public plaintext m[(i+s) mod T] / n (Compiled.public_plaintexts binds it per request)."""
    return f"mask{s}/n"


@dataclass(frozen=True)
class DotSpec:
    """One dot-product attention in the scaled domain: relu_fn computes ReLU(x) on [-1, 1]."""

    layout: Layout
    n_heads: int
    relu_fn: PolyFn
    lanes: int = 2  # independent ranges of shifts (processes a parallel executor may use)
    main_shifts: int | None = None  # shifts on lane 0 (None: an even split)

    def __post_init__(self) -> None:
        if self.layout.blocks_per_ct % self.n_heads:
            raise ValueError("blocks per ciphertext must be a multiple of the head count")

    @property
    def head_sum_steps(self) -> list[int]:
        return head_sum_steps(self.layout, self.n_heads)

    @property
    def steps(self) -> set[int]:
        """The inhibitor's set for the same layout and lanes."""
        return shift_steps(self.layout, self.n_heads, self.lanes, self.main_shifts)

    @property
    def depth(self) -> int:
        """Levels from Q, K, V to H: the score product, the ReLU, the value product."""
        return 2 + int(self.relu_fn.depth)


def dot_attention(ops: Ops[V], spec: DotSpec, q: list[V], k: list[V], v: list[V], masks: list) -> list[V]:
    """H' = (A V) / B as ciphertexts in spec.layout (zero second halves); masks[s] = mask_s / n."""
    T = spec.layout.T
    k2, v2 = half_copy(ops, k, T), half_copy(ops, v, T)
    return over_lanes(ops, T, spec.lanes, spec.main_shifts, lambda shifts: _shifts(ops, spec, q, k2, v2, masks, shifts))


def _shifts(ops: Ops[V], spec: DotSpec, q: list[V], k2: list[V], v2: list[V], masks: list,
            shifts: range) -> list[V]:
    """sum over s in shifts of A_s * rot(V2, s), rescaled once; starts from rot(., shifts.start)."""
    acc: list[V | None] = [None] * len(v2)
    if shifts.start:
        k2 = [ops.rotate(kc, shifts.start) for kc in k2]
    for s in shifts:
        if s > shifts.start:
            k2 = [ops.rotate(kc, 1) for kc in k2]
            v2 = [ops.rotate(vc, 1) for vc in v2]
        p: V | None = None
        for qc, kc in zip(q, k2, strict=True):
            t = ops.mul(qc, kc)
            p = t if p is None else ops.add(p, t)
        assert p is not None
        z = ops.rescale(p)
        for step in spec.head_sum_steps:
            z = ops.add(z, ops.rotate(z, step))
        a = ops.poly(z, spec.relu_fn, masks[s])
        if s == shifts.start:  # shift V where it is used: mod-switched once, rotated at the cheaper level
            v2 = [ops.align(vc, a) for vc in v2]
            if shifts.start:
                v2 = [ops.rotate(vc, shifts.start) for vc in v2]
        for c, vc in enumerate(v2):
            t = ops.mul(a, vc)
            acc[c] = t if acc[c] is None else ops.add(acc[c], t)
    return [ops.rescale(h) for h in acc if h is not None]


def dot_attention_block(b: Builder, fw: DotFolded, xl: Layout, n_heads: int, n1: int, x: list[int],
                        lanes: int = 2, main_shifts: int | None = None) -> list[int]:
    """x + Wo'(H') + bo: the residual stream after one dot-product attention sublayer."""
    spec = DotSpec(xl, n_heads, fw.attn_relu, lanes, main_shifts)
    x = b.headroom(x, 2 + spec.depth)
    q, k, v = compile_group([fw.wq, fw.wk, fw.wv], [fw.bq, fw.bk, fw.bv], xl, [xl] * 3, n1).apply(b, x)
    h = dot_attention(b, spec, q, k, v, [mask_name(s) for s in range(xl.T)])
    (o,) = compile_group([fw.wo], [fw.bo], xl, [xl], n1).apply(b, h)
    return [b.add(xc, oc) for xc, oc in zip(x, o)]
