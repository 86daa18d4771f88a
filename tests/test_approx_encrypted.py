"""Fits evaluated on SEAL ciphertexts (N = 16384): error and levels as predicted."""

from __future__ import annotations

import numpy as np
import pytest

from he_inhibitor.approx import fit
from he_inhibitor.approx.fit import EXACT
from he_inhibitor.ckks import CkksEvaluator, CkksParams, keygen, serial

CKKS_NOISE = 1e-5  # fresh encryption + rescale rounding at scale 2^40, amplified by the plan


@pytest.mark.slow
@pytest.mark.parametrize("args", [("abs", 16, (-1.0, 1.0), "remez"), ("relu", 28, (-4.0, 4.0), "composite")])
def test_encrypted_fit_within_bound_at_predicted_depth(args):
    f = fit(*args)
    # 59-bit outer primes leave room for 8 levels of 40 bits under the 438-bit limit
    params = CkksParams.for_depth(f.depth, poly_modulus_degree=16384, first_bits=59, special_bits=59)
    keys = keygen(params)
    ev = CkksEvaluator(keys.public_context())
    lo, hi = f.interval
    x = np.random.default_rng(7).uniform(lo, hi, params.slots)
    x[:3] = [lo, 0.0, hi]
    ct = serial.ciphertext_from_bytes(keys.encrypt_bytes(x), ev.context)
    before = ev.level(ct)
    out = f.plan().run(ct, ev)
    assert before - ev.level(out) == f.depth
    y = keys.decrypt(out)
    assert np.max(np.abs(y - f(x))) < CKKS_NOISE
    assert np.max(np.abs(y - EXACT[f.fn](x))) <= f.max_error + CKKS_NOISE
