"""SEAL backend: security check, keys, serialization, level/scale management."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal
from hypothesis import given, settings
from hypothesis import strategies as st

from he_inhibitor.ckks import (
    CkksEvaluator, CkksParams, InsecureParametersError, PublicContext, SecretKey, galois_elements, keygen, serial,
)
from he_inhibitor.ckks.keys import ClientKeys

SMALL = CkksParams(8192, (60, 40, 40, 60), 40)  # 200 bits <= 218: fast but secure
# encryption + key-switching noise at scale 2^40: about 1e-6 in the worst of 4096 slots now and then
NOISE = 1e-5


@pytest.fixture(scope="module")
def keys() -> ClientKeys:
    return keygen(SMALL, rotation_steps=[1, -2])


@pytest.fixture(scope="module")
def ev(keys: ClientKeys) -> CkksEvaluator:
    return CkksEvaluator(PublicContext.from_bytes(keys.public_context().to_bytes()))


@pytest.mark.parametrize("n,bits", [(8192, (60, 40, 40, 40, 39)), (16384, (60,) + (40,) * 8 + (60,)),
                                    (32768, (60,) * 14 + (42,)), (4096, (60, 50))])
def test_insecure_parameters_are_refused(n, bits):
    with pytest.raises(InsecureParametersError, match="128-bit"):
        CkksParams(n, bits, 40)


@pytest.mark.parametrize("n,bits", [(8192, (60, 40, 40, 40, 38)), (16384, (60,) + (40,) * 8 + (58,))])
def test_parameters_at_the_limit_are_accepted(n, bits):
    assert CkksParams(n, bits, 40).total_bits in (218, 438)


def test_malformed_parameters_are_refused():
    for bad in [(12288, (60, 60), 40), (8192, (60,), 40), (8192, (61, 40, 60), 40), (8192, (40, 40, 60), 40)]:
        with pytest.raises(InsecureParametersError):
            CkksParams(*bad)


def test_public_context_holds_no_secret_key(keys):
    pub = keys.public_context()
    assert not any(isinstance(v, (seal.SecretKey, SecretKey)) for v in vars(pub).values())
    secret = keys.secret.to_bytes()
    assert secret[16:80] not in pub.to_bytes()
    assert isinstance(pub.relin_keys, seal.RelinKeys) and pub.galois_keys is not None


def test_galois_keys_only_for_requested_steps(keys, ev):
    gk = ev.public.galois_keys
    wanted = galois_elements(ev.context, [1, -2])
    assert gk.size() == 2 and all(gk.has_key(e) for e in wanted)
    assert not any(gk.has_key(e) for e in galois_elements(ev.context, [2, 4, -1]))
    x = np.arange(SMALL.slots, dtype=float) / SMALL.slots
    ct = keys.encrypt(x)
    np.testing.assert_allclose(keys.decrypt(ev.rotate(ct, 1)), np.roll(x, -1), atol=NOISE)
    np.testing.assert_allclose(keys.decrypt(ev.rotate(ct, -2)), np.roll(x, 2), atol=NOISE)
    with pytest.raises(KeyError):
        ev.rotate(ct, 2)


def test_ciphertext_and_key_serialization_round_trip(keys, ev):
    x = np.random.default_rng(1).uniform(-1, 1, SMALL.slots)
    seeded = keys.encrypt_bytes(x)
    full = serial.to_bytes(keys.encrypt(x))
    assert serial.compression(seeded) == "zstd" and len(seeded) < 0.6 * len(full)
    ct = serial.ciphertext_from_bytes(seeded, ev.context)
    np.testing.assert_allclose(keys.decrypt(ct), x, atol=NOISE)
    again = serial.ciphertext_from_bytes(serial.to_bytes(ct), ev.context)
    np.testing.assert_allclose(keys.decrypt(again), x, atol=NOISE)
    restored = ClientKeys(SMALL, SecretKey.from_bytes(keys.secret.to_bytes(), keys.context), keys.public_blob)
    np.testing.assert_allclose(restored.decrypt(ct), x, atol=NOISE)
    with pytest.raises(ValueError):
        serial.ciphertext_from_bytes(b"garbage" * 10, ev.context)


def test_low_level_encryption_is_smaller_and_lands_at_that_level(keys, ev):
    x = np.linspace(-1, 1, 100)
    top, low = keys.encrypt_bytes(x), keys.encrypt_bytes(x, level=0)
    assert len(low) < 0.6 * len(top)
    ct = serial.ciphertext_from_bytes(low, ev.context)
    assert ev.level(ct) == 0 and ct.scale == ev.scales[0]
    np.testing.assert_allclose(keys.decrypt(ct)[:100], x, atol=NOISE)


def test_levels_and_scales_are_managed(keys, ev):
    x = np.random.default_rng(2).uniform(-1, 1, SMALL.slots)
    w = np.random.default_rng(3).uniform(-1, 1, SMALL.slots)
    a = keys.encrypt(x)
    sq = ev.mul(a, a)  # level 1
    mixed = ev.add(sq, a)  # a dropped to level 1 with that level's scale
    prod = ev.lin([ev.add_plain(mixed, w.tolist())], [0.0, w])  # level 0
    assert [ev.level(c) for c in (a, sq, mixed, prod)] == [2, 1, 1, 0]
    assert all(c.scale == ev.scales[ev.level(c)] for c in (a, sq, mixed, prod))
    expect = (x * x + x + w) * w
    np.testing.assert_allclose(keys.decrypt(prod), expect, atol=1e-5)
    np.testing.assert_allclose(keys.decrypt(ev.sub(ev.lin([a], (0.0, -0.75)), ev.add_const(a, 0.5))),
                               -1.75 * x - 0.5, atol=NOISE)
    with pytest.raises(ValueError):
        ev.drop_to(prod, 1)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.floats(-3, 3).filter(lambda c: abs(c) > 1e-3), min_size=1, max_size=3),
       st.floats(-2, 2), st.integers(0, 1), st.booleans())
def test_lin_sums_inputs_of_any_level_with_one_rescale(keys, ev, cs, c0, drop, vectors):
    """lin: inputs at different levels (a, a^2) mod-switched, not rescaled, to one level; scalar or slot-vector
    constants; the result `drop` + 1 levels below the shallowest input, on that level's scale exactly."""
    x = np.linspace(-1, 1, SMALL.slots)
    a = keys.encrypt(x)
    sq = ev.square(a)  # one level below a
    xs, vs = [a, sq, a][: len(cs)], [x, x * x, x][: len(cs)]
    w = np.cos(np.arange(SMALL.slots))
    consts = [c0 * w, *(c * w for c in cs)] if vectors else [c0, *cs]
    if drop:  # the chain (2 levels) leaves room for one input dropped a level further
        xs, vs, consts = xs[:1], vs[:1], consts[:2]
    out = ev.lin(xs, consts, drop)
    assert ev.level(out) == min(ev.level(x) for x in xs) - 1 - drop
    expect = consts[0] + sum(c * v for c, v in zip(consts[1:], vs))
    np.testing.assert_allclose(keys.decrypt(out), expect, atol=NOISE)
    assert out.scale == ev.scales[ev.level(out)]
