"""Composite sign approximations: a chain of low-degree odd minimax polynomials.

Following Lee, Lee, Kim and No ("Minimax approximation of sign function by
composite polynomial for homomorphic comparison", IEEE TDSC 2021), the chain
is built greedily: stage k is the minimax odd approximation of sign on
[eps_k, 1]; its output on that set lies in [1 - e_k, 1 + e_k], so after
dividing by 1 + e_k (folded into its coefficients) the next stage sees
[eps_{k+1}, 1] with eps_{k+1} = (1 - e_k) / (1 + e_k).  Composition
multiplies degrees but only adds depths: a degree-27 sign as three cubic
stages costs 6 levels and 6 multiplications.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev as C

from .remez import remez

_GRID = 20_001


def stage_degrees(total: int) -> list[int]:
    """Split an odd total degree into stage degrees: its prime factors, largest first.

    Larger stages first: the first stage faces the widest ratio between the
    dead zone and 1, where a higher degree helps most.
    """
    if total < 3 or total % 2 == 0:
        raise ValueError(f"composite degree must be odd and >= 3 (a product of odd stage degrees), got {total}")
    factors, rest, p = [], total, 3
    while rest > 1:
        while rest % p == 0:
            factors.append(p)
            rest //= p
        p += 2
    return sorted(factors, reverse=True)


def minimax_sign_stage(degree: int, eps: float) -> tuple[np.ndarray, float]:
    """Odd minimax sign on [eps, 1]: Chebyshev coefficients on [-1, 1] and its error.

    Reduced by parity to sign(t) = t q(t^2), i.e. weighted minimax of 1/sqrt(s)
    with weight sqrt(s) on s in [eps^2, 1].
    """
    tt = np.linspace(eps, 1.0, _GRID)
    res = remez(lambda s: 1.0 / np.sqrt(s), np.sqrt, (degree - 1) // 2, tt * tt)
    t = C.Chebyshev([0.0, 1.0])
    coeffs = (t * C.Chebyshev(res.coeffs, domain=[eps * eps, 1.0])(t * t)).coef
    coeffs[0::2] = 0.0
    return coeffs, res.max_error


def minimax_chain(degrees: list[int], gap: float) -> list[np.ndarray]:
    """Greedy composite sign on |t| >= gap (see module docstring)."""
    stages, eps = [], gap
    for k, d in enumerate(degrees):
        coeffs, err = minimax_sign_stage(d, eps)
        if k < len(degrees) - 1:
            coeffs = coeffs / (1.0 + err)
            eps = (1.0 - err) / (1.0 + err)
        stages.append(coeffs)
    return stages


def compose(stages: list[np.ndarray]) -> np.ndarray:
    """Chebyshev coefficients of stages[-1](...stages[0](t)) (first applied first)."""
    inner = C.Chebyshev(stages[0])
    for coeffs in stages[1:]:
        inner = C.Chebyshev(coeffs)(inner)
    return inner.coef
