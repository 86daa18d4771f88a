"""Fits: error bounds, parity, ReLU identity, Remez optimality, JSON round trip."""

from __future__ import annotations

import json
import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from numpy.polynomial import chebyshev as C

from he_inhibitor.approx import Fit, FitError, fit
from he_inhibitor.approx.basis import cheb_to_monomial
from he_inhibitor.approx.fit import EXACT

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def fit_requests(draw: st.DrawFn) -> tuple[str, int, tuple[float, float], str]:
    """Valid (fn, degree, interval, method) with random intervals and degrees."""
    fn = draw(st.sampled_from(["abs", "relu", "sign"]))
    method = draw(st.sampled_from(["chebyshev", "remez"]))
    B = draw(st.floats(0.25, 8.0))
    if fn == "sign" or draw(st.booleans()):
        lo, hi = -B, B
    else:
        lo, hi = -B, draw(st.floats(0.25, 8.0).filter(lambda h: h != B))
    if fn == "sign":
        degree = 2 * draw(st.integers(1, 15)) + 1
    elif lo == -hi:
        degree = 2 * draw(st.integers(1, 20))
    else:
        degree = draw(st.integers(1, 24))
    return fn, degree, (lo, hi), method


@FAST
@given(fit_requests(), st.integers(0, 2**32 - 1))
def test_stated_error_bound_holds_at_random_points(req, seed):
    fn, degree, interval, method = req
    try:
        f = fit(fn, degree, interval, method)
    except FitError as exc:  # a very low-degree interpolant can miss the kink entirely
        assert "is a constant" in str(exc) and degree <= 2
        reject()
    lo, hi = interval
    x = np.random.default_rng(seed).uniform(lo, hi, 20_000)
    if fn == "sign":
        x = x[np.abs(x) >= f.gap * hi]
    assert np.all(f.error(x) <= f.max_error * (1 + 1e-9) + 1e-12)
    assert f.degree == degree and f.max_error > 0


@pytest.mark.parametrize("degree,bound", [(16, 0.018), (32, 0.009)])
def test_minimax_abs_is_near_bernstein(degree, bound):
    f = fit("abs", degree, (-1.0, 1.0), "remez")
    assert f.max_error <= bound
    assert f.max_error * degree == pytest.approx(0.2801694990, rel=0.01)  # Bernstein's constant


def test_remez_beats_interpolation():
    assert fit("abs", 16, method="remez").max_error < 0.6 * fit("abs", 16, method="chebyshev").max_error


@pytest.mark.parametrize("method", ["chebyshev", "remez", "composite"])
def test_parity_of_coefficients(method):
    c_abs = np.array(fit("abs", 28, (-2.0, 2.0), method).coeffs)
    c_sign = np.array(fit("sign", 27, (-2.0, 2.0), method).coeffs)
    c_relu = np.array(fit("relu", 28, (-2.0, 2.0), method).coeffs)
    assert np.all(c_abs[1::2] == 0.0) and np.any(c_abs[0::2] != 0.0)
    assert np.all(c_sign[0::2] == 0.0) and np.any(c_sign[1::2] != 0.0)
    assert np.all(c_relu[3::2] == 0.0)  # relu = x/2 + even part


@pytest.mark.parametrize("method,degree", [("chebyshev", 20), ("remez", 20), ("composite", 28)])
def test_relu_difference_is_identity(method, degree):
    f = fit("relu", degree, (-3.0, 3.0), method)
    x = np.linspace(-3.0, 3.0, 4001)
    np.testing.assert_allclose(f(x) - f(-x), x, atol=1e-12)


def _alternations(err: np.ndarray, level: float) -> int:
    """Points where |err| reaches `level` with alternating signs (greedy count)."""
    count, last = 0, 0.0
    for e in err:
        if abs(e) >= level and np.sign(e) != last:
            count, last = count + 1, np.sign(e)
    return count


@pytest.mark.parametrize("degree", [8, 16, 30])
def test_remez_abs_equioscillates(degree):
    f = fit("abs", degree, (-1.0, 1.0), "remez")
    x = np.linspace(-1.0, 1.0, 400_001)
    err = f(x) - np.abs(x)
    # even problem q(s) on s = x^2 in [0, 1]: degree/2 + 2 alternation points in s;
    # mirrored onto [-1, 1] (s = 0 once) that is degree + 3 >= degree + 2
    assert _alternations(err, f.max_error * (1 - 1e-4)) >= degree + 2
    assert _alternations(err[x >= 0], f.max_error * (1 - 1e-4)) >= degree // 2 + 2


