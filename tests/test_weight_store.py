"""The weight store: content addressing, its byte bound, and sharing between key sets.

The bound and the LRU are held to a model of what the store must keep over
random sequences of lookups (hypothesis), with real SEAL plaintexts of
different sizes; executors of two key sets sharing one store give the same
answers as executors with stores of their own, and the second encodes no
weight.
"""

from __future__ import annotations

import gc
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_inhibitor.ckks import CkksEvaluator, CkksParams, keygen
from he_inhibitor.circuit.weight_store import WeightStore, plaintext_bytes

PARAMS = CkksParams(8192, (60, 40, 40, 60), 40)
EV = CkksEvaluator(keygen(PARAMS).public_context())
# a plaintext at chain index c holds c + 1 primes: three sizes
PLAINS = [EV.encode(float(c), c, 2.0**40) for c in range(PARAMS.depth + 1)]
SIZES = [plaintext_bytes(p) for p in PLAINS]


def test_plaintext_sizes_follow_the_level():
    assert SIZES == [8192 * 8 * (c + 1) for c in range(PARAMS.depth + 1)]


@settings(max_examples=60, deadline=None)
@given(bound=st.integers(0, 6).map(lambda k: k * SIZES[0]) | st.integers(0, 6 * SIZES[0]),  # exact fits too
       lookups=st.lists(st.tuples(st.integers(0, 7), st.integers(0, PARAMS.depth)), max_size=40))
def test_the_store_keeps_the_most_recent_plaintexts_that_fit_its_bound(bound, lookups):
    """Against a model LRU: what is held, in which order, and every byte counted; a held key is never
    encoded again, and a plaintext larger than the whole bound is handed out but not kept."""
    store = WeightStore(bound)
    model: OrderedDict[tuple[int, int], int] = OrderedDict()
    for key, level in lookups:
        calls = []
        got = store.get((key, level), lambda: calls.append(1) or PLAINS[level])
        assert got is PLAINS[level]
        if (key, level) in model:
            assert not calls
            model.move_to_end((key, level))
        else:
            assert calls == [1]
            if SIZES[level] <= bound:
                model[(key, level)] = SIZES[level]
                while sum(model.values()) > bound:
                    model.popitem(last=False)
        assert store.keys() == list(model)
        assert store.bytes == sum(model.values()) <= bound


def test_digests_address_content_and_forget_dead_arrays():
    store = WeightStore()
    a = np.linspace(0, 1, 64)
    assert store.digest(a) == store.digest(a.copy()) == store.digest(a)
    assert store.digest(a) != store.digest(a.reshape(8, 8))  # same values, other shape
    b = a.copy()
    b[3] = np.nextafter(b[3], 2.0)
    assert store.digest(a) != store.digest(b)  # one last bit
    assert store.digest(2.0) == store.digest(np.float64(2.0)) != store.digest(3.0)
    held = len(store._digests)
    del b
    gc.collect()
    assert len(store._digests) == held - 1


def test_a_negative_bound_is_refused():
    with pytest.raises(ValueError, match="bytes >= 0"):
        WeightStore(-1)


def test_two_key_sets_share_one_store_and_the_second_encodes_no_weight():
    """Executors of two clients' keys on one store: the same logits as each alone, the second client's
    sentence served from what the first one's encoded (weights and key masks alike)."""
    import torch

    from he_inhibitor.circuit.bundle import plan_bucket
    from he_inhibitor.circuit.encrypted import EncryptedExecutor
    from he_inhibitor.circuit.executors import PlainExecutor
    from he_inhibitor.circuit.params import Precision
    from he_inhibitor.circuit.weights import from_torch
    from he_inhibitor.model.nonlinear import PolySpec
    from he_inhibitor.model.student import Student, StudentConfig

    torch.manual_seed(0)
    cfg = StudentConfig(vocab_size=16, max_len=16, d_model=16, n_heads=4, d_ff=32, n_layers=1, dropout=0.0,
                        abs_poly=PolySpec(2), relu_poly=PolySpec(2))
    model = Student(cfg).double().eval().set_form("poly")
    T, n = 8, 6
    bucket, _, _ = plan_bucket(from_torch(model), T, range(1, T + 1), n=8192, precision=Precision(30, 40, 60))
    plan = bucket.plan_for(n)
    x0 = np.random.default_rng(0).normal(size=(T, 16)) * (np.arange(T) < n)[:, None]
    m = (np.arange(T) < n).astype(float)
    want = PlainExecutor(plan.compiled).run(x0, m).logits
    store = WeightStore()
    first = EncryptedExecutor(plan.compiled, plan.params, weights=store, seed=1)
    np.testing.assert_allclose(first.run(x0, m).logits, want, atol=1e-2)
    held, misses = store.keys(), store.misses
    assert any(k[0] == "weight" for k in held) and any(k[0] == "mask" for k in held)
    second = EncryptedExecutor(plan.compiled, plan.params, weights=store, seed=2)
    assert second.keys.public_blob != first.keys.public_blob
    np.testing.assert_allclose(second.run(x0, m).logits, want, atol=1e-2)
    assert store.keys() == held and store.misses == misses and store.hits > 0
