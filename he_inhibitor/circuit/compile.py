"""Compile the student (folded weights) into a circuit over the packed layout.

Stages per layer, with the levels they consume (a = depth of |x|, r = depth
of the attention ReLU, f = depth of the FFN ReLU):

    attn: QKV 1, |x| a, ReLU r (key mask folded in), Wo 1  -> 2 + a + r
          (+1 with token convolutions after Q, K, V)
    ffn:  W1 1, ReLU f, W2 1                             -> 2 + f
    head: pooling weights 1                              -> 1

A dot-product student (layers read as DotLayerWeights) gets
dot_attention.dot_attention_block instead: 4 + r levels per attention.

The residual stream x is the only ciphertext that crosses stage boundaries,
so when the chain left is too short for a stage, x is refreshed through the
client before it (see builder.Builder.headroom); a stage deeper than the
whole chain is also refreshed inside, where the builder must (at a 9-level
chain: the attention output before Wo, one ciphertext).

Key masks, token-convolution taps (times the neighbour's mask) and pooling weights depend on the sentence's mask: they are public
plaintexts bound per request by `Compiled.public_plaintexts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit.attention import AttentionSpec, inhibitor_attention
from he_inhibitor.circuit.builder import Builder
from he_inhibitor.circuit.dot_attention import DotSpec, dot_attention_block, mask_name
from he_inhibitor.circuit.dot_weights import DotLayerWeights, fold_dot_layer
from he_inhibitor.circuit.ir import Circuit
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.linear import compile_group
from he_inhibitor.circuit.weights import StudentWeights, fold_layer


@dataclass(frozen=True)
class Compiled:
    """A compiled student: the circuit and what client and server need to use it."""

    circuit: Circuit
    layout: Layout  # of the residual stream x (client packs x0 with it)
    pool_w: np.ndarray  # [d, n_labels]: sf o Wc
    n1: int
    max_level: int | None
    main_shifts: int | None = None  # attention shifts on lane 0 (None: an even split)
    key_norm: float = 0.0  # inhibitor key masks carry n^-key_norm (StudentWeights.key_norm)
    convs: tuple[np.ndarray | None, ...] = ()  # per layer: LayerWeights.conv, bound to masks per request

    @property
    def T(self) -> int:
        return self.layout.T

    def pack_input(self, x0: np.ndarray) -> dict[str, np.ndarray]:
        """x0 [T, d] (zero at padding) -> {input name: slot vector}."""
        return {f"x{c}": ct for c, ct in enumerate(self.layout.pack(x0))}

    def public_plaintexts(self, m: np.ndarray) -> dict[str, np.ndarray]:
        """Key masks m[(i+s) mod T] n^-key_norm and pooling weights (m_i / n) x (sf o Wc) for one mask.

        Dot-product students get the key masks divided by n instead (``mask_name``).
        """
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (self.T,) or not set(np.unique(m)) <= {0.0, 1.0} or m.sum() < 1:
            raise ValueError(f"mask must be {self.T} zeros/ones with at least one token")
        keys = [self.layout.token_vector(np.roll(m, -s)) for s in range(self.T)]
        n = m.sum()
        out = {f"mask{s}": k * n**-self.key_norm for s, k in enumerate(keys)}
        out.update({mask_name(s): k / n for s, k in enumerate(keys)})
        for li, taps in enumerate(self.convs):
            if taps is not None:
                out.update(self._conv_plaintexts(li, taps, m))
        for c in range(self.pool_w.shape[1]):
            packed = self.layout.pack(np.outer(m / n, self.pool_w[:, c]))
            out.update({f"pool{c}_{i}": ct for i, ct in enumerate(packed)})
        return out

    def _conv_plaintexts(self, li: int, taps: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
        """conv{li}.{j}.{o}_{c}: tap w_o of tensor j (Q, K, V) times m[t + o] at token t (0 outside the sentence)."""
        half = taps.shape[1] // 2
        out = {}
        for o in range(-half, half + 1):
            neighbour = np.zeros(self.T)
            lo, hi = max(0, -o), min(self.T, self.T - o)
            neighbour[lo:hi] = m[lo + o : hi + o]
            for j in range(3):
                packed = self.layout.pack(np.outer(neighbour, taps[j, o + half]))
                out.update({conv_name(li, j, o, c): ct for c, ct in enumerate(packed)})
        return out

    def read_logits(self, out: np.ndarray) -> np.ndarray:
        """Label c sits at slot c*T of the output vector."""
        return np.array([out[c * self.T] for c in range(self.pool_w.shape[1])])


def conv_name(layer: int, tensor: int, offset: int, ct: int) -> str:
    return f"conv{layer}.{tensor}.{offset}_{ct}"


def token_conv(b: Builder, x: list[int], layer: int, tensor: int, kernel: int) -> list[int]:
    """attention.TokenConv in the packed layout: y = sum_o rot(x, o) * (w_o m[t+o]), one level.

    A token offset o is a rotation by o slots (tokens are consecutive within a
    block). Reads past a block's first half land on zero second halves or
    neighbouring blocks, where the plaintext is zero: it zeroes every token
    whose neighbour is padding or outside the sentence, and the second halves.
    """
    half = kernel // 2
    out = []
    for c, xc in enumerate(x):
        terms = [b.mul_plain(b.rotate(xc, o), conv_name(layer, tensor, o, c)) for o in range(-half, half + 1)]
        out.append(b.rescale(_sum(b, terms)))
    return out


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
    lanes: int = 2, main_shifts: int | None = None,
) -> Compiled:
    """The student as a circuit for sentences of at most T tokens on n_slots slots.

    max_level: levels in the chain (None: unbounded, to measure depth first);
    deeper circuits get client-aided refreshes of the residual stream.
    unit_pool_steps: sum the pooled tokens by T-1 rotations of 1 (no new keys)
    rather than log2(T) rotations by powers of two (log2(T)-1 more keys).
    lanes: the attention shifts split into this many independent lanes (one
    more Galois key per extra lane; see parallel.py); main_shifts of them on
    lane 0, which also runs everything else (None: an even split).
    """
    if sw.wc.shape[1] > 2:
        raise ValueError("the pooled read-out places label c in half c of a block: at most 2 labels")
    H = sw.n_heads
    xl = Layout.heads(T, n_slots, sw.d, H)
    fl = Layout.natural(T, n_slots, sw.d_ff)
    lw0 = sw.layers[0]
    spec_steps = (DotSpec(xl, H, lw0.attn_relu.fn, lanes, main_shifts).steps if isinstance(lw0, DotLayerWeights)
                  else AttentionSpec(xl, H, lw0.abs_fn.fn, lw0.attn_relu.fn, 0.0,
                                     lanes=lanes, main_shifts=main_shifts).steps)
    n1 = choose_n1(xl.blocks_per_ct, [(xl.n_cts, 3 * xl.n_cts), (xl.n_cts, xl.n_cts),
                                      (xl.n_cts, fl.n_cts), (fl.n_cts, xl.n_cts)],
                   spec_steps, xl.block_size)
    b = Builder(n_slots, max_level)
    x = [b.input(f"x{c}") for c in range(xl.n_cts)]
    for li, lw in enumerate(sw.layers):
        b.stage = f"layer{li}.attn"
        if isinstance(lw, DotLayerWeights):
            fw = fold_dot_layer(lw, H)
            x = dot_attention_block(b, fw, xl, H, n1, x, lanes, main_shifts)
        else:
            fw = fold_layer(lw, H)
            conv_levels = 0 if fw.conv is None else 1
            x = [b.headroom(xc, 2 + conv_levels + fw.abs_fn.depth + fw.attn_relu.depth) for xc in x]
            q, k, v = compile_group([fw.wq, fw.wk, fw.wv], [fw.bq, fw.bk, fw.bv], xl, [xl] * 3, n1).apply(b, x)
            if fw.conv is not None:
                q, k, v = (token_conv(b, t, li, j, fw.conv.shape[1]) for j, t in enumerate((q, k, v)))
            spec = AttentionSpec(xl, H, fw.abs_fn, fw.attn_relu, fw.z_bias, sw.signed, lanes, main_shifts, fw.rel_bias)
            h = inhibitor_attention(b, spec, q, k, v, [f"mask{s}" for s in range(T)])
            (o,) = compile_group([fw.wo], [fw.bo], xl, [xl], n1).apply(b, h)
            x = [b.add(xc, oc) for xc, oc in zip(x, o)]
        b.stage = f"layer{li}.ffn"
        x = [b.headroom(xc, 2 + fw.ffn_relu.depth) for xc in x]
        (a,) = compile_group([fw.w1], [fw.b1], xl, [fl], n1).apply(b, x)
        a = [b.poly(ac, fw.ffn_relu) for ac in a]
        (f,) = compile_group([fw.w2], [fw.b2], fl, [xl], n1).apply(b, a)
        x = [b.add(xc, fc) for xc, fc in zip(x, f)]
    b.stage = "head"
    x = [b.headroom(xc, 1) for xc in x]
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
    convs = tuple(getattr(lw, "conv", None) for lw in sw.layers)  # dot-product layers have none
    return Compiled(b.circuit, xl, pool_w, n1, max_level, main_shifts, sw.key_norm, convs)


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
