"""Inhibitor attention over all query/key pairs in the packed layout (DESIGN.md §2).

Q, K, V arrive from the Q/K/V linear layer with zero second halves and heads
interleaved. Copying first halves into second halves (K2 = K + rot(K, -T))
makes rot(K2, s) hold key (i+s) mod T at offset i of every block's first half,
so T cyclic shifts visit every (query, key) pair once. For each shift s:

    A  = c_z * p(Q - rot(K2, s))                  |x| fit, c_z folded into it
    Z  = head rotate-and-sum of A (+ z_bias)      log2(blocks/H) rotations
         (+ b_h((i+s) mod T - i): relative bias,  one plaintext per shift, no level)
    H += mask_s * r(rot(V2, s) - Z)               ReLU fit (signed: minus r(-V-Z));
                                                  mask_s[i] = m[(i+s) mod T]

Q is copied into its second halves too. Second halves are never read, but a
polynomial evaluated on an out-of-range garbage slot could blow up past the
modulus and wreck every slot of the ciphertext; with Q copied, second-half
differences are query/key differences (of the same or the adjacent feature
block), drawn from the distribution the bound was calibrated on, instead of
bare keys, which |K| <= B_abs does not bound. This is a heuristic, so the
simulator checks every slot, garbage included, against each interval.

Everything is in the scaled domain the compiler prepares: Q and K divided by
B_abs, V and Z by B_att, so both polynomials see [-1, 1]. The key mask is a
plaintext applied to the ReLU polynomial's output: padded keys contribute
exactly zero, and it zeroes second halves, so H leaves with zero second
halves. The mask is folded into the polynomial's plan (masked.py), so it
costs no level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.ops import Ops, V
from he_inhibitor.circuit.poly import PolyFn, Reflected


@dataclass(frozen=True)
class AttentionSpec:
    """One inhibitor attention in the scaled domain.

    abs_fn computes c_z * |x| (c_z = B_abs * gamma / sqrt(d_h) / B_att),
    relu_fn computes ReLU(x); z_bias = alpha / B_att.
    """

    layout: Layout
    n_heads: int
    abs_fn: PolyFn
    relu_fn: PolyFn
    z_bias: float
    signed: bool = False
    lanes: int = 2  # independent ranges of shifts (processes a parallel executor may use)
    main_shifts: int | None = None  # shifts on lane 0 (None: an even split)
    rel_bias: np.ndarray | None = None  # [H, 2L - 1], scaled: b_h(o) / B_att at index o + L - 1

    def __post_init__(self) -> None:
        if self.layout.blocks_per_ct % self.n_heads:
            raise ValueError("blocks per ciphertext must be a multiple of the head count")
        if self.rel_bias is not None:
            if self.rel_bias.ndim != 2 or self.rel_bias.shape[0] != self.n_heads or self.rel_bias.shape[1] % 2 == 0:
                raise ValueError(f"relative bias must be [{self.n_heads}, 2L - 1], not {self.rel_bias.shape}")
            if (self.rel_bias.shape[1] + 1) // 2 < self.layout.T:
                raise ValueError(f"relative bias covers {(self.rel_bias.shape[1] + 1) // 2} positions, T={self.layout.T}")

    def shift_offset(self, s: int) -> np.ndarray | float:
        """What shift s adds to Z: z_offset, plus b_h(j - i) at offset i of head h's blocks,
        j = (i + s) mod T the key it meets there (second halves: z_offset alone)."""
        if self.rel_bias is None:
            return self.z_offset
        lay, T = self.layout, self.layout.T
        i = np.arange(T)
        cols = (i + s) % T - i + (self.rel_bias.shape[1] - 1) // 2  # [T]
        heads = np.arange(lay.blocks_per_ct) % self.n_heads  # local block b holds a feature of head b mod H
        blocks = np.zeros((lay.blocks_per_ct, lay.block_size))
        blocks[:, :T] = self.rel_bias[heads][:, cols]
        return blocks.reshape(-1) + self.z_offset

    def key_masks(self, m: np.ndarray) -> list[np.ndarray]:
        """mask_s for s = 0..T-1: m[(i+s) mod T] in first halves, zero in second halves."""
        return [self.layout.token_vector(np.roll(np.asarray(m, dtype=np.float64), -s))
                for s in range(self.layout.T)]

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
    def head_sum_steps(self) -> list[int]:
        return head_sum_steps(self.layout, self.n_heads)

    @property
    def steps(self) -> set[int]:
        return shift_steps(self.layout, self.n_heads, self.lanes, self.main_shifts)


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


def inhibitor_attention(
    ops: Ops[V], spec: AttentionSpec, q: list[V], k: list[V], v: list[V], masks: list[np.ndarray]
) -> list[V]:
    """H (scaled by 1/B_att, i.e. sum_j m_j r(...)) as ciphertexts in spec.layout.

    The shifts are split into spec.lanes contiguous ranges, each on its own
    lane with its own accumulator, summed on lane 0: independent work that a
    parallel executor runs in separate processes.
    """
    T = spec.layout.T
    q2, k2, v2 = half_copy(ops, q, T), half_copy(ops, k, T), half_copy(ops, v, T)
    return over_lanes(ops, T, spec.lanes, spec.main_shifts, lambda shifts: _shifts(ops, spec, q2, k2, v2, masks, shifts))


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


def _shifts(ops: Ops[V], spec: AttentionSpec, q2: list[V], k2: list[V], v2: list[V], masks: list[np.ndarray],
            shifts: range) -> list[V]:
    """sum over s in shifts of mask_s * r(rot(V2, s) - Z^(s)), starting from rot(., shifts.start)."""
    acc: list[V | None] = [None] * len(q2)
    if shifts.start:
        k2 = [ops.rotate(kc, shifts.start) for kc in k2]
    for s in shifts:
        if s > shifts.start:
            k2 = [ops.rotate(kc, 1) for kc in k2]
            v2 = [ops.rotate(vc, 1) for vc in v2]
        z: V | None = None
        for qc, kc in zip(q2, k2, strict=True):
            a = ops.poly(ops.sub(qc, kc), spec.abs_fn)
            z = a if z is None else ops.add(z, a)
        assert z is not None
        for step in spec.head_sum_steps:
            z = ops.add(z, ops.rotate(z, step))
        if s == shifts.start:  # shift V where it is used: mod-switched once, rotated at the cheaper level
            v2 = [ops.align(vc, z) for vc in v2]
            if shifts.start:
                v2 = [ops.rotate(vc, shifts.start) for vc in v2]
        offset = spec.shift_offset(s)
        if np.any(offset):
            z = ops.add_plain(z, offset)
        for c, vc in enumerate(v2):
            t = ops.poly(ops.sub(vc, z), spec.relu_fn, masks[s])
            if spec.signed:
                t = ops.sub(t, ops.poly(ops.add(vc, z), Reflected(spec.relu_fn), masks[s]))
            acc[c] = t if acc[c] is None else ops.add(acc[c], t)
    return [a for a in acc if a is not None]
