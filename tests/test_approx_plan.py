"""Evaluation plans: equal to direct evaluation, depth ceil(log2(deg+1)) counting scalars."""

from __future__ import annotations

from math import ceil, log2

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from he_inhibitor.approx import NumpyBackend, fit
from he_inhibitor.approx.plan import compile_series

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class DepthBackend:
    """Executes a plan on depths instead of values: an independent check of the static depth."""

    def __init__(self) -> None:
        self.counts = {"mul": 0, "square": 0, "const_mults": 0, "add": 0, "sub": 0, "add_const": 0}

    def _count(self, op: str) -> None:
        self.counts[op] += 1

    def mul(self, a: int, b: int) -> int:
        assert a == b, "a product's operands at one level"
        self._count("mul")
        return a + 1

    def square(self, a: int) -> int:
        self._count("square")
        return a + 1

    def lin(self, xs: list[int], consts: tuple[float, ...], drop: int) -> int:
        assert len(consts) == len(xs) + 1 and all(consts[1:]), "one non-zero constant per term, then c0"
        self.counts["const_mults"] += len(xs)
        return max(xs) + 1 + drop

    def drop(self, a: int, levels: int) -> int:
        assert levels > 0
        self.counts["const_mults"] += 1
        return a + levels

    def add(self, a: int, b: int) -> int:
        assert a == b, "a sum's operands at one level"
        self._count("add")
        return a

    def sub(self, a: int, b: int) -> int:
        assert a == b, "a difference's operands at one level"
        self._count("sub")
        return a

    def add_const(self, a: int, c: float) -> int:
        self._count("add_const")
        return a


@st.composite
def any_fit(draw: st.DrawFn):
    fn = draw(st.sampled_from(["abs", "relu", "sign"]))
    method = draw(st.sampled_from(["chebyshev", "remez", "composite"]))
    B = draw(st.sampled_from([1.0, 2.5]))
    if method == "composite":
        chain = draw(st.sampled_from([3, 9, 15, 27]))
        degree = chain if fn == "sign" else chain + 1
    else:
        degree = 2 * draw(st.integers(1, 32)) + (1 if fn == "sign" else 0)
    return fit(fn, degree, (-B, B), method)


@FAST
@given(any_fit())
def test_plan_equals_direct_evaluation(f):
    lo, hi = f.interval
    x = np.linspace(lo, hi, 2001)
    direct = f(x)
    planned = f.plan().run(x, NumpyBackend())
    assert np.max(np.abs(planned - direct)) <= 1e-12 * max(1.0, np.max(np.abs(direct)))


@FAST
@given(any_fit())
def test_depth_and_counts_match_an_independent_executor(f):
    plan = f.plan()
    backend = DepthBackend()
    assert plan.run(0, backend) == plan.depth == f.depth
    assert backend.counts["mul"] + backend.counts["square"] == plan.counts["mults"] == f.mults
    assert backend.counts["const_mults"] == plan.counts["const_mults"]


@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("interval,extra", [((-1.0, 1.0), 0), ((-3.0, 3.0), 1)])
def test_depth_formula_with_parity(parity, interval, extra):
    """Even/odd series of every degree up to 129: ceil(log2(deg+1)), plus one
    level for t = x/B when the interval is not [-1, 1]."""
    rng = np.random.default_rng(parity)
    for d in range(2 - parity, 130, 2):
        coeffs = np.zeros(d + 1)
        coeffs[parity::2] = rng.uniform(0.5, 1.0, coeffs[parity::2].size)
        assert compile_series(coeffs, interval).depth == ceil(log2(d + 1)) + extra, d


def test_fit_depth_is_its_plan_depth():
    for fn, d in [("abs", 16), ("abs", 32), ("relu", 64), ("sign", 31)]:
        f = fit(fn, d, (-1.0, 1.0), "remez")
        assert f.depth == f.plan().depth == ceil(log2(d + 1))


@pytest.mark.parametrize("degree", range(1, 64))
def test_depth_formula_dense_series(degree):
    """Every coefficient non-zero (no parity to lean on) still meets ceil(log2(deg+1))."""
    coeffs = np.random.default_rng(degree).uniform(0.5, 1.0, degree + 1)
    plan = compile_series(coeffs, (-1.0, 1.0))
    assert plan.depth == ceil(log2(degree + 1))
    t = np.linspace(-1.0, 1.0, 257)
    np.testing.assert_allclose(plan.run(t, NumpyBackend()), np.polynomial.chebyshev.chebval(t, coeffs), atol=1e-11)


@pytest.mark.parametrize("fn,chain", [("sign", 27), ("abs", 27), ("relu", 45), ("sign", 75)])
def test_depth_formula_composite(fn, chain):
    f = fit(fn, chain if fn == "sign" else chain + 1, (-1.0, 1.0), "composite")
    stage_depths = [ceil(log2(len(s))) for s in f.stages]  # len = stage degree + 1
    assert f.depth == sum(stage_depths) + (0 if fn == "sign" else 1)


@pytest.mark.parametrize("degree,max_mults", [(16, 6), (32, 9), (64, 13)])
def test_baby_step_giant_step_saves_multiplications(degree, max_mults):
    """Paterson-Stockmeyer with parity: far fewer ct-ct mults than degree - 1."""
    assert fit("abs", degree).mults <= max_mults


def test_plan_uses_only_the_documented_instructions():
    ops = {i.op for i in fit("relu", 40, (-2.0, 2.0)).plan().instrs}
    assert ops <= {"mul", "square", "lin", "add", "sub", "add_const", "drop"}


@pytest.mark.parametrize("args", [("abs", 32, (-4.0, 4.0), "remez"), ("relu", 12, (-1.0, 3.0), "chebyshev"),
                                  ("relu", 28, (-2.0, 2.0), "composite"), ("sign", 27, (-3.0, 3.0), "composite")])
def test_unit_input_plan_saves_the_map_level(args):
    f = fit(*args)
    unit = f.plan(unit_input=True)
    assert unit.depth == f.depth - 1
    x = np.linspace(*f.interval, 1001)
    lo, hi = f.interval
    t = (2 * x - (lo + hi)) / (hi - lo)
    np.testing.assert_allclose(unit.run(t, NumpyBackend()), f(x), atol=1e-12 * max(1.0, hi))