def test_remez_sign_equioscillates_outside_gap():
    f = fit("sign", 15, (-1.0, 1.0), "remez", gap=0.1)
    x = np.linspace(0.1, 1.0, 200_001)
    # odd problem t q(t^2): (15 - 1)/2 + 2 alternations on each side
    assert _alternations(f(x) - 1.0, f.max_error * (1 - 1e-4)) >= (15 - 1) // 2 + 2


def test_remez_asymmetric_equioscillates():
    f = fit("relu", 7, (-1.0, 2.0), "remez")
    x = np.linspace(-1.0, 2.0, 300_001)
    assert _alternations(f(x) - np.maximum(x, 0.0), f.max_error * (1 - 1e-4)) >= 7 + 2


@pytest.mark.parametrize("args", [("abs", 16, (-1.0, 1.0), "remez"), ("relu", 9, (-2.0, 3.0), "chebyshev"),
                                  ("sign", 27, (-4.0, 4.0), "composite"), ("abs", 28, (-2.0, 2.0), "composite")])
def test_json_round_trip_and_independent_reproduction(args):
    f = fit(*args)
    assert Fit.from_json(f.to_json()) == f
    assert Fit.from_json(json.dumps(f.to_json())) == f
    d = json.loads(json.dumps(f.to_json()))
    lo, hi = d["interval"]
    x = np.linspace(lo, hi, 200_001)
    if d["fn"] == "sign":
        x = x[np.abs(x) >= d["gap"] * hi]
    exact = EXACT[d["fn"]](x)
    cheb = C.chebval((2 * x - (lo + hi)) / (hi - lo), d["coeffs"])
    assert np.max(np.abs(cheb - exact)) == pytest.approx(d["max_error"], rel=1e-3, abs=1e-9)
    assert np.max(np.abs(cheb - exact)) <= d["max_error"] * (1 + 1e-9)
    if f.degree <= 20:  # monomials are only well conditioned at low degree
        mono = np.polynomial.polynomial.polyval(x, cheb_to_monomial(f.coeffs, f.interval))
        np.testing.assert_allclose(mono, cheb, atol=1e-9)


def test_composite_degree_depth_and_precision():
    f = fit("abs", 244, (-1.0, 1.0), "composite")  # five cubic stages, times x
    assert [len(s) - 1 for s in f.stages] == [3] * 5
    assert f.depth == 5 * 2 + 1 and f.mults == 11
    assert f.max_error < fit("abs", 32, method="remez").max_error


@pytest.mark.parametrize(
    "kwargs",
    [dict(fn="abs", degree=16, interval=(1.0, -1.0)), dict(fn="abs", degree=0), dict(fn="abs", degree=15),
     dict(fn="sign", degree=16), dict(fn="sign", degree=15, interval=(-1.0, 2.0)),
     dict(fn="relu", degree=9, interval=(-1.0, 2.0), method="composite"), dict(fn="abs", degree=2, method="composite"),
     dict(fn="abs", degree=16, interval=(0.5, 2.0)), dict(fn="tanh", degree=16), dict(fn="abs", degree=16, method="x"),
     dict(fn="sign", degree=15, gap=1.5)],
)
def test_nonsense_requests_are_refused(kwargs):
    with pytest.raises(FitError):
        fit(**kwargs)


def test_factory_caches():
    assert fit("abs", 24, (-2.0, 2.0)) is fit("abs", 24, (-2, 2))


def test_torch_autograd_flows_through_poly_form():
    torch = pytest.importorskip("torch")
    f = fit("relu", 16, (-2.0, 2.0), "remez")
    x = torch.linspace(-2.0, 2.0, 101, dtype=torch.float64, requires_grad=True)
    y = f(x)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), f(x.detach().numpy()), atol=1e-12)
    slope = C.chebval(x.detach().numpy() / 2.0, C.chebder(f.coeffs)) / 2.0
    np.testing.assert_allclose(x.grad.numpy(), slope, atol=1e-9)


