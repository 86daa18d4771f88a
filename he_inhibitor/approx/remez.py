"""Weighted Remez exchange in the Chebyshev basis.

Solves  min_q max_{s in grid} |w(s) (q(s) - h(s))|  over polynomials q of degree n
on [a, b].  Parity reductions are expressed as such problems by the caller:
|t| = q(t^2) is  h = sqrt(s), w = 1  on s in [0, 1];  sign(t) = t q(t^2) on
|t| >= eps is  h = 1/sqrt(s), w = sqrt(s)  on s in [eps^2, 1].  Working on a
caller-supplied grid lets the caller place points where the target is steep
(near s = 0 for sqrt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.polynomial import chebyshev as C

Func = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RemezResult:
    """Chebyshev coefficients of q (variable mapped from [a, b] onto [-1, 1]),
    the levelled error |E| and the final reference (alternation) points."""

    coeffs: np.ndarray
    levelled_error: float
    max_error: float
    reference: np.ndarray


def _unit(s: np.ndarray, a: float, b: float) -> np.ndarray:
    return (2.0 * s - (a + b)) / (b - a)


def _alternating_extrema(err: np.ndarray) -> np.ndarray:
    """Indices of the largest |err| in each run of constant sign (alternating)."""
    sign = np.sign(err)
    sign[sign == 0] = 1.0
    breaks = np.flatnonzero(np.diff(sign)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [err.size]))
    return np.array([s + int(np.argmax(np.abs(err[s:e]))) for s, e in zip(starts, ends)])


def _select(idx: np.ndarray, err: np.ndarray, count: int) -> np.ndarray:
    """Keep `count` alternating extrema, dropping the weakest while alternation holds."""
    idx = list(idx)
    while len(idx) > count:
        mags = np.abs(err[idx])
        if len(idx) - count == 1:
            idx.pop(0 if mags[0] < mags[-1] else -1)
            continue
        i = int(np.argmin(mags))
        if i == 0 or i == len(idx) - 1:
            idx.pop(i)
        else:  # drop it with its weaker neighbour so signs still alternate
            j = i - 1 if mags[i - 1] < mags[i + 1] else i + 1
            for k in sorted((i, j), reverse=True):
                idx.pop(k)
    return np.array(idx)


def remez(h: Func, w: Func, n: int, grid: np.ndarray, max_iter: int = 60, tol: float = 1e-9) -> RemezResult:
    """Weighted minimax polynomial of degree n for h on the sorted `grid`."""
    grid = np.asarray(grid, dtype=float)
    a, b = float(grid[0]), float(grid[-1])
    hg, wg, ug = h(grid), w(grid), _unit(grid, a, b)
    # initial reference: Chebyshev extrema of T_{n+1}, snapped to the grid
    target = np.cos(np.pi * np.arange(n + 1, -1, -1) / (n + 1))
    ref = np.unique(np.clip(np.searchsorted(ug, target), 0, grid.size - 1))
    if ref.size < n + 2:
        raise ValueError("grid too coarse for the requested degree")
    coeffs = np.zeros(n + 1)
    levelled = 0.0
    for _ in range(max_iter):
        signs = (-1.0) ** np.arange(n + 2)
        A = np.empty((n + 2, n + 2))
        A[:, : n + 1] = C.chebvander(ug[ref], n)
        A[:, n + 1] = signs / wg[ref]
        sol = np.linalg.solve(A, hg[ref])
        coeffs, levelled = sol[: n + 1], abs(sol[n + 1])
        err = wg * (C.chebval(ug, coeffs) - hg)
        new_ref = _select(_alternating_extrema(err), err, n + 2)
        if new_ref.size < n + 2:
            break
        max_err = float(np.max(np.abs(err)))
        ref = new_ref
        if max_err - levelled <= tol * max(max_err, 1e-300):
            break
    err = wg * (C.chebval(ug, coeffs) - hg)
    return RemezResult(coeffs, float(levelled), float(np.max(np.abs(err))), grid[ref])
