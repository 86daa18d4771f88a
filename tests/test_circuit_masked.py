"""A plaintext mask folded into a polynomial's plan: m * p(x) at p's depth and multiplication count."""

import numpy as np
from hypothesis import given, settings, strategies as st

from he_inhibitor.approx import NumpyBackend, fit
from he_inhibitor.circuit.builder import Builder
from he_inhibitor.circuit.ir import OpKind, levels_and_degrees
from he_inhibitor.circuit.masked import mask_plan, masked_plan_of
from he_inhibitor.circuit.poly import FitPoly, Reflected, Scaled


class VecBackend(NumpyBackend):
    def lin_plain(self, xs, vs, drop):
        return self.lin(xs, vs, drop)

    def add_plain(self, a, v):
        return a + v


def ct_mults(instrs) -> int:
    return sum(i.op in ("mul", "square") for i in instrs)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["abs", "relu"]), st.integers(2, 16).map(lambda k: 2 * k),
       st.sampled_from(["remez", "chebyshev"]), st.integers(0, 2**31 - 1))
def test_masked_plan_equals_mask_times_poly(fn, degree, method, seed):
    f = fit(fn, degree, (-1.0, 1.0), method)
    mp = mask_plan(f.plan())
    assert mp is not None
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 257)
    m = rng.integers(0, 2, 257).astype(float)
    np.testing.assert_allclose(mp.run(x, m, VecBackend()), m * f(x), atol=1e-12)
    assert mp.depth == f.depth
    assert ct_mults(mp.instrs) == f.plan().counts["mults"]


def test_scaled_and_reflected_fold_too():
    f = FitPoly(fit("relu", 14))
    g = Reflected(Scaled(f, 0.7))
    x = np.linspace(-1, 1, 101)
    m = (np.arange(101) % 2).astype(float)
    np.testing.assert_allclose(masked_plan_of(g).run(x, m, VecBackend()), m * g(x), atol=1e-12)


def test_builder_spends_a_level_only_when_the_mask_does_not_fold():
    folds = FitPoly(fit("relu", 14))
    composite = Scaled(FitPoly(fit("relu", 8, (-1.0, 1.0), "composite")), 2.0)  # no folded fit
    assert masked_plan_of(composite) is None
    b = Builder(8)
    x = b.input("x")
    y1 = b.poly(x, folds, np.ones(8))
    y2 = b.poly(x, composite, np.ones(8))
    lv, _ = levels_and_degrees(b.circuit)
    assert lv[y1] == folds.depth and b.circuit.nodes[y1].op is OpKind.POLY
    assert lv[y2] == composite.depth + 1 and b.circuit.nodes[y2].op is OpKind.RESCALE
