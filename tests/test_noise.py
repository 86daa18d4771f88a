"""The noise estimate's algebra (circuit/noise.py): errors read in several places stay one error.

The simulator's bound is k times the estimated standard deviation of each
slot's error. A variance propagated as if every error were independent fell
short of SEAL's wherever one error reached a sum twice; these properties pin
the rules that fix it, each against the variance worked out by hand.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_inhibitor.circuit.noise import Err, Sampler

SLOTS, DRAWS, K = 2048, 64, 6.0
# the mean over slots of an estimate from DRAWS signs: within a few percent (sd ~ 1/sqrt(slots * draws))
REL = 0.05

sds = st.floats(1e-6, 1e-2)
coefs = st.floats(-3.0, 3.0).filter(lambda c: abs(c) > 0.1)


def _fresh(sd: float) -> Err:
    return Err.fresh(sd, K, np.zeros(SLOTS))


def _mean_var(e: Err) -> float:
    return float(np.mean(np.broadcast_to(e.variance(), (SLOTS,))))


@settings(max_examples=25, deadline=None)
@given(sd=sds, c=coefs, seed=st.integers(0, 2**16))
def test_a_shared_error_adds_coherently(sd, c, seed):
    """x + c*x, with x's error drawn joint: variance (1 + c)^2 sd^2, not the (1 + c^2) sd^2 of independence."""
    x = Sampler(DRAWS, SLOTS, seed).shared(_fresh(sd))
    assert _mean_var(x + x.scaled(c)) == pytest.approx((1 + c) ** 2 * sd**2, rel=REL, abs=1e-3 * sd**2)


@given(sd1=sds, sd2=sds, c=coefs)
def test_independent_parts_add_exactly_without_draws(sd1, sd2, c):
    """Fresh terms from different ops are independent: their variances add, exactly, and nothing is drawn."""
    e = _fresh(sd1) + _fresh(sd2).scaled(c)
    assert np.ndim(e.s) == 0
    np.testing.assert_allclose(e.variance(), sd1**2 + c**2 * sd2**2, rtol=1e-12)
    np.testing.assert_allclose(e.wc, K * (sd1 + abs(c) * sd2), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(sd=sds, k=st.integers(1, SLOTS - 1), seed=st.integers(0, 2**16))
def test_a_rotation_meets_other_slots_errors(sd, k, seed):
    """x + rot(x, k): each slot adds two different slots' errors, independent: variance 2 sd^2."""
    x = Sampler(DRAWS, SLOTS, seed).shared(_fresh(sd))
    assert _mean_var(x + x.rotated(k)) == pytest.approx(2 * sd**2, rel=REL)


@settings(max_examples=25, deadline=None)
@given(sd=sds, seed=st.integers(0, 2**16))
def test_a_square_doubles_the_slope(sd, seed):
    """x * x with x's error drawn joint: 2 x e to first order, variance 4 x^2 sd^2."""
    x = np.linspace(0.5, 2.0, SLOTS)
    e = Sampler(DRAWS, SLOTS, seed).shared(_fresh(sd))
    got = np.asarray(e.times(e, x, x).variance())
    assert np.mean(got / (4 * x**2 * sd**2)) == pytest.approx(1.0, rel=REL)


@settings(max_examples=25, deadline=None)
@given(sd1=sds, sd2=sds, seed=st.integers(0, 2**16))
def test_a_drawn_error_times_a_fresh_one_keeps_its_second_order(sd1, sd2, seed):
    """x * p where both plain values are 0 (a product by a zero slot of an encoded plaintext): only the
    second-order term e_x * e_p is left, variance sd1^2 sd2^2 -- not nothing."""
    zero = np.zeros(SLOTS)
    x = Sampler(DRAWS, SLOTS, seed).shared(_fresh(sd1))
    assert _mean_var(x.times(_fresh(sd2), zero, zero)) == pytest.approx(sd1**2 * sd2**2, rel=REL)


@given(sd=sds, seed=st.integers(0, 2**16))
def test_a_scalar_error_is_one_value_in_every_slot(sd, seed):
    """A scalar constant's encoding error is the same in every slot: its draws are [draws, 1], and a sum
    over slots of it grows with the number of slots, not its square root."""
    e = Sampler(DRAWS, SLOTS, seed).scalar(sd, K)
    assert np.shape(e.s) == (DRAWS, 1)
    spread = e.scaled(np.ones(SLOTS))
    assert np.all(spread.s == spread.s[:, :1])


def test_an_error_is_drawn_once_and_per_slot():
    """Sharing draws the independent part into the draws (each slot its own signs), once; a scalar-held part
    still gets a draw per slot."""
    sampler = Sampler(DRAWS, SLOTS, 0)
    x = sampler.shared(Err.fresh(1e-3, K))  # held as one number, independent per slot all the same
    assert x.s.shape == (DRAWS, SLOTS) and not np.any(x.v)
    assert not np.all(x.s == x.s[:, :1])
    assert sampler.shared(x) is x
    assert np.mean(x.variance()) == pytest.approx(1e-6, rel=REL)


def test_one_draw_is_refused():
    with pytest.raises(ValueError, match="at least 2 draws"):
        Sampler(1, SLOTS)
