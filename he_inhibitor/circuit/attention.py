"""Inhibitor attention over all query/key pairs in the arranged layout (docs/design.md §3.4, §4).

Q, K, V arrive from the Q/K/V linear layer in the arranged layout of
arrange.py (queries in regions, keys and values cyclic over whole blocks,
heads interleaved), so rot(K, s) puts beside every query the key of one
cyclic offset. For each of the plan's m shifts s:

    A  = c_z * p(Q - rot(K, s))                   |x| fit, c_z folded into it
    Z  = head rotate-and-sum of A (+ z offset)    log2(blocks/H) rotations
         (+ b_h(j - i): relative bias, one public plaintext per shift, no level)
    H += mask_s * r(rot(V, s) - Z)                ReLU fit (signed: minus r(-V-Z))

mask_s (a public plaintext bound per sentence) is n^-key_norm where a
counted (query, key) pair meets and zero elsewhere: in slots that hold no
query, at offsets beyond the sentence, and at repeated offsets. It is folded
into the polynomial's plan (masked.py), so it costs no level. Every slot of
Q - rot(K, s) is a difference of a real query (or zero) and a real key, so
every slot stays inside the interval the bound was calibrated on; the
simulator checks every slot anyway.

Everything is in the scaled domain the compiler prepares: Q and K divided by
B_abs, V and Z by B_att, so both polynomials see [-1, 1].

Where the lanes divide the shifts, the shifts are dealt round-robin to
`lanes` independent lanes (lane l runs s = l, l + lanes, ...: one rotation
by l, then rotations by `lanes`), each with its own accumulator, summed on
lane 0. Otherwise the ciphertexts are: lane l takes every lanes-th one
through every shift, and the partial sums of Z meet on lane 0 once per
shift (design §3.4).

The all-T-shift helpers at the end (half copies, contiguous lanes) serve the
dot-product attention (dot_attention.py), whose softmax substitute needs
every key of a query in one sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from he_inhibitor.circuit.ir import Plain
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.ops import Ops, V
from he_inhibitor.circuit.poly import PolyFn, Reflected


@dataclass(frozen=True)
class AttentionSpec:
    """One inhibitor attention in the scaled domain, over `shifts` shifts of the arranged layout.

    abs_fn computes c_z * |x| (c_z = B_abs * gamma / sqrt(d_h) / B_att),
    relu_fn computes ReLU(x); z_bias = alpha / B_att.
    """

    layout: Layout  # arranged (arrange.ShiftPlan.layout)
    n_heads: int
    abs_fn: PolyFn
    relu_fn: PolyFn
    z_bias: float
    shifts: int
    signed: bool = False
    lanes: int = 2  # independent groups of work (processes or Ray workers a parallel executor may use)

    def __post_init__(self) -> None:
        if self.lanes < 1:
            raise ValueError("an attention needs at least one lane")
        if self.layout.blocks_per_ct % self.n_heads:
            raise ValueError("blocks per ciphertext must be a multiple of the head count")
        if self.shifts < 1:
            raise ValueError("an attention needs at least one shift")

    @property
    def z_offset(self) -> float:
        """z_bias, less what the head sums pick up from unused blocks.

        When a head's rotate-and-sum cycle has more blocks than d_h (a layout
        with unused blocks), each unused block holds D = 0 exactly and adds
        abs_fn(0), which a polynomial need not make zero; subtracting it here
        keeps the sum exact at no cost.
        """
        lay = self.layout
        unused = lay.n_cts * lay.blocks_per_ct // self.n_heads - lay.d // self.n_heads
        return self.z_bias - unused * float(self.abs_fn(np.zeros(1))[0])

    @property
    def split_shifts(self) -> bool:
        """Whether the lanes run whole shifts rather than split the ciphertexts: the split whose busiest
        lane runs fewer (shift, ciphertext) pairs, whole shifts on a tie (the lanes then meet only once)."""
        L, C = self.lanes, self.layout.n_cts
        return -(-self.shifts // L) * C <= self.shifts * -(-C // L)

    @property
    def lane_count(self) -> int:
        """Lanes that get work."""
        return min(self.lanes, self.shifts if self.split_shifts else self.layout.n_cts)

    @property
    def steps(self) -> set[int]:
        """Galois steps: each lane's first shift and the lane stride (or steps of 1), the head sums."""
        L = self.lane_count if self.split_shifts else 1
        shifts = set(range(1, L)) | ({L} if self.shifts > L else set())
        return shifts | set(head_sum_steps(self.layout, self.n_heads))


