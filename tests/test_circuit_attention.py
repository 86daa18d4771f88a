"""The packed layout reproduces inhibitor attention exactly (docs/design.md §3.4)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from he_inhibitor.approx import fit
from he_inhibitor.circuit.attention import AttentionSpec, inhibitor_attention, shift_lanes
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.ops import SlotOps
from he_inhibitor.circuit.poly import EXACT_ABS, EXACT_RELU, FitPoly, Scaled


def direct(q, k, v, m, n_heads, abs_fn, relu_fn, z_bias, signed, rel_bias=None):
    """Per-head inhibitor attention written the obvious way: [T, d] in, [T, d] out.

    rel_bias [H, 2L - 1]: b_h(j - i) added to Z_ij."""
    T, d = q.shape
    d_h = d // n_heads
    out = np.zeros((T, d))
    for h in range(n_heads):
        sl = slice(h * d_h, (h + 1) * d_h)
        z = abs_fn(q[:, None, sl] - k[None, :, sl]).sum(-1) + z_bias  # [i, j]
        if rel_bias is not None:
            L = (rel_bias.shape[1] + 1) // 2
            z = z + np.array([[rel_bias[h, j - i + L - 1] for j in range(T)] for i in range(T)])
        u = v[None, :, sl] - z[:, :, None]  # [i, j, k]
        r = relu_fn(u)
        if signed:
            r = r - relu_fn(-v[None, :, sl] - z[:, :, None])
        out[:, sl] = (m[None, :, None] * r).sum(1)
    return out


@st.composite
def cases(draw):
    T = 2 ** draw(st.integers(0, 3))
    H = draw(st.sampled_from([1, 2, 4, 8]))
    d_h = 2 ** draw(st.integers(0, 3))
    d = H * d_h
    # blocks per ciphertext: a multiple of H, possibly fewer than d (several ciphertexts)
    bpc = H * 2 ** draw(st.integers(0, 4))
    n_valid = draw(st.integers(1, T))
    lanes = draw(st.integers(1, 3))  # shifts split over lanes, lane 0 taking `main` of them
    main = draw(st.one_of(st.none(), st.integers(1, T)))
    rel = draw(st.one_of(st.none(), st.integers(T, T + 3)))  # positions a relative bias covers (>= T)
    return (T, H, d, bpc, n_valid, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**31 - 1)),
            lanes, main, rel)


ABS16, RELU16 = FitPoly(fit("abs", 16)), FitPoly(fit("relu", 16))


@settings(max_examples=50, deadline=None)
@given(cases())
def test_layout_attention_equals_direct(case):
    T, H, d, bpc, n_valid, signed, poly, seed, lanes, main, rel = case
    rng = np.random.default_rng(seed)
    lay = Layout.heads(T, 2 * T * bpc, d, H)
    d_h = d // H
    q, k, v = (rng.uniform(-0.5, 0.5, size=(T, d)) for _ in range(3))
    m = (np.arange(T) < n_valid).astype(float)
    c_z = rng.uniform(0.1, 1.0) / d_h
    abs_fn = Scaled(ABS16 if poly else EXACT_ABS, c_z)
    relu_fn = RELU16 if poly else EXACT_RELU
    z_bias = rng.uniform(0.0, 0.3)
    rel_bias = None if rel is None else rng.uniform(-0.3, 0.3, size=(H, 2 * rel - 1))
    spec = AttentionSpec(lay, H, abs_fn, relu_fn, z_bias, signed, lanes, main, rel_bias)
    ops = SlotOps()
    hs = inhibitor_attention(ops, spec, list(lay.pack(q)), list(lay.pack(k)), list(lay.pack(v)), spec.key_masks(m))
    got = np.stack(hs)
    want = direct(q, k, v, m, H, abs_fn, relu_fn, z_bias, signed, rel_bias)
    np.testing.assert_allclose(lay.unpack(got), want, rtol=1e-11, atol=1e-11)
    assert not got.reshape(lay.n_cts, -1, 2, T)[:, :, 1].any()  # H leaves with zero second halves
    n_ct = lay.n_cts
    n_sum = len(spec.head_sum_steps)
    assert ops.counts["rotate"] == 3 * n_ct + 2 * n_ct * (T - 1) + T * n_sum
    assert ops.counts["poly"] == T * n_ct * (2 if signed else 1) + T * n_ct
    assert set(ops.steps) <= spec.steps


def test_padded_keys_contribute_nothing_even_with_poly():
    """Keys at padded positions are multiplied by an exact zero after the polynomial."""
    rng = np.random.default_rng(1)
    T, H, d = 8, 2, 8
    lay = Layout.heads(T, 2 * T * 16, d, H)
    q, k, v = (rng.uniform(-0.5, 0.5, size=(T, d)) for _ in range(3))
    m = np.array([1, 1, 1, 0, 0, 0, 0, 0.0])
    spec = AttentionSpec(lay, H, Scaled(ABS16, 0.2), RELU16, 0.1)
    run = lambda kk, vv: lay.unpack(np.stack(inhibitor_attention(
        SlotOps(), spec, list(lay.pack(q)), list(lay.pack(kk)), list(lay.pack(vv)), spec.key_masks(m))))
    k2, v2 = k.copy(), v.copy()
    k2[3:], v2[3:] = rng.normal(size=(5, d)), rng.normal(size=(5, d))
    np.testing.assert_array_equal(run(k, v), run(k2, v2))


def test_relative_bias_shorter_than_the_bucket_is_refused():
    lay = Layout.heads(8, 2 * 8 * 4, 4, 2)
    with pytest.raises(ValueError, match="covers 4 positions"):
        AttentionSpec(lay, 2, EXACT_ABS, EXACT_RELU, 0.0, rel_bias=np.zeros((2, 7)))
    with pytest.raises(ValueError, match="relative bias must be"):
        AttentionSpec(lay, 2, EXACT_ABS, EXACT_RELU, 0.0, rel_bias=np.zeros((3, 15)))


@given(st.integers(0, 6), st.integers(1, 4), st.one_of(st.none(), st.integers(0, 80)))
def test_lanes_partition_the_shifts(log_t, lanes, main):
    T = 2**log_t
    ranges = shift_lanes(T, lanes, main)
    assert [s for r in ranges for s in r] == list(range(T)) and all(len(r) for r in ranges)
    assert len(ranges) == min(lanes, T)
    if main is not None and len(ranges) > 1:
        assert len(ranges[0]) == max(1, min(main, T - len(ranges) + 1))
