"""Chebyshev-basis helpers shared by fitting, evaluation and the CLI.

Every fit is stored as Chebyshev coefficients of the variable t in [-1, 1]
obtained by mapping the fit's interval affinely onto [-1, 1]: that basis keeps
coefficients small (so CKKS noise is not amplified) and makes evaluation
numerically stable at degree 100+.  The evaluators here use only +, - and * with
Python-float constants so they work unchanged on numpy arrays and on torch
tensors (autograd flows through them).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.polynomial import chebyshev as C
from numpy.polynomial import polynomial as P


def to_unit(x: Any, interval: tuple[float, float]) -> Any:
    """Map x from `interval` onto [-1, 1] (t = alpha*x + beta); identity on [-1, 1]."""
    alpha, beta = unit_map(interval)
    if alpha == 1.0 and beta == 0.0:
        return x
    t = x * alpha
    return t + beta if beta != 0.0 else t


def unit_map(interval: tuple[float, float]) -> tuple[float, float]:
    """(alpha, beta) with alpha*lo + beta = -1 and alpha*hi + beta = 1."""
    lo, hi = interval
    alpha = 2.0 / (hi - lo)
    beta = -(hi + lo) / (hi - lo)
    return float(alpha), float(beta)


def clenshaw(coeffs: Sequence[float], t: Any) -> Any:
    """Sum c_k T_k(t) by Clenshaw's recurrence (stable; tensor-friendly)."""
    c = [float(v) for v in coeffs]
    if len(c) == 1:
        return t * 0.0 + c[0]
    b1: Any = 0.0
    b2: Any = 0.0
    two_t = t * 2.0
    for ck in reversed(c[1:]):
        b1, b2 = two_t * b1 - b2 + ck, b1
    return t * b1 - b2 + c[0]


def cheb_to_monomial(coeffs: Sequence[float], interval: tuple[float, float]) -> np.ndarray:
    """Monomial coefficients (lowest degree first) in x on `interval` itself."""
    alpha, beta = unit_map(interval)
    mono_t = C.cheb2poly(np.asarray(coeffs, dtype=float))
    out = np.zeros(1)
    power = np.ones(1)  # (alpha*x + beta)^k as a polynomial in x
    for k, a in enumerate(mono_t):
        if k:
            power = P.polymul(power, [beta, alpha])
        out = P.polyadd(out, a * power)
    return out


def enforce_parity(coeffs: np.ndarray, parity: int | None) -> np.ndarray:
    """Zero the coefficients of the wrong parity (0 even, 1 odd, None: keep all).

    Fits of even/odd functions on symmetric intervals are exactly even/odd in
    theory; zeroing rounding residue keeps the evaluation plan from spending
    multiplications on coefficients that should not exist.
    """
    c = np.array(coeffs, dtype=float)
    if parity is not None:
        c[(np.arange(c.size) % 2) != parity] = 0.0
    return c