@st.composite
def densities(draw: st.DrawFn) -> np.ndarray:
    """Histograms over [-1, 1]: a few bumps of random place, width and mass (inputs cluster in practice)."""
    bins = draw(st.sampled_from([8, 50, 400]))
    centres = np.linspace(-1.0, 1.0, 2 * bins + 1)[1::2]
    out = np.zeros(bins)
    for _ in range(draw(st.integers(1, 3))):
        mu, width, mass = draw(st.floats(-1, 1)), draw(st.floats(0.01, 1.0)), draw(st.floats(0.1, 10.0))
        out += mass * np.exp(-0.5 * ((centres - mu) / width) ** 2)
    if out.sum() <= 0:
        reject()
    return out


@FAST
@given(fn=st.sampled_from(["abs", "relu"]), degree=st.sampled_from([4, 8, 14]), density=densities(),
       floor=st.sampled_from([1e-4, 1e-3, 1e-1]))
def test_weighted_fit_beats_minimax_where_the_inputs_are(fn, degree, density, floor):
    """Under its own weights the weighted fit's squared error is no larger than the Remez fit's
    (least squares is optimal there; the Remez fit has the same degree and, for abs, parity);
    its plan has the Remez fit's depth (abs: its multiplications too; relu: at most one more)."""
    from he_inhibitor.approx import weighted_fit
    from he_inhibitor.approx.fit import density_weights

    wf, rf = weighted_fit(fn, degree, density, floor), fit(fn, degree)
    x, w = density_weights(fn, density, floor)
    objective = lambda f: float(np.sum(w * f.error(x) ** 2))  # noqa: E731
    assert objective(wf) <= objective(rf) * (1 + 1e-9) + 1e-18
    signed = wf(x) - EXACT[fn](x)  # T_0 is a fitted term: the weighted mean error is zero
    assert abs(np.sum(w * signed)) <= 1e-8 * np.sum(w * np.abs(signed)) + 1e-15
    assert (wf.depth, wf.degree, wf.method) == (rf.depth, degree, "weighted")
    assert wf.mults == rf.mults if fn == "abs" else rf.mults <= wf.mults <= rf.mults + 1
    t = np.random.default_rng(degree).uniform(-1, 1, 5000)
    assert wf.error(t).max() <= wf.max_error * (1 + 1e-9)
    if fn == "abs":
        np.testing.assert_allclose(wf(t), wf(-t), atol=1e-12)
    assert Fit.from_json(json.loads(json.dumps(wf.to_json()))) == wf


def test_weighted_fit_is_unbiased_where_the_inputs_are():
    """Inputs clustered just below 0 (inhibited pairs): on samples drawn from that cluster the weighted
    fit's mean error, which a sum over keys accumulates, is a small fraction of minimax's, its RMS under half."""
    from he_inhibitor.approx import weighted_fit

    centres = np.linspace(-1, 1, 801)[1::2]
    density = np.exp(-0.5 * ((centres + 0.05) / 0.03) ** 2)
    t = np.random.default_rng(0).normal(-0.05, 0.03, 200_000)
    for fn in ("abs", "relu"):
        w_err = weighted_fit(fn, 14, density)(t) - EXACT[fn](t)
        r_err = fit(fn, 14)(t) - EXACT[fn](t)
        assert abs(w_err.mean()) < 0.05 * abs(r_err.mean())
        assert np.sqrt(np.mean(w_err ** 2)) < 0.6 * np.sqrt(np.mean(r_err ** 2))


@pytest.mark.parametrize("args,match", [
    (("sign", 14, np.ones(10)), "abs and relu"),
    (("relu", 7, np.ones(10)), "even degree"),
    (("relu", 14, np.array([1.0, -1.0, 2.0])), "non-negative"),
    (("relu", 14, np.zeros(10)), "positive sum"),
    (("abs", 14, np.array([1.0, np.nan])), "finite"),
    (("abs", 14, np.ones((2, 5))), "1-D"),
    (("abs", 14, np.ones(10), 0.0), "floor"),
])
def test_weighted_fit_refuses_bad_requests(args, match):
    from he_inhibitor.approx import weighted_fit

    with pytest.raises(FitError, match=match):
        weighted_fit(*args)
