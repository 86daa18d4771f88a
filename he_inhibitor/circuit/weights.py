"""The student's parameters as plain numpy, folded into the circuit's scaled domain.

The compiler must not depend on torch, so the student is read once into these
dataclasses (`from_torch`). `fold` then moves every frozen norm and every
polynomial bound into the linear weights, so the circuit only ever sees
polynomials on [-1, 1]:

    Q' = (x s1 + t1) Wq / B_abs + bq / B_abs        (K' alike; V' with B_att)
    c_z = B_abs |gamma| / sqrt(d_h) / B_att,  z_bias = |alpha| / B_att
    conv taps (Q, K, V after projection): unchanged, they commute with 1/B
    relative bias b_h(j - i): divided by B_att, like alpha
    Wo' = B_att beta Wo                              (H = B_att sum_j m_j r(V' - Z'))
    W1' = s2 W1 / B_ffn, b1' = (t2 W1 + b1) / B_ffn, W2' = B_ffn W2
    logits = sum_i (m_i / n) x_i (sf o Wc) + (tf Wc + bc)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit.poly import PolyFn, Scaled, as_poly


@dataclass(frozen=True)
class Nonlin:
    """B * fn(x / B): a fit (or exact form) on [-1, 1] and its bound."""

    fn: PolyFn
    bound: float


@dataclass(frozen=True)
class LayerWeights:
    """One encoder layer; matrices are [in, out] (x @ W)."""

    s1: np.ndarray
    t1: np.ndarray
    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    gamma: float
    alpha: float
    beta: float
    s2: np.ndarray
    t2: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    abs_fn: Nonlin
    attn_relu: Nonlin
    ffn_relu: Nonlin
    conv: np.ndarray | None = None  # [3 (Q, K, V), kernel, d]: TokenConv taps after each projection
    rel_bias: np.ndarray | None = None  # [H, 2L - 1]: b_h(o) added to Z for token offset o = j - i at index o + L - 1


@dataclass(frozen=True)
class StudentWeights:
    n_heads: int
    signed: bool
    layers: tuple[LayerWeights, ...]
    sf: np.ndarray
    tf: np.ndarray
    wc: np.ndarray  # [d, n_labels]
    bc: np.ndarray
    key_norm: float = 0.0  # the inhibitor's sum over keys is divided by n^key_norm (in the key masks)

    @property
    def d(self) -> int:
        return self.wc.shape[0]

    @property
    def d_ff(self) -> int:
        return self.layers[0].w1.shape[1]


@dataclass(frozen=True)
class FoldedLayer:
    """A layer in the circuit's scaled domain (see module docstring)."""

    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    abs_fn: PolyFn  # c_z * p(x)
    attn_relu: PolyFn
    z_bias: float
    wo: np.ndarray
    bo: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    ffn_relu: PolyFn
    w2: np.ndarray
    b2: np.ndarray
    conv: np.ndarray | None = None  # unchanged: per-feature taps commute with the 1/B scalings
    rel_bias: np.ndarray | None = None  # b_h(o) / B_att


def fold_layer(lw: LayerWeights, n_heads: int) -> FoldedLayer:
    d = lw.wq.shape[0]
    b_abs, b_att, b_ffn = lw.abs_fn.bound, lw.attn_relu.bound, lw.ffn_relu.bound

    def norm_into(s: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray, c: float):
        return s[:, None] * w * c, (t @ w + b) * c

    wq, bq = norm_into(lw.s1, lw.t1, lw.wq, lw.bq, 1.0 / b_abs)
    wk, bk = norm_into(lw.s1, lw.t1, lw.wk, lw.bk, 1.0 / b_abs)
    wv, bv = norm_into(lw.s1, lw.t1, lw.wv, lw.bv, 1.0 / b_att)
    w1, b1 = norm_into(lw.s2, lw.t2, lw.w1, lw.b1, 1.0 / b_ffn)
    c_z = b_abs * abs(lw.gamma) / math.sqrt(d // n_heads) / b_att
    return FoldedLayer(
        wq, bq, wk, bk, wv, bv,
        abs_fn=Scaled(lw.abs_fn.fn, c_z),
        attn_relu=lw.attn_relu.fn,
        z_bias=abs(lw.alpha) / b_att,
        wo=b_att * lw.beta * lw.wo, bo=lw.bo,
        w1=w1, b1=b1, ffn_relu=lw.ffn_relu.fn, w2=b_ffn * lw.w2, b2=lw.b2, conv=lw.conv,
        rel_bias=None if lw.rel_bias is None else lw.rel_bias / b_att,
    )


def from_torch(model) -> StudentWeights:
    """Read a `he_inhibitor.model.student.Student` (eval mode; its current form's fits)."""
    import torch

    from he_inhibitor.circuit.dot_weights import DotLayerWeights  # lazy: dot_weights imports this module (Nonlin)

    cfg = model.cfg
    if cfg.recursive or cfg.center:
        raise ValueError("the compiler handles students without recursion adapters or centering")

    def a(t: torch.Tensor) -> np.ndarray:
        return t.detach().to(torch.float64).cpu().numpy()

    def lin(m: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
        return a(m.weight).T.copy(), a(m.bias)

    def nl(m) -> Nonlin:
        return Nonlin(as_poly(m.fit), float(m.bound))

    def norm(m) -> tuple[np.ndarray, np.ndarray]:
        s, t = m.affine()
        return a(s), a(t)

    layers = []
    for i in range(cfg.n_layers):
        layer = model.layer(i)
        att = layer.attn
        (wq, bq), (wk, bk), (wv, bv) = lin(att.qkv.q), lin(att.qkv.k), lin(att.qkv.v)
        wo, bo = lin(att.out)
        w1, b1 = lin(layer.ffn.lin1)
        w2, b2 = lin(layer.ffn.lin2)
        s1, t1 = norm(model.norms1[i])
        s2, t2 = norm(model.norms2[i])
        if cfg.attention == "dot":
            layers.append(DotLayerWeights(s1, t1, wq, bq, wk, bk, wv, bv, wo, bo, s2, t2, w1, b1, w2, b2,
                                          nl(att.relu_fn), nl(layer.ffn.relu_fn)))
            continue
        layers.append(LayerWeights(
            s1, t1, wq, bq, wk, bk, wv, bv, wo, bo,
            float(att.gamma.detach()), float(att.alpha.detach()), float(att.beta.detach()), s2, t2, w1, b1, w2, b2,
            nl(att.abs_fn), nl(att.relu_fn), nl(layer.ffn.relu_fn),
            None if att.qkv.convs is None else np.stack([a(c.weight) for c in att.qkv.convs]),
            None if att.rel_bias is None else a(att.rel_bias),
        ))
    sf, tf = norm(model.norm_f)
    wc, bc = lin(model.classifier)
    return StudentWeights(cfg.n_heads, cfg.signed, tuple(layers), sf, tf, wc, bc, cfg.key_norm)
