"""BSGS diagonal linear layers over blocks equal dense matmul (hypothesis over shapes)."""

import numpy as np
from hypothesis import given, settings, strategies as st

from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.linear import compile_group
from he_inhibitor.circuit.ops import SlotOps


@st.composite
def problems(draw):
    T = 2 ** draw(st.integers(0, 3))
    n_slots = 2 * T * 2 ** draw(st.integers(0, 4))
    H = draw(st.sampled_from([1, 2, 4]))
    d_in = H * draw(st.integers(1, 10))
    n_mats = draw(st.integers(1, 3))
    d_outs = [H * draw(st.integers(1, 10)) for _ in range(n_mats)]
    heads = draw(st.booleans())
    mk = (lambda d: Layout.heads(T, n_slots, d, H)) if heads else (lambda d: Layout.natural(T, n_slots, d))
    sparse = draw(st.floats(0.0, 0.9))
    return T, n_slots, mk(d_in), [mk(d) for d in d_outs], sparse, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_bsgs_equals_dense(problem):
    T, n_slots, src, dsts, sparse, seed = problem
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(src.d, d.d)) * (rng.random((src.d, d.d)) >= sparse) for d in dsts]
    for w in ws:
        w[0, 0] = 1.0  # never all zero
    bs = [rng.normal(size=d.d) for d in dsts]
    group = compile_group(ws, bs, src, dsts)
    x = rng.normal(size=(T, src.d))
    packed = src.pack(x)
    packed_garbage = packed + np.tile(np.repeat([0.0, 1.0], T), n_slots // (2 * T)) * rng.normal(size=packed.shape)
    ops = SlotOps()
    outs = group.apply(ops, list(packed_garbage))
    for w, b, dst, ys in zip(ws, bs, dsts, outs):
        ys = np.stack(ys)
        np.testing.assert_allclose(dst.unpack(ys), x @ w + b, rtol=1e-10, atol=1e-10)
        # second halves (and unmapped blocks) are exactly zero: garbage never crosses over
        np.testing.assert_array_equal(ys, dst.pack(dst.unpack(ys)))
    # one lane: the baby steps of every input ciphertext a weight reads, once, and a Horner giant step per
    # (output, g > 0)
    giant = sum(group.giant_max(m, o) for m in group.matrices for o in range(m.out_layout.n_cts))
    read = {c for m in group.matrices for ts in m.terms.values() for c, _, _ in ts}
    assert ops.counts["rotate"] == group.rotation_count() == len(read) * group.baby_max + giant
    assert set(ops.steps) <= group.steps
    assert ops.counts["rescale"] == sum(d.n_cts for d in dsts)


class LaneOps(SlotOps):
    """SlotOps that records which lane each rotation and product ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.lane, self.work = 0, {}

    def set_lane(self, lane: int) -> None:
        self.lane = lane

    def rotate(self, x, k):
        self.work[self.lane] = self.work.get(self.lane, 0) + 1
        return super().rotate(x, k)

    def mul_plain(self, x, p):
        self.work[self.lane] = self.work.get(self.lane, 0) + 1
        return super().mul_plain(x, p)


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(2, 3))
def test_lanes_change_nothing_but_who_works(problem, lanes):
    """Split over lanes (by output or by input ciphertext, whichever loads the busiest lane less), a layer gives
    the same values; no lane does more than the whole layer on one lane, and the last op is on lane 0."""
    T, n_slots, src, dsts, sparse, seed = problem
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(src.d, d.d)) * (rng.random((src.d, d.d)) >= sparse) for d in dsts]
    for w in ws:
        w[0, 0] = 1.0
    group = compile_group(ws, [rng.normal(size=d.d) for d in dsts], src, dsts)
    packed = list(src.pack(rng.normal(size=(T, src.d))))
    one, split = LaneOps(), LaneOps()
    want = group.apply(one, packed)
    got = group.apply(split, packed, lanes)
    for a, b in zip(want, got):
        np.testing.assert_allclose(np.stack(b), np.stack(a), rtol=1e-12, atol=1e-12)
    assert max(split.work.values()) <= one.work[0]
    assert split.lane == 0
    assert split.counts["rotate"] == group.rotation_count(lanes) >= group.rotation_count()
    if sum(d.n_cts for d in dsts) >= 2:  # outputs to share: more than one lane works
        assert len(split.work) >= 2


def test_qkv_rotation_budget_at_T32():
    """d = 128 at T = 32 fills one ciphertext: Q, K, V share baby steps, ~2*sqrt(d) per matrix."""
    rng = np.random.default_rng(0)
    src = Layout.heads(32, 8192, 128, 4)
    ws = [rng.normal(size=(128, 128)) for _ in range(3)]
    g = compile_group(ws, [np.zeros(128)] * 3, src, [src] * 3)
    assert g.rotation_count() <= 3 * 2 * 12  # three separate 2*sqrt(128) layers would cost ~68
    assert g.rotation_count() < 40
    assert g.steps == {64, g.n1 * 64}
