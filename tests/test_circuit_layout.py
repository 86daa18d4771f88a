"""Packing rules of docs/design.md §3: feature-major blocks of 2T, interleaved heads, rotations."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from he_inhibitor.circuit.layout import Layout, copy_first_half, head_interleaved_order, rot


@st.composite
def layouts(draw, interleave: bool | None = None):
    T = 2 ** draw(st.integers(0, 4))
    n_slots = 2 * T * 2 ** draw(st.integers(0, 4))
    heads = draw(st.sampled_from([1, 2, 4]))
    d = heads * draw(st.integers(1, 12))
    use_heads = draw(st.booleans()) if interleave is None else interleave
    if use_heads:
        return Layout.heads(T, n_slots, d, heads), heads
    return Layout.natural(T, n_slots, d), heads


@settings(max_examples=60, deadline=None)
@given(layouts(), st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(lh, seed):
    lay, _ = lh
    x = np.random.default_rng(seed).normal(size=(lay.T, lay.d))
    cts = lay.pack(x)
    assert cts.shape == (lay.n_cts, lay.n_slots)
    np.testing.assert_array_equal(lay.unpack(cts), x)
    # every value once; second halves zero
    assert np.count_nonzero(cts) == np.count_nonzero(x)
    halves = cts.reshape(lay.n_cts, -1, 2, lay.T)
    assert not halves[:, :, 1].any()


@settings(max_examples=40, deadline=None)
@given(layouts(), st.integers(0, 2**31 - 1))
def test_copy_first_half_and_token_shift(lh, seed):
    lay, _ = lh
    x = np.random.default_rng(seed).normal(size=(lay.T, lay.d))
    for ct in lay.pack(x):
        both = copy_first_half(ct, lay.T).reshape(-1, 2, lay.T)
        np.testing.assert_array_equal(both[:, 0], both[:, 1])
        full = copy_first_half(ct, lay.T)
        for s in range(lay.T):  # rot by s puts token (i+s) mod T beside token i
            shifted = rot(full, s).reshape(-1, 2, lay.T)[:, 0]
            np.testing.assert_array_equal(shifted, np.roll(ct.reshape(-1, 2, lay.T)[:, 0], -s, axis=1))


@settings(max_examples=40, deadline=None)
@given(layouts(interleave=True), st.integers(0, 2**31 - 1))
def test_head_rotate_and_sum_is_cyclic_over_one_head(lh, seed):
    lay, H = lh
    if lay.blocks_per_ct % H:
        return
    x = np.random.default_rng(seed).normal(size=(lay.T, lay.d))
    cts = lay.pack(x)
    acc = cts.sum(axis=0)  # ciphertexts first: same head pattern in each
    step = H * lay.block_size
    while step < lay.n_slots:
        acc = acc + rot(acc, step)
        step *= 2
    d_h = lay.d // H
    want = x.reshape(lay.T, H, d_h).sum(axis=2)  # [T, H]
    blocks = acc.reshape(-1, 2, lay.T)[:, 0]  # [bpc, T]
    for b in range(lay.blocks_per_ct):
        np.testing.assert_allclose(blocks[b], want[:, b % H], atol=1e-12)


def test_head_order_and_fill():
    order = head_interleaved_order(8, 2)  # d_h = 4
    assert list(order) == [0, 2, 4, 6, 1, 3, 5, 7]
    lay = Layout.heads(32, 8192, 128, 4)
    assert (lay.blocks_per_ct, lay.n_cts) == (128, 1)
    assert Layout.heads(64, 8192, 128, 4).n_cts == 2
    assert Layout.natural(32, 8192, 256).n_cts == 2


def test_rot_matches_seal_convention():
    v = np.arange(8.0)
    assert list(rot(v, 1)) == [1, 2, 3, 4, 5, 6, 7, 0]
    assert list(rot(v, -1)) == [7, 0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("bad", [dict(T=3, n_slots=12, block_of=(0,)), dict(T=4, n_slots=12, block_of=(0,)),
                                 dict(T=4, n_slots=16, block_of=(0, 0))])
def test_invalid_layouts_refused(bad):
    with pytest.raises(ValueError):
        Layout(**bad)
