"""Attention blocks of the student: the inhibitor, and dot-product for comparison.

Inhibitor attention (Brännvall et al., arXiv 2310.02041), per head with
Q, K, V of shape T x d_h::

    Z_ij = gamma / sqrt(d_h) * sum_k |Q_ik - K_jk| + alpha + b_h(j - i)
    unsigned:  H_ik = n^-p sum_j m_j ReLU(V_jk - Z_ij)
    signed:    H_ik = n^-p sum_j m_j [ReLU(V_jk - Z_ij) - ReLU(-V_jk - Z_ij)]
    out = out_lin(beta * H)

with n = sum_j m_j the sentence's length and p = ``key_norm`` (0: the plain
sum of the paper). b_h(j - i) is an optional learned bias per head and
signed token offset (``rel_offsets``; T5's relative position bias, added to
the inhibition instead of to a logit), zero without it; Z >= 0 holds only
then. It gives each head a direction and a reach (inhibit keys far away or
on one side) directly: with absolute position embeddings alone a student
distilled from SST-2's phrases stays a bag of words (scripts/word_order.py
measures it; docs/log.md). Started at zero, the bias learns symmetric
locality but no direction; started one-sided (``one_sided_bias``), it gives
the student an order-sensitive input from the first step. In the circuit
query i meets key (i + s) mod T at shift s, so the offsets of a shift are
public constants: one plaintext per shift, added at no level.

Unnormalised, H grows with the number of keys that pass the ReLU, while the
frozen norms after it have one scale for every length
(scripts/attention_norm_by_length.py measures the growth); p = 0.5 flattens
that. The length is public (the server holds the key masks in the clear), so
in the circuit n^-p only scales the mask: no level, no cost
(docs/design.md §3.4).

No dot products and no softmax: only the |x| and ReLU the circuit evaluates as
polynomials. ``m_j`` (1 for a real token, 0 for padding) multiplies each key's
contribution, so padded keys contribute exactly nothing in both forms and the
output does not depend on how far a sentence is padded.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from he_inhibitor.model.nonlinear import Nonlinearity, parity_eval, range_stats


def real_pairs(mask: torch.Tensor) -> torch.Tensor:
    """mask [B, T] (bool, or 0/1 of any dtype) -> [B, 1, T_q, T_k], true where query and key are both real tokens."""
    m = mask.bool()
    return (m[:, :, None] & m[:, None, :]).unsqueeze(1)


def inhibit_exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: torch.Tensor,
                  scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """H = sum_j m_j ReLU(V_j - Z_ij), Z = scale * sum_k |Q_ik - K_jk| + offset, exact |x| and ReLU.

    ``offset``: a scalar, or [H, T_q, T_k] with a relative bias.

    The unsigned inhibitor's forward written as one expression, so that
    ``torch.compile`` fuses it: eager PyTorch materialises two
    [B, H, T, T, d_h] tensors (|Q - K| and the ReLU terms) and their
    gradients, which is most of a training step's time.
    q, k, v [B, H, T, d_h], m [B, T] -> [B, H, T, d_h].
    """
    z = scale * (q.unsqueeze(3) - k.unsqueeze(2)).abs().sum(-1) + offset  # [B, H, T_q, T_k]
    return (m[:, None, None, :, None] * torch.relu(v.unsqueeze(2) - z.unsqueeze(-1))).sum(3)  # [B, H, T, d_h]


def inhibit_poly(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: torch.Tensor,
                 scale: torch.Tensor, offset: torch.Tensor, abs_fit: tuple[torch.Tensor, ...],
                 relu_fit: tuple[torch.Tensor, ...], edge: float, training: bool):
    """``inhibit_exact`` with |x| and ReLU in poly form, and the range statistics of both.

    ``abs_fit``, ``relu_fit``: (B, even, odd), the bound and the parity parts
    of ``Nonlinearity``'s fit, so the result is ``B * p(x / B)`` exactly as
    the modules compute it. ``edge`` = 1 - margin; ``training`` holds inputs
    at [-1, 1] B and computes the range penalties over the pairs of real
    tokens, as the modules do while training. Returns H [B, H, T, d_h] and
    (max |x| / B, range penalties or None) for |x| and for ReLU, which the
    caller hands to the modules (``Nonlinearity.record``).

    Eager PyTorch keeps both [B, H, T, T, d_h] tensors and evaluates each
    polynomial as a dozen passes over them; compiled, each polynomial is one
    fused loop whose backward recomputes it.
    """
    a_bound, a_even, a_odd = abs_fit
    r_bound, r_even, r_odd = relu_fit
    pair = real_pairs(m).to(q.dtype).unsqueeze(-1)  # [B, 1, T_q, T_k, 1]
    ta = (q.unsqueeze(3) - k.unsqueeze(2)) / a_bound  # [B, H, T_q, T_k, d_h]
    abs_stats = range_stats(ta, edge, training, pair)
    if training:
        ta = ta.clamp(-1.0, 1.0)
    z = scale * (a_bound * parity_eval(a_even, a_odd, ta)).sum(-1) + offset  # [B, H, T_q, T_k]
    tr = (v.unsqueeze(2) - z.unsqueeze(-1)) / r_bound  # [B, H, T_q, T_k, d_h]
    relu_stats = range_stats(tr, edge, training, pair)
    if training:
        tr = tr.clamp(-1.0, 1.0)
    h = (m[:, None, None, :, None] * (r_bound * parity_eval(r_even, r_odd, tr))).sum(3)  # [B, H, T, d_h]
    return h, abs_stats, relu_stats


@functools.cache
def _compiled(fn):
    """Compiled on first use: importing the compiler costs seconds that inference never needs.
    Shapes stay dynamic: one compile for every T."""
    return torch.compile(fn, dynamic=True)


def inhibit_fused(*args: torch.Tensor) -> torch.Tensor:
    """``inhibit_exact`` through ``torch.compile``."""
    return _compiled(inhibit_exact)(*args)


class TokenConv(nn.Module):
    """Depthwise convolution over neighbouring tokens (Primer's multi-dconv-head attention, arXiv 2109.08668).

    y_t = sum_o w_o * m_{t+o} x_{t+o} for offsets o in [-(k-1)/2, (k-1)/2], one
    weight per feature and offset. It gives the queries, keys and values
    n-gram context ("not good") that the inhibitor's distances alone reach
    only through position embeddings. In the packed circuit a token offset
    is a one-slot rotation, and weights times neighbour mask are one
    plaintext vector per offset: 2 rotations and one level per tensor.
    Starts as the identity (centre tap 1, side taps 0).
    """

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"token convolution kernel must be odd and positive, not {kernel}")
        self.half = kernel // 2
        weight = torch.zeros(kernel, d_model)
        weight[self.half] = 1.0
        self.weight = nn.Parameter(weight)  # [k, d]: row o + half is offset o

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, d], mask [B, T] -> [B, T, d]; padded neighbours contribute nothing."""
        t, h = x.shape[1], self.half
        xm = nn.functional.pad(x * mask.unsqueeze(-1).to(x.dtype), (0, 0, h, h))  # [B, T + 2h, d]
        return sum(self.weight[o] * xm[:, o : o + t] for o in range(2 * h + 1))  # [B, T, d]


class QKV(nn.Module):
    """The three input projections, split into heads: [B, T, d] -> 3 x [B, H, T, d_h].

    ``conv`` > 0 follows each projection with a ``TokenConv`` of that kernel.
    """

    def __init__(self, d_model: int, n_heads: int, conv: int = 0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.convs = nn.ModuleList(TokenConv(d_model, conv) for _ in range(3)) if conv else None

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, H, T, d_h]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qkv = [self.q(x), self.k(x), self.v(x)]  # 3 x [B, T, d]
        if self.convs is not None:
            qkv = [c(y, mask) for c, y in zip(self.convs, qkv)]
        return tuple(self.split(y) for y in qkv)


def merge_heads(h: torch.Tensor) -> torch.Tensor:
    """[B, H, T, d_h] -> [B, T, H * d_h]."""
    b, n_heads, t, d_h = h.shape
    return h.transpose(1, 2).reshape(b, t, n_heads * d_h)


def one_sided_bias(n_heads: int, L: int, c: float) -> torch.Tensor:
    """[H, 2L - 1] starting b_h(o): c on o > 0 for the first quarter of the heads, c on o < 0 for
    the second, zero elsewhere.

    Started at zero, a head's bias learns only symmetric locality and the
    student stays a bag of words; inhibiting one side outright
    gives the left-looking and right-looking heads an order-sensitive
    input ("not" before "good") from the first step.
    """
    bias = torch.zeros(n_heads, 2 * L - 1)  # index o + L - 1
    q = n_heads // 4
    bias[:q, L:] = c  # keys after the query inhibited: these heads read the left context
    bias[q : 2 * q, : L - 1] = c  # keys before it: the right context
    return bias


class InhibitorAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        abs_fn: Nonlinearity,
        relu_fn: Nonlinearity,
        signed: bool = False,
        center: bool = False,
        key_norm: float = 0.0,
        conv: int = 0,
        rel_offsets: int = 0,
        rel_init: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.signed, self.center, self.key_norm = signed, center, key_norm
        self.qkv = QKV(d_model, n_heads, conv)
        self.out = nn.Linear(d_model, d_model)
        self.abs_fn, self.relu_fn = abs_fn, relu_fn
        # set by ``Student.fuse``: |x| and ReLU through one compiled kernel (``inhibit_fused`` in
        # exact form, which skips the range observation: nothing to calibrate or penalise yet;
        # ``inhibit_poly`` in poly form, which records it)
        self.fused = False
        # Z starts near 1.5 for unit-variance Q, K, so some values pass the ReLU from step one.
        self.gamma = nn.Parameter(torch.tensor(0.25))
        self.alpha = nn.Parameter(torch.tensor(0.0))
        # 10 word pieces (the median training phrase) start at the unnormalised output's scale
        self.beta = nn.Parameter(torch.tensor(0.2 * 10.0**key_norm))
        # b_h(o) for offsets o = j - i in [-(L-1), L-1] at index o + L - 1
        self.rel_bias = nn.Parameter(one_sided_bias(n_heads, rel_offsets, rel_init)) if rel_offsets else None

    def offset(self, t: int) -> torch.Tensor:
        """alpha + b_h(j - i): [H, T_q, T_k], or the scalar |alpha| without a relative bias."""
        if self.rel_bias is None:
            return self.alpha.abs()
        L = (self.rel_bias.shape[1] + 1) // 2
        if t > L:
            raise ValueError(f"{t} tokens exceed the relative bias's {L} positions")
        pos = torch.arange(t, device=self.rel_bias.device)
        return self.alpha.abs() + self.rel_bias[:, pos[None, :] - pos[:, None] + L - 1]  # [H, T, T]

    def inhibition(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Z [B, H, T_q, T_k] from Manhattan distances; gamma, alpha enter through |.| so Z >= 0."""
        pair = real_pairs(mask).to(q.dtype)  # [B, 1, T_q, T_k]
        dist = self.abs_fn(q.unsqueeze(3) - k.unsqueeze(2), pair.unsqueeze(-1)).sum(-1)  # [B, H, T, T]
        z = self.gamma.abs() / math.sqrt(self.d_head) * dist + self.offset(q.shape[2])
        if self.center:  # optional variant: signed after centering, so it needs one more ReLU
            m = mask[:, None, None, :].to(z.dtype)
            mean = (z * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
            z = self.relu_fn(z - mean, pair)
        return z

    @property
    def collecting(self) -> bool:
        """A non-linearity is gathering its input histogram (calibration): the modules must see every input."""
        return self.abs_fn.density is not None or self.relu_fn.density is not None

    def fused_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: torch.Tensor,
                    scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """H through the compiled kernel of the non-linearities' form; poly form records their ranges."""
        form = self.abs_fn.form
        if self.relu_fn.form != form:
            raise RuntimeError(f"fused inhibitor attention needs |x| and ReLU in one form, not {form} and {self.relu_fn.form}")
        if form == "exact":
            return inhibit_fused(q, k, v, m, scale, offset)
        if self.abs_fn.margin != self.relu_fn.margin:
            raise RuntimeError("fused inhibitor attention needs |x| and ReLU with one range margin")
        fits = [(fn.bound.to(q.dtype), *fn.parity_tensors()) for fn in (self.abs_fn, self.relu_fn)]
        h, abs_stats, relu_stats = _compiled(inhibit_poly)(q, k, v, m, scale, offset, *fits,
                                                            1.0 - self.abs_fn.margin, self.training)
        self.abs_fn.record(*abs_stats)
        self.relu_fn.record(*relu_stats)
        return h

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, d], mask [B, T] -> ([B, T, d], head-averaged weights [B, T, T] or None)."""
        q, k, v = self.qkv(x, mask)  # [B, H, T, d_h] each
        if self.fused and not (self.signed or self.center or need_weights or self.collecting):
            scale = self.gamma.abs() / math.sqrt(self.d_head)
            h = self.fused_heads(q, k, v, mask.to(x.dtype), scale, self.offset(q.shape[2]))  # [B, H, T, d_h]
        else:
            z = self.inhibition(q, k, mask)  # [B, H, T, T]
            m = mask[:, None, None, :, None].to(x.dtype)  # [B, 1, 1, T_k, 1]
            vj = v.unsqueeze(2)  # [B, H, 1, T_k, d_h]
            zij = z.unsqueeze(-1)  # [B, H, T_q, T_k, 1]
            pair = real_pairs(mask).to(x.dtype).unsqueeze(-1)  # [B, 1, T_q, T_k, 1]
            contrib = self.relu_fn(vj - zij, pair)  # [B, H, T_q, T_k, d_h]
            if self.signed:
                contrib = contrib - self.relu_fn(-vj - zij, pair)
            h = (m * contrib).sum(3)  # [B, H, T, d_h]
        if self.key_norm:
            n = mask.sum(-1).to(x.dtype).clamp(min=1.0)  # [B]
            h = h * n.pow(-self.key_norm)[:, None, None, None]
        out = self.out(self.beta * merge_heads(h))  # [B, T, d]
        weights = None
        if need_weights:  # a normalised view of inhibition, for the attention-level loss
            neg = (-z).masked_fill(~mask[:, None, None, :].bool(), float("-inf"))
            weights = torch.softmax(neg, dim=-1).mean(1)  # [B, T, T]
        return out, weights


class DotProductAttention(nn.Module):
    """Scaled dot-product attention of the same shape, for the comparison runs.

    ``exact``: softmax. ``poly`` (the HE substitute): the softmax is replaced by a
    polynomial ReLU of the scores divided by the number of real keys,
    ``A_ij = m_j relu(s_ij) / n``, which needs no division by encrypted values.
    """

    def __init__(self, d_model: int, n_heads: int, relu_fn: Nonlinearity) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = QKV(d_model, n_heads)
        self.out = nn.Linear(d_model, d_model)
        self.relu_fn = relu_fn

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self.qkv(x, mask)  # [B, H, T, d_h]
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # [B, H, T, T]
        m = mask[:, None, None, :].to(x.dtype)  # [B, 1, 1, T_k]
        pair = real_pairs(mask).to(x.dtype)  # [B, 1, T_q, T_k]
        if self.relu_fn.form == "exact":
            self.relu_fn.observe(scores, pair)  # calibrates the substitute's interval
            attn = torch.softmax(scores.masked_fill(m == 0, float("-inf")), dim=-1)
        else:
            attn = m * self.relu_fn(scores, pair) / m.sum(-1, keepdim=True).clamp(min=1.0)
        out = self.out(merge_heads(attn @ v))  # [B, T, d]
        return out, (attn.mean(1) if need_weights else None)