def inhibitor_attention(
    ops: Ops[V], spec: AttentionSpec, q: list[V], k: list[V], v: list[V],
    masks: list[Plain], offsets: list[Plain],
) -> list[V]:
    """H in the arranged layout (scaled by 1/B_att: sum over counted pairs of mask * r(...)).

    masks[s], offsets[s]: shift s's key mask and what it adds to Z (a float
    or the name of a public plaintext).

    Two passes: every shift's Z (the |x| polynomials and head sums), then
    every shift's ReLU polynomials. Between them the Zs of all shifts are
    refreshed together, in one round trip, where the chain cannot hold both
    polynomials (`Ops.headroom`; a chain of |x| depth + ReLU depth needs
    none, design §6).

    Lanes: where that balances the work better (AttentionSpec.split_shifts),
    each lane runs whole shifts and the lanes meet once, at the end.
    Otherwise (a plan of one shift, say) each lane takes every L-th
    ciphertext of Q, K and V through every shift: its |x| polynomials give
    a partial Z, lane 0 sums the partials (and the head sums), and every
    lane runs the ReLU polynomials of its own V ciphertexts against that Z.
    The lanes then meet once per shift, but the polynomials, which are most
    of the work, split evenly.
    """
    L = spec.lane_count
    if spec.split_shifts:
        lanes = [(range(lane, spec.shifts, L), lambda c, lane=lane: lane) for lane in range(L)]
    else:
        lanes = [(range(spec.shifts), lambda c: c % L)]
    zs = [_inhibitions(ops, spec, q, k, offsets, shifts, lane_of) for shifts, lane_of in lanes]
    fresh = iter(ops.headroom([z for part in zs for z in part], spec.relu_fn.depth))
    parts = [_relus(ops, spec, v, [next(fresh) for _ in part], masks, shifts, lane_of)
             for (shifts, lane_of), part in zip(lanes, zs)]
    ops.set_lane(0)
    acc = parts[0]
    for part in parts[1:]:
        acc = [ops.add(a, b) for a, b in zip(acc, part)]
    return acc


def _on(ops: Ops[V], lane_of: Callable[[int], int]) -> Callable[[int], int]:
    """c -> c, with later ops on ciphertext c's lane."""
    def on(c: int) -> int:
        ops.set_lane(lane_of(c))
        return c
    return on


def _inhibitions(ops: Ops[V], spec: AttentionSpec, q: list[V], k: list[V], offsets: list[Plain], shifts: range,
                 lane_of: Callable[[int], int]) -> list[V]:
    """Z^(s) for s in shifts: one rotation of K by the first shift, then by the stride.

    Ciphertext c's |x| polynomial runs on lane lane_of(c); Z is summed per
    lane, then across lanes (and head-summed) on lane_of(0).
    """
    on, cts, zs = _on(ops, lane_of), range(len(k)), []
    if shifts.start:
        k = [ops.rotate(k[on(c)], shifts.start) for c in cts]
    for idx, s in enumerate(shifts):
        if idx:
            k = [ops.rotate(k[on(c)], shifts.step) for c in cts]
        partial: dict[int, V] = {}
        for c in cts:
            a = ops.poly(ops.sub(q[on(c)], k[c]), spec.abs_fn)
            partial[lane_of(c)] = ops.add(partial[lane_of(c)], a) if lane_of(c) in partial else a
        ops.set_lane(lane_of(0))
        z = partial[lane_of(0)]
        for lane, part in partial.items():
            if lane != lane_of(0):
                z = ops.add(z, part)
        for step in head_sum_steps(spec.layout, spec.n_heads):
            z = ops.add(z, ops.rotate(z, step))
        if not (isinstance(offsets[s], float) and offsets[s] == 0.0):  # a name, a vector, or a non-zero scalar
            z = ops.add_plain(z, offsets[s])
        zs.append(z)
    return zs


