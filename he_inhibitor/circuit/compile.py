"""Compile the student (folded weights) into a circuit over the packed layout.

Stages per layer, with the levels they consume (a = depth of |x|, r = depth
of the attention ReLU, f = depth of the FFN ReLU):

    attn: QKV 1 (at the chain's last level), then the client arranges
          Q, K, V (a refresh); |x| a, ReLU r (key mask folded in) -> a + r,
          then the client folds H back (a refresh); Wo 1
    ffn:  W1 1, ReLU f, W2 1                             -> 2 + f
    head: pooling weights 1                              -> 1

The inhibitor attention runs in the arranged layout of a ShiftPlan
(arrange.py, docs/design.md §4): Q, K and V are projected in the bucket
layout (one input, shared baby steps, on the fewest primes) and the client
re-packs them, with x after layer 0, in one round trip; H returns to the
bucket layout through the refresh before Wo. Two round trips per layer.

A dot-product student (layers read as DotLayerWeights) gets
dot_attention.dot_attention_block instead: 4 + r levels per attention.

The residual stream x is the only ciphertext that crosses the other stage
boundaries, so when the chain left is too short for a stage, x is refreshed
through the client before it (see builder.Builder.headroom).

Work before a refresh runs on the chain's last levels, since a key switch
costs about in proportion to the primes it carries (docs/design.md §6):
Q and K are mod-switched to where |x| ends the chain when Z is refreshed
before its ReLU (`qk_room`), and H to where Wo and W1 end it when the
hidden ciphertexts are refreshed before theirs (`wo_room`).

Key masks, relative-bias offsets, the client's maps and pooling weights
depend on the sentence's length: they are public plaintexts bound per
request by `Compiled.public_plaintexts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit import arrange
from he_inhibitor.circuit.arrange import ShiftPlan, full_plan
from he_inhibitor.circuit.attention import AttentionSpec, inhibitor_attention
from he_inhibitor.circuit.builder import Builder
from he_inhibitor.circuit.dot_attention import DotSpec, dot_attention_block, mask_name
from he_inhibitor.circuit.dot_weights import DotLayerWeights, fold_dot_layer
from he_inhibitor.circuit.ir import Circuit, CircuitError
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.linear import compile_group
from he_inhibitor.circuit.weights import StudentWeights, fold_layer


@dataclass(frozen=True)
class Compiled:
    """A compiled student: the circuit and what client and server need to use it."""

    circuit: Circuit
    layout: Layout  # of the residual stream x (the bucket layout)
    pool_w: np.ndarray  # [d, n_labels]: sf o Wc
    n1: int
    max_level: int | None
    main_shifts: int | None = None  # dot-product attention: shifts on lane 0 (None: an even split)
    key_norm: float = 0.0  # inhibitor key masks carry n^-key_norm (StudentWeights.key_norm)
    plan: ShiftPlan | None = None  # the inhibitor's packing (None: a dot-product student)
    n_heads: int = 1
    rel_bias: tuple[np.ndarray | None, ...] = ()  # per layer, scaled b_h(o) / B_att, bound per request
    z_offset: tuple[float, ...] = ()  # per layer: what every shift adds to Z

    @property
    def T(self) -> int:
        return self.layout.T

    @property
    def att_layout(self) -> Layout | None:
        return None if self.plan is None else self.plan.layout(self.layout, self.n_heads)

    def holds(self, n: int) -> bool:
        """Whether this circuit evaluates sentences of n tokens."""
        return 1 <= n <= self.T and (self.plan is None or self.plan.holds(n))

    def _tokens(self, m: np.ndarray) -> int:
        m = np.asarray(m, dtype=np.float64)
        n = int(m.sum())
        if m.shape != (self.T,) or not np.array_equal(m, (np.arange(self.T) < n).astype(np.float64)) or n < 1:
            raise ValueError(f"mask must be {self.T} values: ones for the sentence's tokens, then zeros")
        if not self.holds(n):
            raise ValueError(f"this circuit (plan {self.plan}) does not hold {n} tokens")
        return n

    def input_names(self) -> list[str]:
        return [f"x{c}" for c in range(self.layout.n_cts)]

    def pack_input(self, x0: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
        """x0 [T, d] (zero at padding), mask m [T] of the sentence it holds -> {input name: slot vector}."""
        self._tokens(m)
        return {f"x{c}": ct for c, ct in enumerate(self.layout.pack(x0))}

    def public_plaintexts(self, m: np.ndarray) -> dict[str, object]:
        """What a request binds by name: the shifts' key masks (n^-key_norm where a counted pair meets),
        relative-bias offsets, the client's maps, pooling weights (m_i / n) x (sf o Wc).

        Dot-product students get the all-T-shift key masks divided by n instead (``mask_name``).
        """
        n = self._tokens(m)
        m = np.asarray(m, dtype=np.float64)
        out: dict[str, object] = {}
        if self.plan is None:
            out.update({mask_name(s): self.layout.token_vector(np.roll(m, -s)) / n for s in range(self.T)})
        else:
            att, plan = self.att_layout, self.plan
            out.update({shift_mask_name(s): arrange.shift_mask(att, plan, n, s, n**-self.key_norm)
                        for s in range(plan.m)})
            for li, rb in enumerate(self.rel_bias):
                if rb is not None:
                    out.update({offset_name(li, s): arrange.shift_bias(att, plan, n, s, self.n_heads, rb,
                                                                       self.z_offset[li]) for s in range(plan.m)})
            out.update(arrange.maps(self.layout, att, plan, n))
        for c in range(self.pool_w.shape[1]):
            packed = self.layout.pack(np.outer(m / n, self.pool_w[:, c]))
            out.update({f"pool{c}_{i}": ct for i, ct in enumerate(packed)})
        return out

    def read_logits(self, out: np.ndarray) -> np.ndarray:
        """Label c sits at slot c*T of the output vector."""
        return np.array([out[c * self.T] for c in range(self.pool_w.shape[1])])


def shift_mask_name(s: int) -> str:
    return f"amask{s}"


def offset_name(layer: int, s: int) -> str:
    return f"zoff{layer}.{s}"


def _on_lane(b: Builder, lane: int, op) -> int:
    """op() recorded on `lane` (where linear.LinearGroup.apply left its input), then back to lane 0."""
    b.set_lane(lane)
    out = op()
    b.set_lane(0)
    return out


def qk_room(max_level: int, a: int, r: int) -> int:
    """Levels Q and K keep after the arranging refresh: the |x| polynomial's a, and the ReLU's r after
    it where the chain holds both; where it does not, Z is refreshed between them anyway (the
    attention's one round trip for all shifts), so |x|, K's shift rotations and Z's head sums run a
    level or more lower, on fewer primes. V waits at the top for the refreshed Z."""
    return a + r if max_level >= a + r else a


def wo_room(max_level: int, f: int) -> int:
    """Levels H keeps after the fold refresh.

    After it come Wo, W1, the FFN's ReLU (f levels), W2 and the next QKV (or
    the head): 4 + f levels. A chain that holds them runs them on its last
    4 + f levels. A chain too short to hold the ReLU beside Wo and W1 (fewer
    than 2 + f levels, as the shipped one: 4 against 6) refreshes the hidden
    ciphertexts before the ReLU whatever else it does, so all Wo and W1 need
    before that refresh is two levels: they run on the chain's last two, on
    three primes, where a key switch costs about half what it does at the
    top. In between, H stays at the top and the hidden ciphertexts are
    refreshed where the chain runs out, after the ReLU.
    """
    if max_level >= 4 + f:
        return 4 + f
    return min(2, max_level) if max_level < 2 + f else max_level


def _sum(b: Builder, terms: list[int]) -> int:
    acc = terms[0]
    for t in terms[1:]:
        acc = b.add(acc, t)
    return acc


def choose_n1(bpc: int, groups: list[tuple[int, int]], free_steps: set[int], block: int) -> int:
    """One baby-step width for every linear layer (one giant-step key), for dense matrices.

    groups: (input ciphertexts, output ciphertexts over all matrices) per group.
    Rotations n_in*(n1-1) + n_out*(ceil(bpc/n1)-1) summed; a width whose giant
    step is not already a key costs as much as `bpc // 8` rotations.
    """
    def cost(n1: int) -> tuple[int, int]:
        rots = sum(i * (n1 - 1) + o * (-(-bpc // n1) - 1) for i, o in groups)
        return rots + (0 if n1 * block in free_steps or n1 >= bpc else bpc // 8), n1
    return min(range(1, bpc + 1), key=cost)


def compile_student(
    sw: StudentWeights, T: int, n_slots: int, max_level: int | None = None, unit_pool_steps: bool = True,
    lanes: int = 2, main_shifts: int | None = None, shifts: ShiftPlan | None = None,
) -> Compiled:
    """The student as a circuit for sentences of at most T tokens on n_slots slots.

    max_level: levels in the chain (None: unbounded, to measure depth first);
    deeper circuits get client-aided refreshes of the residual stream.
    unit_pool_steps: sum the pooled tokens by T-1 rotations of 1 (no new keys)
    rather than log2(T) rotations by powers of two (log2(T)-1 more keys).
    lanes: independent lanes of work (processes or Ray workers): the attention's
    shifts or ciphertexts (attention.py), the FFN ReLUs, and the linear layers
    whose split duplicates only cheap rotations (linear.py): QKV at the chain's
    last level and W2 by input; Wo and W1, on the most primes, stay on lane 0.
    main_shifts: a dot-product attention's shifts on lane 0.
    shifts: the inhibitor's packing (default: the plan that holds every n <= T;
    a bundle compiles one circuit per plan its sentences need, arrange.choose_plans).
    """
    if sw.wc.shape[1] > 2:
        raise ValueError("the pooled read-out places label c in half c of a block: at most 2 labels")
    H = sw.n_heads
    xl = Layout.heads(T, n_slots, sw.d, H)
    fl = Layout.natural(T, n_slots, sw.d_ff)
    dot = isinstance(sw.layers[0], DotLayerWeights)
    if any(isinstance(lw, DotLayerWeights) != dot for lw in sw.layers):
        raise CircuitError("a student's layers are all inhibitor or all dot-product attention")
    if not dot and any(getattr(lw, "conv", None) is not None for lw in sw.layers):
        raise CircuitError("token convolutions do not commute with the arranged attention layout; "
                           "compile a student without them")
    plan = None if dot else (shifts or full_plan(T))
    if plan is not None and plan.B < 2 * T:
        raise ValueError(f"plan blocks of {plan.B} slots are narrower than the bucket's {2 * T}")
    al = None if plan is None else plan.layout(xl, H)
    lw0 = sw.layers[0]
    spec_steps = (DotSpec(xl, H, lw0.attn_relu.fn, lanes, main_shifts).steps if dot
                  else AttentionSpec(al, H, lw0.abs_fn.fn, lw0.attn_relu.fn, 0.0, plan.m, lanes=lanes).steps)
    n1 = choose_n1(xl.blocks_per_ct, [(xl.n_cts, 3 * xl.n_cts), (xl.n_cts, xl.n_cts),
                                      (xl.n_cts, fl.n_cts), (fl.n_cts, xl.n_cts)], spec_steps, xl.block_size)
    b = Builder(n_slots, max_level)
    x = [b.input(f"x{c}") for c in range(xl.n_cts)]

    def for_qkv(xs: list[int]) -> list[int]:
        """xs at the chain's last level, where the QKV projection's rotations are cheapest."""
        return xs if max_level is None else [b.descend(xc, max_level - 1) for xc in xs]

    x_in = for_qkv(x)
    rel_biases, z_offsets = [], []
    for li, lw in enumerate(sw.layers):
        b.stage = f"layer{li}.attn"
        if dot:
            fw = fold_dot_layer(lw, H)
            x = dot_attention_block(b, fw, xl, H, n1, x, lanes, main_shifts)
        else:
            fw = fold_layer(lw, H)
            qkv = compile_group([fw.wq, fw.wk, fw.wv], [fw.bq, fw.bk, fw.bv], xl, [xl] * 3, n1).apply(b, x_in, lanes)
            if li == 0:  # the client arranges Q, K, V (and, after layer 0, refreshes x) in one round trip
                out = b.client_map([c for t in qkv for c in t], arrange.MAP_QKV, 3 * al.n_cts)
            else:
                out = b.client_map([c for t in qkv for c in t] + x, arrange.MAP_QKVX, 3 * al.n_cts + xl.n_cts)
                x = out[3 * al.n_cts:]
            q, k, v = (out[j * al.n_cts:(j + 1) * al.n_cts] for j in range(3))
            if max_level is not None:  # |x| on the fewest primes that leave Z what it needs (qk_room)
                qk = qk_room(max_level, fw.abs_fn.depth, fw.attn_relu.depth)
                q, k = ([b.descend(c, max_level - qk) for c in t] for t in (q, k))
            spec = AttentionSpec(al, H, fw.abs_fn, fw.attn_relu, fw.z_bias, plan.m, sw.signed, lanes)
            rel_biases.append(fw.rel_bias)
            z_offsets.append(spec.z_offset)
            offsets = ([offset_name(li, s) for s in range(plan.m)] if fw.rel_bias is not None
                       else [spec.z_offset] * plan.m)
            h = inhibitor_attention(b, spec, q, k, v, [shift_mask_name(s) for s in range(plan.m)], offsets)
            h = b.client_map(h, arrange.MAP_H, xl.n_cts)
            if max_level is not None:  # Wo and W1 on the chain's last levels (wo_room)
                h = [b.descend(hc, max_level - wo_room(max_level, fw.ffn_relu.depth)) for hc in h]
            (o,) = compile_group([fw.wo], [fw.bo], xl, [xl], n1).apply(b, h, lanes)
            x = [b.add(xc, oc) for xc, oc in zip(x, o)]
        b.stage = f"layer{li}.ffn"
        # refreshed together where the chain runs out: x before W1, the hidden ciphertexts before
        # the ReLU, then before W2 and the next QKV (or the head)
        (a,) = compile_group([fw.w1], [fw.b1], xl, [fl], n1).apply(b, b.headroom(x, 1), lanes)
        a = b.headroom(a, fw.ffn_relu.depth)
        a = [_on_lane(b, c % lanes, lambda ac=ac: b.poly(ac, fw.ffn_relu)) for c, ac in enumerate(a)]
        (f,) = compile_group([fw.w2], [fw.b2], fl, [xl], n1).apply(b, b.headroom(a, 2), lanes)
        x = [b.add(xc, fc) for xc, fc in zip(x, f)]
        x_in = for_qkv(x)
    b.stage = "head"
    x = b.headroom(x, 1)
    logits = None
    for c in range(sw.wc.shape[1]):
        yc = _sum(b, [b.mul_plain(xc, f"pool{c}_{i}") for i, xc in enumerate(x)])
        yc = b.rotate(b.rescale(yc), -c * T)  # label c into half c of every block
        logits = yc if logits is None else b.add(logits, yc)
    y = _sum_blocks(b, logits, xl, H)
    y = _sum_half(b, y, T, unit_pool_steps)
    bias = xl.token_vector(np.zeros(T))
    for c, bc in enumerate(sw.tf @ sw.wc + sw.bc):
        bias[c * T] = bc
    b.output(b.add_plain(y, bias), "logits")
    pool_w = sw.sf[:, None] * sw.wc
    return Compiled(b.circuit, xl, pool_w, n1, max_level, main_shifts, sw.key_norm, plan, H,
                    tuple(rel_biases), tuple(z_offsets))


def _sum_blocks(b: Builder, y: int, lay: Layout, H: int) -> int:
    """Sum over all blocks with the head-sum keys (H*2T*2^i), then H-1 steps of 2T."""
    step = H * lay.block_size
    while step < lay.n_slots:
        y = b.add(y, b.rotate(y, step))
        step *= 2
    r = y
    for _ in range(H - 1):
        r = b.rotate(r, lay.block_size)
        y = b.add(y, r)
    return y


def _sum_half(b: Builder, y: int, T: int, unit_steps: bool) -> int:
    """Slot c*T gets the sum of slots c*T .. c*T+T-1 (both halves of a block at once)."""
    if not unit_steps:
        step = 1
        while step < T:
            y = b.add(y, b.rotate(y, step))
            step *= 2
        return y
    acc, r = y, y
    for _ in range(T - 1):
        r = b.rotate(r, 1)
        acc = b.add(acc, r)
    return acc

