"""A dot-product attention layer's parameters, folded into the circuit's scaled domain.

The comparison student (`DotProductAttention` in poly form) computes, per head,

    A_ij = m_j * B r(s_ij / B) / n,   s_ij = q_i . k_j / sqrt(d_h),   out = Wo (A V) + bo

with r the ReLU fit on [-1, 1] and B its bound. The circuit multiplies Q and K
slot-wise, so the whole 1 / (B sqrt(d_h)) goes into their weights, split
evenly (c = (B sqrt(d_h))^(-1/2) each) to keep both factors the same size:

    Q' = ((x s1 + t1) Wq + bq) c,   K' alike,   V' = (x s1 + t1) Wv + bv
    sum_k Q'_ik K'_jk = s_ij / B    (the ReLU fit sees [-1, 1])
    H' = sum_j (m_j / n) r(s_ij / B) V_j = (A V) / B,   Wo' = B Wo

The FFN folds as in weights.fold_layer. 1/n is per request: it rides in the
key-mask plaintexts (`Compiled.public_plaintexts`, names "mask{s}/n").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit.poly import PolyFn
from he_inhibitor.circuit.weights import Nonlin


@dataclass(frozen=True)
class DotLayerWeights:
    """One dot-product encoder layer as the torch student holds it; matrices are [in, out]."""

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
    s2: np.ndarray
    t2: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    attn_relu: Nonlin
    ffn_relu: Nonlin


@dataclass(frozen=True)
class DotFolded:
    """A dot-product layer in the circuit's scaled domain (see module docstring)."""

    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    attn_relu: PolyFn
    wo: np.ndarray
    bo: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    ffn_relu: PolyFn
    w2: np.ndarray
    b2: np.ndarray


def _norm_into(s: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(x s + t) W c + b c as x W' + b'."""
    return s[:, None] * w * c, (t @ w + b) * c


def fold_dot_layer(lw: DotLayerWeights, n_heads: int) -> DotFolded:
    d = lw.wq.shape[0]
    b_att, b_ffn = lw.attn_relu.bound, lw.ffn_relu.bound
    c = 1.0 / math.sqrt(b_att * math.sqrt(d // n_heads))
    wq, bq = _norm_into(lw.s1, lw.t1, lw.wq, lw.bq, c)
    wk, bk = _norm_into(lw.s1, lw.t1, lw.wk, lw.bk, c)
    wv, bv = _norm_into(lw.s1, lw.t1, lw.wv, lw.bv, 1.0)
    w1, b1 = _norm_into(lw.s2, lw.t2, lw.w1, lw.b1, 1.0 / b_ffn)
    return DotFolded(wq, bq, wk, bk, wv, bv, lw.attn_relu.fn, b_att * lw.wo, lw.bo,
                     w1, b1, lw.ffn_relu.fn, b_ffn * lw.w2, lw.b2)
