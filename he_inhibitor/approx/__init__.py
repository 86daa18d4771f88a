"""Polynomial approximations of |x|, ReLU and sign for CKKS, with evaluation plans.

Public API:
    fit(fn, degree, interval=(-1, 1), method="remez", gap=None) -> Fit
    weighted_fit(fn, degree, density, floor) -> Fit (least squares under observed inputs)
    Fit: value with __call__(x), plan(unit_input=False), error(x), to_json()/from_json()
    plan: Plan, Instr, Backend, NumpyBackend (straight-line evaluation programs)
"""

from . import plan
from .fit import (DATA_METHODS, DEFAULT_SIGN_GAP, DEFAULT_WEIGHT_FLOOR, FNS, METHODS, Fit, FitError, fit,
                  measure_max_error, series_fit, weighted_fit)
from .plan import Backend, Instr, NumpyBackend, Plan

__all__ = [
    "DATA_METHODS", "DEFAULT_SIGN_GAP", "DEFAULT_WEIGHT_FLOOR", "FNS", "METHODS", "Backend", "Fit", "FitError", "Instr", "NumpyBackend", "Plan",
    "fit", "measure_max_error", "plan", "series_fit", "weighted_fit",
]
