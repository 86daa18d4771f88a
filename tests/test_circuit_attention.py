"""The arranged layout reproduces inhibitor attention exactly, with work that follows n (docs/design.md §3.4, §4)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from he_inhibitor.approx import fit
from he_inhibitor.circuit import arrange
from he_inhibitor.circuit.arrange import ShiftPlan, candidates, full_plan, one_region
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
    H = draw(st.sampled_from([1, 2, 4]))
    d_h = 2 ** draw(st.integers(0, 2))
    d = H * d_h
    bpc = H * 2 ** draw(st.integers(2, 4))  # blocks per ciphertext of the bucket layout
    n = draw(st.integers(1, T))
    res = Layout.heads(T, 2 * T * bpc, d, H)
    plans = [one_region(T, n)] + candidates(n, T, res, H)
    plan = draw(st.sampled_from(plans))
    lanes = draw(st.integers(1, 3))
    rel = draw(st.one_of(st.none(), st.integers(T, T + 3)))  # positions a relative bias covers (>= T)
    return (res, H, n, plan, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**31 - 1)), lanes, rel)


ABS16, RELU16 = FitPoly(fit("abs", 16)), FitPoly(fit("relu", 16))


def arranged_attention(res, H, n, plan, q, k, v, abs_fn, relu_fn, z_bias, signed, lanes, rel_bias):
    """Q, K, V [T, d] arranged as the client packs them, the attention, H folded back: ([T, d], ops)."""
    att = plan.layout(res, H)
    spec = AttentionSpec(att, H, abs_fn, relu_fn, z_bias, plan.m, signed, lanes)
    qa = arrange.query_map(res, att, plan, n).apply(list(res.pack(q)))
    ka, va = (arrange.key_map(res, att, n).apply(list(res.pack(t))) for t in (k, v))
    masks = [arrange.shift_mask(att, plan, n, s) for s in range(plan.m)]
    offsets = ([arrange.shift_bias(att, plan, n, s, H, rel_bias, spec.z_offset) for s in range(plan.m)]
               if rel_bias is not None else [spec.z_offset] * plan.m)
    ops = SlotOps()
    h = inhibitor_attention(ops, spec, qa, ka, va, masks, offsets)
    return res.unpack(np.stack(arrange.fold_map(att, res, plan, n).apply(h))), ops, spec


@settings(max_examples=60, deadline=None)
@given(cases())
def test_arranged_attention_equals_direct(case):
    res, H, n, plan, signed, poly, seed, lanes, rel = case
    rng = np.random.default_rng(seed)
    T, d = res.T, res.d
    q, k, v = (rng.uniform(-0.5, 0.5, size=(T, d)) for _ in range(3))
    k[n:], v[n:] = rng.normal(size=(T - n, d)), rng.normal(size=(T - n, d))  # padding: garbage, never read
    m = (np.arange(T) < n).astype(float)
    c_z = rng.uniform(0.1, 1.0) / (d // H)
    abs_fn = Scaled(ABS16 if poly else EXACT_ABS, c_z)
    relu_fn = RELU16 if poly else EXACT_RELU
    z_bias = rng.uniform(0.0, 0.3)
    rel_bias = None if rel is None else rng.uniform(-0.3, 0.3, size=(H, 2 * rel - 1))
    got, ops, spec = arranged_attention(res, H, n, plan, q, k, v, abs_fn, relu_fn, z_bias, signed, lanes, rel_bias)
    want = direct(q, k, v, m, H, abs_fn, relu_fn, z_bias, signed, rel_bias)
    np.testing.assert_allclose(got[:n], want[:n], rtol=1e-11, atol=1e-11)
    assert not got[n:].any()  # the fold zeroes padding
    # the work follows the plan: m shifts, each a |x| per query ciphertext and a ReLU (two if signed) per value one
    n_ct = spec.layout.n_cts
    assert ops.counts["poly"] == plan.m * n_ct * (1 + (2 if signed else 1))
    assert set(ops.steps) <= spec.steps


class LaneOps(SlotOps):
    """SlotOps that also counts polynomial evaluations per lane."""

    def __init__(self) -> None:
        super().__init__()
        self.lane = 0
        self.polys_on: dict[int, int] = {}

    def set_lane(self, lane: int) -> None:
        self.lane = lane

    def poly(self, x, fn, mask=None):
        self.polys_on[self.lane] = self.polys_on.get(self.lane, 0) + 1
        return super().poly(x, fn, mask)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_lanes_share_the_polynomials_evenly(case):
    """Lanes run whole shifts or split the ciphertexts (a one-shift plan, say), whichever keeps the busiest
    lane's (shift, ciphertext) pairs fewer: every lane that can get work does, loads differ by at most one
    unit of the split, and the split beats or ties the other."""
    res, H, n, plan, signed, _, seed, lanes, _ = case
    rng = np.random.default_rng(seed)
    q, k, v = (rng.uniform(-0.5, 0.5, size=(res.T, res.d)) for _ in range(3))
    att = plan.layout(res, H)
    spec = AttentionSpec(att, H, Scaled(EXACT_ABS, 0.1), EXACT_RELU, 0.0, plan.m, signed, lanes)
    qa = arrange.query_map(res, att, plan, n).apply(list(res.pack(q)))
    ka, va = (arrange.key_map(res, att, n).apply(list(res.pack(t))) for t in (k, v))
    ops = LaneOps()
    inhibitor_attention(ops, spec, qa, ka, va, [1.0] * plan.m, [0.0] * plan.m)
    per_ct = 1 + (2 if signed else 1)
    units = plan.m if spec.split_shifts else att.n_cts
    assert len(ops.polys_on) == min(lanes, units) == spec.lane_count
    loads = list(ops.polys_on.values())
    unit = att.n_cts * per_ct if spec.split_shifts else plan.m * per_ct
    assert max(loads) - min(loads) <= unit
    assert sum(loads) == plan.m * att.n_cts * per_ct
    ceil = lambda a, b: -(-a // b)  # noqa: E731
    assert max(loads) == per_ct * min(ceil(plan.m, lanes) * att.n_cts, plan.m * ceil(att.n_cts, lanes))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 6), st.data())
def test_every_pair_meets_once(log_t, data):
    """Over a plan's shifts, the counted (query, key) pairs are each of [0, n)^2 exactly once, and every
    shift counts at least one pair: none is spent on padding alone."""
    T = 2**log_t
    n = data.draw(st.integers(1, T))
    res = Layout.heads(T, 2 * T * 64, 64, 4)
    plan = data.draw(st.sampled_from([one_region(T, n)] + candidates(n, T, res, 4)))
    seen = np.zeros((n, n), dtype=int)
    for s in range(plan.m):
        qs, ks = arrange.pairs(plan, n, s, plan.B)
        ok = qs >= 0
        assert ok.any()
        np.add.at(seen, (qs[ok], ks[ok]), 1)
    assert (seen == 1).all()


@given(st.integers(1, 64), st.integers(0, 3))
def test_candidates_hold_n_with_fewer_shifts_as_blocks_widen(n, extra):
    T = max(n, 1 << max(0, (n - 1).bit_length()))
    res = Layout.heads(T, 8192, 128, 16)
    plans = candidates(n, T, res, 16)
    assert plans and all(p.holds(n) for p in plans)
    assert [p.B for p in plans] == sorted(p.B for p in plans)
    assert all(a.m >= b.m for a, b in zip(plans, plans[1:]))
    assert full_plan(T).holds(T) and full_plan(T).m == T
    assert full_plan(T).holds(n) == (n == T)  # a shift that meets no key is never planned


def test_a_plan_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="cannot hold 20 tokens"):
        ShiftPlan(32, 4).regions(20)
    with pytest.raises(ValueError, match="power of two"):
        ShiftPlan(48, 4)


def test_maps_are_linear_and_batch():
    """The client's maps commute with masking (f(x + r) = f(x) + f(r)) and take leading batch axes."""
    rng = np.random.default_rng(0)
    res = Layout.heads(8, 2 * 8 * 16, 8, 2)
    plan = candidates(5, 8, res, 2)[0]
    att = plan.layout(res, 2)
    for f in arrange.maps(res, att, plan, 5).values():
        x = [rng.normal(size=f.src.n_slots) for _ in range(f.n_in)]
        r = [rng.normal(size=f.src.n_slots) for _ in range(f.n_in)]
        lhs = f.apply([a + b for a, b in zip(x, r)])
        rhs = [a + b for a, b in zip(f.apply(x), f.apply(r))]
        np.testing.assert_allclose(lhs, rhs, atol=1e-12)
        batch = f.apply([np.stack([a, b]) for a, b in zip(x, r)])
        np.testing.assert_allclose([c[1] for c in batch], f.apply(r), atol=1e-12)


@given(st.integers(0, 6), st.integers(1, 4), st.one_of(st.none(), st.integers(0, 80)))
def test_lanes_partition_the_shifts(log_t, lanes, main):
    """The dot-product attention's contiguous lanes still cover every shift once."""
    T = 2**log_t
    ranges = shift_lanes(T, lanes, main)
    assert [s for r in ranges for s in r] == list(range(T)) and all(len(r) for r in ranges)
    assert len(ranges) == min(lanes, T)
    if main is not None and len(ranges) > 1:
        assert len(ranges[0]) == max(1, min(main, T - len(ranges) + 1))
