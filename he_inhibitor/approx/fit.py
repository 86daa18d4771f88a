"""`Fit`, the value every consumer of an approximation holds, and the `fit` factory.

A fit is stored as Chebyshev coefficients of t (the interval mapped onto
[-1, 1]); composite fits additionally keep their stages so that they are
evaluated stage by stage (as the circuit does) rather than as one
high-degree series.  Depth and multiplication counts come from the fit's own
evaluation plan, so the numbers the simulator and the circuit see are the
numbers the encrypted evaluation realises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from numpy.polynomial import chebyshev as C

from . import composite
from .basis import clenshaw, enforce_parity, to_unit
from .plan import Plan, compile_composite, compile_series
from .remez import remez

FNS = ("abs", "relu", "sign")
METHODS = ("chebyshev", "remez", "composite")
# Fits made from observed inputs rather than from (fn, degree) alone: see `weighted_fit`.
DATA_METHODS = ("weighted",)
# weighted_fit's uniform weight, relative to the densest bin: keeps the fit bounded where inputs are rare
DEFAULT_WEIGHT_FLOOR = 1e-3
# sign has no uniform approximation across its jump: its error is measured on
# |x| >= gap * B.  5% of the interval is the default dead zone.
DEFAULT_SIGN_GAP = 0.05
GRID_POINTS = (1 << 17) + 1
_REMEZ_GRID = 200_001
_GAP_CANDIDATES = tuple(float(g) for g in np.geomspace(1e-4, 0.5, 24))

EXACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "relu": lambda x: np.maximum(x, 0.0),
    "sign": np.sign,
}


class FitError(ValueError):
    """A fit request that makes no sense (bad interval, degree or method)."""


@dataclass(frozen=True)
class Fit:
    """A polynomial approximation of `fn` on `interval` (see module docstring).

    coeffs: Chebyshev coefficients of the whole polynomial in t = interval
    mapped onto [-1, 1] (for composite fits: the expanded composition, which
    reproduces max_error when evaluated independently).  stages: composite
    only, the Chebyshev coefficients (on [-1, 1]) of the sign chain, applied
    first to last; abs and relu multiply the chain by x (relu's last stage is
    folded to (1 + sign)/2).  gap: sign only, the dead zone |x| < gap * B
    excluded from max_error.
    """

    fn: str
    method: str
    interval: tuple[float, float]
    degree: int
    basis: str
    coeffs: tuple[float, ...]
    depth: int
    mults: int
    max_error: float
    stages: tuple[tuple[float, ...], ...] = ()
    gap: float = 0.0
    _plan: Plan | None = field(default=None, compare=False, repr=False)

    def __call__(self, x: Any) -> Any:
        """Evaluate with +, -, * and float constants only (numpy or torch, autograd-safe)."""
        t = to_unit(x, self.interval)
        if not self.stages:
            return clenshaw(self.coeffs, t)
        for stage in self.stages:
            t = clenshaw(stage, t)
        return t if self.fn == "sign" else x * t

    def plan(self, unit_input: bool = False) -> Plan:
        """The encrypted operation sequence; its depth and mults are this fit's.

        With `unit_input` the plan's input is t = the interval mapped onto
        [-1, 1] instead of x: when the producer of x can fold the map into its
        own weights, the plan saves the scalar level of t = x / B.
        """
        if unit_input:
            return _plan_for(self.coeffs, self.stages, self.interval, self.fn, unit_input=True)
        return self._plan if self._plan is not None else _plan_for(self.coeffs, self.stages, self.interval, self.fn)

    def error(self, x: np.ndarray) -> np.ndarray:
        """|fit(x) - fn(x)|."""
        x = np.asarray(x, dtype=float)
        return np.abs(self(x) - EXACT[self.fn](x))

    def to_json(self) -> dict[str, Any]:
        """All fields as JSON-ready values (the cached plan is derived, not stored)."""
        return {"fn": self.fn, "method": self.method, "interval": list(self.interval), "degree": self.degree,
                "basis": self.basis, "coeffs": list(self.coeffs), "depth": self.depth, "mults": self.mults,
                "max_error": self.max_error, "stages": [list(s) for s in self.stages], "gap": self.gap}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> "Fit":
        d = json.loads(data) if isinstance(data, str) else dict(data)
        return cls(
            fn=d["fn"], method=d["method"], interval=(float(d["interval"][0]), float(d["interval"][1])),
            degree=int(d["degree"]), basis=d["basis"], coeffs=tuple(float(c) for c in d["coeffs"]),
            depth=int(d["depth"]), mults=int(d["mults"]), max_error=float(d["max_error"]),
            stages=tuple(tuple(float(c) for c in s) for s in d.get("stages", ())), gap=float(d.get("gap", 0.0)),
        )


def _plan_for(coeffs: tuple[float, ...], stages: tuple[tuple[float, ...], ...],
              interval: tuple[float, float], fn: str, unit_input: bool = False) -> Plan:
    if stages:
        return compile_composite(stages, interval, times_input=fn != "sign", unit_input=unit_input)
    return compile_series(coeffs, interval, unit_input)


def fit(fn: str, degree: int, interval: tuple[float, float] = (-1.0, 1.0),
        method: str = "remez", gap: float | None = None) -> Fit:
    """Fit `fn` with a polynomial of total degree `degree` on `interval` (cached).

    Parity: on a symmetric interval abs/relu need an even degree and sign an odd
    one; sign and every composite fit need a symmetric interval.  For composite
    fits the degree is that of the whole polynomial: sign's is the product of
    its odd stage degrees, abs/relu add one for the final multiplication by x.
    `gap` (fraction of B) is sign's dead zone (default DEFAULT_SIGN_GAP) and, for
    composite abs/relu, the dead zone of their inner sign chain (default: the
    gap minimising the error of |x|).  Raises FitError for requests that make
    no sense.
    """
    lo, hi = float(interval[0]), float(interval[1])
    if fn == "sign" and gap is None:
        gap = DEFAULT_SIGN_GAP
    elif fn != "sign" and method != "composite":
        gap = 0.0
    _validate(fn, int(degree), lo, hi, method, gap)
    if gap is None:  # composite abs/relu: pick the chain's dead zone by measurement
        candidates = [_fit_cached(fn, int(degree), (lo, hi), method, float(g)) for g in _GAP_CANDIDATES]
        return min(candidates, key=lambda f: f.max_error)
    return _fit_cached(fn, int(degree), (lo, hi), method, float(gap))


def _validate(fn: str, degree: int, lo: float, hi: float, method: str, gap: float | None) -> None:
    if fn not in FNS:
        raise FitError(f"unknown function {fn!r}; choose one of {', '.join(FNS)}")
    if method not in METHODS:
        raise FitError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise FitError(f"interval must satisfy LO < HI (got {lo}, {hi})")
    if not lo < 0.0 < hi:
        raise FitError(f"the interval must contain 0 in its interior (elsewhere {fn} is linear), got [{lo}, {hi}]")
    if degree < 1:
        raise FitError(f"degree must be >= 1 (got {degree})")
    symmetric = lo == -hi
    if (fn == "sign" or method == "composite") and not symmetric:
        raise FitError(f"{fn} with method {method} needs a symmetric interval [-B, B]")
    if fn == "sign" and degree % 2 == 0:
        raise FitError("sign is odd: its degree must be odd")
    if fn != "sign" and symmetric and degree % 2 == 1:
        raise FitError(f"{fn} on a symmetric interval is fitted through even |x|: use an even degree")
    if method == "composite":
        chain = degree if fn == "sign" else degree - 1
        if chain < 3:
            raise FitError("composite fits need degree >= 3 for sign (>= 4 for abs/relu)")
        composite.stage_degrees(chain)  # odd by the parity checks above
    if (fn == "sign" or method == "composite") and gap is not None and not 0.0 < gap < 1.0:
        raise FitError(f"gap must lie in (0, 1) (got {gap})")


@lru_cache(maxsize=256)
def _fit_cached(fn: str, degree: int, interval: tuple[float, float], method: str, gap: float) -> Fit:
    stages: tuple[tuple[float, ...], ...] = ()
    if method == "composite":
        stage_list = _composite_stages(fn, degree, gap)
        stages = tuple(tuple(float(v) for v in s) for s in stage_list)
        coeffs = _expand_composite(fn, stage_list, interval)
    elif method == "remez":
        coeffs = _remez_coeffs(fn, degree, interval, gap)
    else:
        coeffs = _chebyshev_coeffs(fn, degree, interval)
    coeff_t = tuple(float(v) for v in coeffs)
    if not any(coeff_t[1:]):
        raise FitError(f"the degree-{degree} {method} fit of {fn} on {list(interval)} is a constant; raise the degree")
    plan = _plan_for(coeff_t, stages, interval, fn)
    draft = Fit(fn, method, interval, degree, "chebyshev", coeff_t, plan.depth, plan.counts["mults"],
                0.0, stages, gap, plan)
    return Fit(fn, method, interval, degree, "chebyshev", coeff_t, plan.depth, plan.counts["mults"],
               measure_max_error(draft), stages, gap, plan)


def weighted_fit(fn: str, degree: int, density: np.ndarray, floor: float = DEFAULT_WEIGHT_FLOOR) -> Fit:
    """Least-squares fit of `fn` (abs or relu) on [-1, 1], weighted by where its inputs fall.

    Minimax (Remez) spends its degree evenly over [-1, 1], but the bound B is
    set by the rare largest input: the second attention ReLU of a trained
    inhibitor sees |t| < 0.1 for 56% of its inputs (scripts/degree_sweep.py
    --inputs), where a degree-14 minimax fit is as wrong as anywhere (1% of
    B), and its error is summed over every key. This
    fit minimises sum w(t) (p(t) - fn(t))^2 with w the observed density of t
    (`density`: histogram counts over equal bins of [-1, 1], e.g. from
    training data) plus `floor` times its peak, so the fit stays bounded
    where inputs are rare. Its max_error over [-1, 1] is larger than minimax's
    (it is still measured, and is what the simulator's bounds use). Where
    the inputs are, its RMS error is smaller and, above all, its mean error
    is zero (T_0 is a fitted term, so the residual is orthogonal to
    constants under w): minimax's error has a sign that persists over a
    cluster of inputs, and a sum over 30-55 keys multiplies that bias.

    |t| is fitted by an even polynomial (the density symmetrised), at the
    minimax fit's cost. ReLU is fitted directly with every term: its inputs
    are rarely symmetric (the attention's V - Z is mostly negative) and the
    odd terms follow that. It costs one non-scalar multiplication more than
    minimax's t/2 + even part at degree 14 (7, same depth 4).
    """
    dens = np.asarray(density, dtype=float)
    if fn not in ("abs", "relu"):
        raise FitError(f"weighted fits are for abs and relu, not {fn!r}")
    if int(degree) != degree or degree < 2 or degree % 2:
        raise FitError(f"weighted fits of {fn} take an even degree >= 2, as the minimax ones (got {degree})")
    if dens.ndim != 1 or dens.size < 2 or not np.all(np.isfinite(dens)) or np.any(dens < 0) or dens.sum() <= 0:
        raise FitError("density must be a 1-D histogram of >= 2 finite, non-negative counts with a positive sum")
    if not (np.isfinite(floor) and floor > 0):
        raise FitError(f"floor must be a positive fraction of the peak density (got {floor})")
    x, w = density_weights(fn, dens, floor)
    terms = [k for k in range(int(degree) + 1) if k % 2 == 0 or fn == "relu"]
    sw = np.sqrt(w)
    sol = np.linalg.lstsq(C.chebvander(x, int(degree))[:, terms] * sw[:, None], EXACT[fn](x) * sw, rcond=None)[0]
    coeffs = np.zeros(int(degree) + 1)
    coeffs[terms] = sol
    return series_fit(fn, coeffs, "weighted")


def density_weights(fn: str, density: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """The grid on [-1, 1] and the weights `weighted_fit` minimises its squared error under."""
    dens = np.asarray(density, dtype=float)
    if fn == "abs":
        dens = dens + dens[::-1]  # |t| is even: t and -t weigh the same
    x = np.linspace(-1.0, 1.0, 16 * dens.size + 1)
    centres = np.linspace(-1.0, 1.0, 2 * dens.size + 1)[1::2]
    return x, np.interp(x, centres, dens / dens.max()) + floor


def series_fit(fn: str, coeffs: Any, method: str) -> Fit:
    """A single-series Fit on [-1, 1] from given Chebyshev coefficients (plan and max_error derived)."""
    coeff_t = tuple(float(v) for v in np.asarray(coeffs, dtype=float))
    if len(coeff_t) < 2 or not all(np.isfinite(coeff_t)) or not any(coeff_t[1:]):
        raise FitError(f"{fn}: a {method} fit needs finite, non-constant Chebyshev coefficients")
    plan = _plan_for(coeff_t, (), (-1.0, 1.0), fn)
    draft = Fit(fn, method, (-1.0, 1.0), len(coeff_t) - 1, "chebyshev", coeff_t, plan.depth, plan.counts["mults"],
                0.0, (), 0.0, plan)
    return replace(draft, max_error=measure_max_error(draft))


def _parity(fn: str, interval: tuple[float, float]) -> int | None:
    if interval[0] != -interval[1] or fn == "relu":
        return None
    return {"abs": 0, "sign": 1}[fn]


def _relu_from_abs(abs_coeffs: np.ndarray, B: float) -> np.ndarray:
    """relu = (x + |x|) / 2 with x = B t = B T_1(t): exact, so relu(x) - relu(-x) = x."""
    coeffs = 0.5 * abs_coeffs
    coeffs[1] += 0.5 * B
    return coeffs


def _chebyshev_coeffs(fn: str, degree: int, interval: tuple[float, float]) -> np.ndarray:
    """Interpolation at the Chebyshev points of the first kind (relu via |x| when symmetric)."""
    lo, hi = interval
    if fn == "relu" and lo == -hi:
        return _relu_from_abs(_chebyshev_coeffs("abs", degree, interval), hi)
    f = EXACT[fn]
    coeffs = C.chebinterpolate(lambda t: f(0.5 * (hi - lo) * t + 0.5 * (hi + lo)), degree)
    return enforce_parity(coeffs, _parity(fn, interval))


def _remez_coeffs(fn: str, degree: int, interval: tuple[float, float], gap: float) -> np.ndarray:
    lo, hi = interval
    if lo != -hi:  # no parity to exploit: plain minimax in t
        f = EXACT[fn]
        u = np.linspace(-1.0, 1.0, _REMEZ_GRID)
        res = remez(lambda t: f(0.5 * (hi - lo) * t + 0.5 * (hi + lo)), np.ones_like, degree, u)
        return res.coeffs
    B = hi
    t = C.Chebyshev([0.0, 1.0])
    if fn == "sign":  # sign(t) = t q(t^2) on |t| >= gap
        tt = np.linspace(gap, 1.0, _REMEZ_GRID)
        res = remez(lambda s: 1.0 / np.sqrt(s), np.sqrt, (degree - 1) // 2, tt * tt)
        q = C.Chebyshev(res.coeffs, domain=[gap * gap, 1.0])
        return enforce_parity((t * q(t * t)).coef, 1)
    # |x| = B |t| = B q(t^2);  relu = (x + |x|) / 2
    tt = np.linspace(0.0, 1.0, _REMEZ_GRID)
    res = remez(np.sqrt, np.ones_like, degree // 2, tt * tt)
    q = C.Chebyshev(res.coeffs, domain=[0.0, 1.0])
    coeffs = enforce_parity(B * q(t * t).coef, 0)
    return _relu_from_abs(coeffs, B) if fn == "relu" else coeffs


def _composite_stages(fn: str, degree: int, gap: float) -> list[np.ndarray]:
    chain = degree if fn == "sign" else degree - 1
    stages = composite.minimax_chain(composite.stage_degrees(chain), gap)
    if fn == "relu":  # x * (1 + sign) / 2
        last = 0.5 * stages[-1]
        last[0] += 0.5
        stages[-1] = last
    return stages


def _expand_composite(fn: str, stages: list[np.ndarray], interval: tuple[float, float]) -> np.ndarray:
    chain = composite.compose(stages)
    if fn == "sign":
        return chain
    return interval[1] * C.chebmulx(chain)  # x * chain(t) with x = B t


def measure_max_error(f: Fit) -> float:
    """Max |f - fn| on >= 1e5 grid points plus refined local extrema of the error.

    For sign the dead zone |x| < gap * B is excluded (its edges are included).
    """
    lo, hi = f.interval
    B = max(abs(lo), abs(hi))
    x = np.linspace(lo, hi, GRID_POINTS)
    extras = [lo, hi] + ([-f.gap * B, f.gap * B] if f.fn == "sign" else [0.0])
    x = np.unique(np.concatenate((x, np.asarray(extras, dtype=float))))
    if f.fn == "sign":
        x = x[np.abs(x) >= f.gap * B * (1.0 - 1e-15)]
    err = f.error(x)
    best = float(err.max())
    # an equioscillating error has ~degree peaks of almost equal height: refine
    # all of them at once by a vectorised golden-section search between neighbours
    inner = np.flatnonzero((err[1:-1] >= err[:-2]) & (err[1:-1] >= err[2:])) + 1
    inner = inner[(err[inner] >= 0.9 * best) & (x[inner + 1] - x[inner - 1] < 4.0 * (hi - lo) / GRID_POINTS)]
    return max(best, _golden_max(f.error, x[inner - 1], x[inner + 1]))


def _golden_max(g: Callable[[np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray, iters: int = 60) -> float:
    """max of g over the brackets [a_i, b_i], each assumed unimodal (0.0 when empty)."""
    if a.size == 0:
        return 0.0
    r = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - r * (b - a), a + r * (b - a)
    gc, gd = g(c), g(d)
    for _ in range(iters):
        left = gc > gd  # the maximum lies in [a, d]
        a, b = np.where(left, a, c), np.where(left, d, b)
        c, d = b - r * (b - a), a + r * (b - a)
        gc, gd = g(c), g(d)
    return float(np.max(np.maximum(gc, gd)))
