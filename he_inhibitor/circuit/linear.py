"""Plaintext-weight linear layers over blocks: the diagonal method with baby-step giant-step.

For y = x W + b with x and y packed feature-major (layout.py), output block b of
ciphertext o is a weighted sum of input blocks, so

    y_o = sum_c sum_k diag_{o,c,k} * rot(x_c, k*2T),

where diag_{o,c,k} holds W[feature at block b+k of x_c, feature at block b of
y_o] in the first half of block b and zero in its second half. That zero *is*
the half-block mask: whatever garbage x carries in its second halves is
multiplied by zero, so y's second halves are exactly zero at no extra level.
A `full` layout (the attention's arranged layout, arrange.py) has tokens in
the whole block, and its diagonals fill the whole block.

Splitting k = g*n1 + j (baby step j, giant step g) and pre-rotating the
diagonals by -g*n1*2T gives

    y_o = sum_g rot( sum_c sum_j diag'_{o,c,g,j} * rot(x_c, j*2T), g*n1*2T ),

with the baby rotations rot(x_c, j*2T) computed once per input ciphertext as
successive rotations by 2T, shared by every matrix applied to x (Q, K, V), and
the giant sums folded Horner-style by rotations of n1*2T. Two Galois steps
serve every linear layer of a given T.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit.layout import Layout, rot
from he_inhibitor.circuit.ops import Ops, V
from he_inhibitor.circuit.weight_store import content_digest


@dataclass(frozen=True)
class Matrix:
    """One compiled matrix: pre-rotated diagonals keyed (out_ct, giant g) -> [(in_ct, j, diag)]."""

    out_layout: Layout
    terms: dict[tuple[int, int], list[tuple[int, int, np.ndarray]]]
    bias: np.ndarray  # [out_layout.n_cts, n_slots]; zero outside first halves of mapped blocks


@dataclass(frozen=True)
class LinearGroup:
    """Matrices applied to the same input with shared baby steps."""

    in_layout: Layout
    n1: int
    matrices: tuple[Matrix, ...]

    @property
    def baby_max(self) -> int:
        return max(j for m in self.matrices for ts in m.terms.values() for _, j, _ in ts)

    def giant_max(self, m: Matrix, o: int) -> int:
        return max(g for (oo, g) in m.terms if oo == o)

    def rotation_count(self, lanes: int = 1) -> int:
        """Rotations one application on `lanes` lanes costs (baby steps, recomputed per lane, + Horner giant
        steps): apply() replayed on a counter, so the count cannot drift from what apply() does."""
        counter = _RotationCounter()
        self.apply(counter, [0] * self.in_layout.n_cts, lanes)
        return sum(counter.per_lane.values())

    @property
    def steps(self) -> set[int]:
        """Galois steps used (2T for baby steps, n1*2T for giant steps)."""
        b = self.in_layout.block_size
        out = {b} if self.baby_max > 0 else set()
        if any(g > 0 for m in self.matrices for (_, g) in m.terms):
            out.add(self.n1 * b)
        return out

    def apply(self, ops: Ops[V], x: list[V], lanes: int = 1) -> list[list[V]]:
        """y = x W + b for every matrix; returns one list of output ciphertexts per matrix.

        lanes > 1 splits the work, whichever way leaves the busiest lane the
        fewest rotations (ties: the fewest in all): by output ciphertext
        (round-robin over all matrices), each lane computing the baby steps
        it needs itself (recomputing beats waiting for another lane's), or by
        input ciphertext (input c on lane c % lanes, where its producer left
        it), each lane folding the giant steps of its own terms, lane 0
        summing. Either way lanes duplicate rotations (baby or giant steps);
        the compiler gives lanes only to layers where those are cheap.
        """
        if lanes > 1 and self._split_by_input(lanes):
            return self._by_input(ops, x, lanes)
        return self._by_output(ops, x, lanes)

    def _split_by_input(self, lanes: int) -> bool:
        def load(by_input: bool) -> tuple[int, int]:
            counter = _RotationCounter()
            (self._by_input if by_input else self._by_output)(counter, [0] * self.in_layout.n_cts, lanes)
            return max(counter.per_lane.values(), default=0), sum(counter.per_lane.values())
        return self.in_layout.n_cts > 1 and load(True) < load(False)

    def _by_output(self, ops: Ops[V], x: list[V], lanes: int) -> list[list[V]]:
        """Output ciphertexts round-robin over the lanes (one lane: the plain BSGS)."""
        baby: dict[tuple[int, int], list[V]] = {}  # (lane, input ct) -> rotations by j*2T, made when first read
        outs, k = [], 0
        for m in self.matrices:
            ys = []
            for o in range(m.out_layout.n_cts):
                lane = k % lanes
                k += 1
                ops.set_lane(lane)

                def babies(c: int, lane: int = lane) -> list[V]:
                    if (lane, c) not in baby:
                        baby[lane, c] = self._baby_row(ops, x[c])
                    return baby[lane, c]

                acc = self._giant_fold(ops, m, o, babies)
                assert acc is not None
                ys.append(ops.add_plain(ops.rescale(acc), m.bias[o]))
            outs.append(ys)
        ops.set_lane(0)
        return outs

    def _by_input(self, ops: Ops[V], x: list[V], lanes: int) -> list[list[V]]:
        """Each lane folds the giant steps of its own inputs' terms; lane 0 sums the partials."""
        baby: dict[int, list[V]] = {}
        for c, xc in enumerate(x):
            ops.set_lane(c % lanes)
            baby[c] = self._baby_row(ops, xc)
        outs = []
        for m in self.matrices:
            ys = []
            for o in range(m.out_layout.n_cts):
                parts: list[V] = []
                for lane in range(lanes):
                    ops.set_lane(lane)
                    acc = self._giant_fold(ops, m, o, baby.__getitem__, lambda c, lane=lane: c % lanes == lane)
                    if acc is not None:
                        parts.append(acc)
                ops.set_lane(0)
                acc = parts[0]
                for part in parts[1:]:
                    acc = ops.add(acc, part)
                ys.append(ops.add_plain(ops.rescale(acc), m.bias[o]))
            outs.append(ys)
        return outs

    def _baby_row(self, ops: Ops[V], xc: V) -> list[V]:
        """xc and its rotations by j*2T, j = 1..baby_max (successive rotations by 2T)."""
        row = ops.headroom([xc], 1)
        for _ in range(self.baby_max):
            row.append(ops.rotate(row[-1], self.in_layout.block_size))
        return row

    def _giant_fold(self, ops: Ops[V], m: Matrix, o: int, babies: Callable[[int], list[V]],
                    mine: Callable[[int], bool] = lambda c: True) -> V | None:
        """sum_g rot(sum_j diag'_{o,c,g,j} * babies(c)[j], g*n1*2T) over the terms of input ciphertexts c that
        are `mine`, Horner-style from the top giant step; None where no term is."""
        acc: V | None = None
        for g in range(self.giant_max(m, o), -1, -1):
            if acc is not None:
                acc = ops.rotate(acc, self.n1 * self.in_layout.block_size)
            for c, j, diag in m.terms.get((o, g), []):
                if mine(c):
                    t = ops.mul_plain(babies(c)[j], diag)
                    acc = t if acc is None else ops.add(acc, t)
        return acc


class _RotationCounter:
    """The Ops apply() uses, on placeholder values, counting rotations per lane."""

    def __init__(self) -> None:
        self.lane = 0
        self.per_lane: dict[int, int] = {}

    def rotate(self, x: int, k: int) -> int:
        self.per_lane[self.lane] = self.per_lane.get(self.lane, 0) + 1
        return x

    def headroom(self, xs: list[int], k: int) -> list[int]:
        return list(xs)

    def mul_plain(self, x: int, p: np.ndarray) -> int:
        return x

    def add(self, x: int, y: int) -> int:
        return x

    def add_plain(self, x: int, p: np.ndarray) -> int:
        return x

    def rescale(self, x: int) -> int:
        return x

    def set_lane(self, lane: int) -> None:
        self.lane = lane


def _diagonals(w: np.ndarray, src: Layout, dst: Layout) -> dict[tuple[int, int, int], np.ndarray]:
    """Non-zero block diagonals {(out_ct, in_ct, k): slot vector} of y = x w."""
    bpc, S, width = src.blocks_per_ct, src.n_slots, dst.tokens
    gi = np.asarray(src.block_of)
    go = np.asarray(dst.block_of)
    c, bi = gi // bpc, gi % bpc
    o, bo = go // bpc, go % bpc
    out: dict[tuple[int, int, int], np.ndarray] = {}
    for fi in range(w.shape[0]):
        ks = (bi[fi] - bo) % bpc
        for fo in np.nonzero(w[fi])[0]:
            key = (int(o[fo]), int(c[fi]), int(ks[fo]))
            vec = out.setdefault(key, np.zeros(S))
            start = bo[fo] * dst.block_size
            vec[start:start + width] = w[fi, fo]
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    """Read-only: a kept group's arrays are shared by every circuit compiled from it."""
    a.flags.writeable = False
    return a


def _bias(b: np.ndarray, dst: Layout) -> np.ndarray:
    return dst.pack(np.broadcast_to(np.asarray(b, dtype=np.float64), (dst.tokens, dst.d)))


def best_n1(ks: set[int], n_in_cts: int, n_out_cts: int) -> int:
    """Baby-step width minimising n_in_cts*max(j) + n_out_cts*max(g) over the used diagonals."""
    def cost(n1: int) -> tuple[int, int]:
        return (n_in_cts * max(k % n1 for k in ks) + n_out_cts * max(k // n1 for k in ks), n1)
    top = max(ks) + 1
    return min(range(1, top + 1), key=cost)


GROUPS_KEPT = 32  # a two-layer student: 4 groups per layer, two baby-step widths (n1), two buckets


_groups: OrderedDict[tuple, LinearGroup] = OrderedDict()
_groups_lock = threading.Lock()


def compile_group(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    src: Layout,
    dsts: list[Layout],
    n1: int | None = None,
) -> LinearGroup:
    """Compile y_m = x W_m + b_m (W_m of shape [src.d, dst_m.d]) with shared baby steps.

    The diagonals depend on the weights and layouts alone, not on the attention plan, yet they are
    most of a plan's compile time and memory (~100 MB at N = 16384). So the last GROUPS_KEPT groups
    are kept, keyed by content, and every plan of a bucket shares one read-only copy: a new plan
    compiles in a fraction of the time, and a store of encoded weights (weight_store.py) hashes the
    shared arrays once.
    """
    key = content_digest(*weights, *biases, tag=repr((src, tuple(dsts), n1)))
    with _groups_lock:
        if key in _groups:
            _groups.move_to_end(key)
            return _groups[key]
    group = _compile_group(weights, biases, src, dsts, n1)
    with _groups_lock:
        _groups[key] = group
        while len(_groups) > GROUPS_KEPT:
            _groups.popitem(last=False)
    return group


def _compile_group(weights: list[np.ndarray], biases: list[np.ndarray], src: Layout, dsts: list[Layout],
                   n1: int | None) -> LinearGroup:
    for w, dst in zip(weights, dsts, strict=True):
        if w.shape != (src.d, dst.d):
            raise ValueError(f"weight shape {w.shape} != {(src.d, dst.d)}")
        if (dst.T, dst.n_slots, dst.full) != (src.T, src.n_slots, src.full):
            raise ValueError("input and output layouts must share T, the slot count and their token width")
    diags = [_diagonals(np.asarray(w, dtype=np.float64), src, dst) for w, dst in zip(weights, dsts)]
    if any(not d for d in diags):
        raise ValueError("an all-zero weight matrix has no diagonals; use its bias as a plaintext")
    ks = {k for d in diags for (_, _, k) in d}
    if n1 is None:
        n1 = best_n1(ks, src.n_cts, sum(d.n_cts for d in dsts))
    shift = n1 * src.block_size
    mats = []
    for d, b, dst in zip(diags, biases, dsts):
        terms: dict[tuple[int, int], list[tuple[int, int, np.ndarray]]] = {}
        for (o, c, k), vec in sorted(d.items(), key=lambda kv: kv[0]):
            g, j = divmod(k, n1)
            terms.setdefault((o, g), []).append((c, j, _frozen(rot(vec, -g * shift))))
        for o in range(dst.n_cts):  # an output ciphertext no weight reaches is its bias alone
            if not any(oo == o for oo, _ in terms):
                terms[(o, 0)] = [(0, 0, _frozen(np.zeros(src.n_slots)))]
        mats.append(Matrix(dst, terms, _frozen(_bias(b, dst))))
    return LinearGroup(src, n1, tuple(mats))

