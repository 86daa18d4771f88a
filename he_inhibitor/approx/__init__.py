"""Polynomial approximations of |x|, ReLU and sign for CKKS, with evaluation plans.

Public API:
    fit(fn, degree, interval=(-1, 1), method="remez", gap=None) -> Fit
    Fit: value with __call__(x), plan(unit_input=False), error(x), to_json()/from_json()
    plan: Plan, Instr, Backend, NumpyBackend (straight-line evaluation programs)
"""

from . import plan
from .fit import DEFAULT_SIGN_GAP, FNS, METHODS, Fit, FitError, fit, measure_max_error
from .plan import Backend, Instr, NumpyBackend, Plan

__all__ = [
    "DEFAULT_SIGN_GAP", "FNS", "METHODS", "Backend", "Fit", "FitError", "Instr", "NumpyBackend", "Plan",
    "fit", "measure_max_error", "plan",
]