def _relus(ops: Ops[V], spec: AttentionSpec, v: list[V], zs: list[V], masks: list[Plain], shifts: range,
           lane_of: Callable[[int], int]) -> list[V]:
    """sum over s in shifts of mask_s * r(rot(V, s) - Z^(s)), ciphertext c's work on lane lane_of(c).

    V is shifted where it is used: mod-switched once to Z's level, then
    rotated (by the first shift, then by the stride) on the fewer primes.
    """
    on, cts = _on(ops, lane_of), range(len(v))
    acc: list[V | None] = [None] * len(v)
    for idx, (s, z) in enumerate(zip(shifts, zs)):
        if idx == 0:
            v = [ops.align(v[on(c)], z) for c in cts]
            if shifts.start:
                v = [ops.rotate(v[on(c)], shifts.start) for c in cts]
        else:
            v = [ops.rotate(v[on(c)], shifts.step) for c in cts]
        for c in cts:
            vc = v[on(c)]
            t = ops.poly(ops.sub(vc, z), spec.relu_fn, masks[s])
            if spec.signed:
                t = ops.sub(t, ops.poly(ops.add(vc, z), Reflected(spec.relu_fn), masks[s]))
            acc[c] = t if acc[c] is None else ops.add(acc[c], t)
    return [a for a in acc if a is not None]


def head_sum_steps(layout: Layout, n_heads: int) -> list[int]:
    """H*2T*2^i for i = 0..log2(blocks_per_ct/H)-1: cyclic over one head's blocks."""
    out, step = [], n_heads * layout.block_size
    while step < layout.n_slots:
        out.append(step)
        step *= 2
    return out


def shift_steps(layout: Layout, n_heads: int, lanes: int, main_shifts: int | None) -> set[int]:
    """Galois steps of an all-pairs attention (inhibitor or dot product): -T (half copies),
    1 (shifts), each lane's first shift, the head sums."""
    T = layout.T
    starts = {r.start for r in shift_lanes(T, lanes, main_shifts)} - {0}
    return {-T} | ({1} if T > 1 else set()) | starts | set(head_sum_steps(layout, n_heads))


def shift_lanes(T: int, lanes: int, main_shifts: int | None = None) -> list[range]:
    """Contiguous ranges of shifts, one per lane; lane 0 (which also runs everything outside
    attention) gets main_shifts of them, the others share the rest evenly. Lane k > 0 starts
    with one rotation by its first shift."""
    lanes = max(1, min(lanes, T))
    if lanes == 1:
        return [range(T)]
    first = T // lanes if main_shifts is None else max(1, min(main_shifts, T - lanes + 1))
    cuts = [0] + [first + (T - first) * k // (lanes - 1) for k in range(lanes)]
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


def half_copy(ops: Ops[V], cts: list[V], T: int) -> list[V]:
    """Copy each block's first half into its (zero) second half: one rotation per ciphertext."""
    return [ops.add(c, ops.rotate(c, -T)) for c in cts]


def over_lanes(ops: Ops[V], T: int, lanes: int, main_shifts: int | None, body) -> list[V]:
    """Run ``body(shifts)`` once per lane of shifts, each on its own lane, and sum the results on lane 0."""
    parts = []
    for lane, shifts in enumerate(shift_lanes(T, lanes, main_shifts)):
        ops.set_lane(lane)
        parts.append(body(shifts))
    ops.set_lane(0)
    acc = parts[0]
    for part in parts[1:]:
        acc = [ops.add(a, b) for a, b in zip(acc, part)]
    return acc
