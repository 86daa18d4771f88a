"""The non-linearities a circuit evaluates: an interface shared by exact and polynomial forms.

A circuit node `poly` holds a `PolyFn`. The numpy executors only call it; the
level pass needs its `depth` and the simulator its `max_error` and `interval`.
Exact forms (depth None) run in the layout model but are refused by the
compiler, because a ciphertext can only be evaluated by a polynomial.
`Scaled` folds a constant output factor into the polynomial's coefficients
(gamma*B/sqrt(d_h) into |x|, for instance), which costs no level.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np


class PolyFn(Protocol):
    """What a circuit needs to know about a non-linearity."""

    name: str
    depth: int | None
    max_error: float
    interval: tuple[float, float]

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


@dataclass(frozen=True)
class Exact:
    """An exact non-linearity (np.abs, relu): layout model only, no encrypted form."""

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    interval: tuple[float, float] = (-math.inf, math.inf)
    depth: int | None = None
    max_error: float = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.f(np.asarray(x, dtype=np.float64))


EXACT_ABS = Exact("abs", np.abs)
EXACT_RELU = Exact("relu", relu)


@dataclass(frozen=True)
class Scaled:
    """c * fn(x): the factor is folded into the polynomial's coefficients (no level)."""

    fn: PolyFn
    c: float

    @property
    def name(self) -> str:
        return f"{self.c:.6g}*{self.fn.name}"

    @property
    def depth(self) -> int | None:
        return self.fn.depth

    @property
    def max_error(self) -> float:
        return abs(self.c) * self.fn.max_error

    @property
    def interval(self) -> tuple[float, float]:
        return self.fn.interval

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.c * self.fn(x)


@dataclass(frozen=True)
class Reflected:
    """fn(-x): the sign flip is folded into the odd coefficients (no level).

    The signed attention needs ReLU(-V - Z) = Reflected(ReLU)(V + Z).
    """

    fn: PolyFn

    @property
    def name(self) -> str:
        return f"{self.fn.name}(-x)"

    @property
    def depth(self) -> int | None:
        return self.fn.depth

    @property
    def max_error(self) -> float:
        return self.fn.max_error

    @property
    def interval(self) -> tuple[float, float]:
        lo, hi = self.fn.interval
        return (-hi, -lo)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(-np.asarray(x, dtype=np.float64))


@dataclass(frozen=True)
class FitPoly:
    """A `he_inhibitor.approx.Fit` seen through the circuit's PolyFn interface."""

    fit: Any

    @property
    def name(self) -> str:
        return f"{self.fit.fn}[{self.fit.method} deg {self.fit.degree}]"

    @property
    def depth(self) -> int:
        return int(self.fit.depth)

    @property
    def max_error(self) -> float:
        return float(self.fit.max_error)

    @property
    def interval(self) -> tuple[float, float]:
        return tuple(self.fit.interval)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x)


def as_poly(obj: Any) -> PolyFn:
    """A PolyFn for either a circuit polynomial or an approximation-library Fit."""
    return obj if hasattr(obj, "name") else FitPoly(obj)


def folded_fit(fn: PolyFn) -> Any | None:
    """The approximation-library Fit whose plan evaluates fn exactly, or None.

    Scaled and Reflected fold into the Chebyshev coefficients (c*c_k, and
    (-1)^k c_k on a symmetric interval), so the encrypted evaluation and the
    simulator's error propagation run the very plan of the folded fit.
    Composite fits (a chain of stages) and exact forms have no folded fit.
    """
    import dataclasses

    if isinstance(fn, FitPoly):
        return fn.fit
    if isinstance(fn, (Scaled, Reflected)):
        inner = folded_fit(fn.fn)
        if inner is None or inner.stages:
            return None
        c = np.asarray(inner.coeffs, dtype=np.float64)
        if isinstance(fn, Scaled):
            c, err = fn.c * c, abs(fn.c) * inner.max_error
        else:
            lo, hi = inner.interval
            if lo != -hi:
                return None
            c, err = c * (-1.0) ** np.arange(c.size), inner.max_error
        return dataclasses.replace(inner, coeffs=tuple(float(v) for v in c), max_error=err, _plan=None)
    return None


@functools.lru_cache(maxsize=256)
def plan_of(fn: PolyFn) -> Any | None:
    """The evaluation plan of fn's folded fit, or None: compiled once per polynomial, not per call
    (every ciphertext of every sentence runs it; a folded fit is a new Fit with no plan yet)."""
    f = folded_fit(fn)
    return None if f is None else f.plan()


def exact_form(fn: PolyFn) -> PolyFn:
    """The exact function a polynomial approximates (Scaled and Reflected kept around it)."""
    if isinstance(fn, Scaled):
        return Scaled(exact_form(fn.fn), fn.c)
    if isinstance(fn, Reflected):
        return Reflected(exact_form(fn.fn))
    if isinstance(fn, FitPoly):
        return {"abs": EXACT_ABS, "relu": EXACT_RELU}[fn.fit.fn]
    return fn
