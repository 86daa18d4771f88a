"""Properties of the torch student: shapes, padding, forms, variants, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from he_inhibitor.approx import weighted_fit
from he_inhibitor.model import Student, StudentConfig
from he_inhibitor.model.attention import InhibitorAttention, one_sided_bias
from he_inhibitor.model.nonlinear import Nonlinearity, PolySpec
from he_inhibitor.model.student import load_student, save_student

def batch(b: int = 3, t: int = 9, vocab: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (b, t), generator=g)
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return ids * mask, mask


@pytest.mark.parametrize("variant", [{}, {"signed": True}, {"recursive": True}, {"attention": "dot"}, {"center": True}])
def test_shapes(model_student_config, variant: dict) -> None:
    model = Student(model_student_config(**variant)).eval()
    ids, mask = batch()
    x, hidden, weights = model.encode(model.embed(ids, mask), mask, need_weights=True)
    assert x.shape == (3, 9, 16) and len(hidden) == 2 and weights[0].shape == (3, 9, 9)
    assert model(ids, mask).shape == (3, 2)


@pytest.mark.parametrize("form", ["exact", "poly"])
@pytest.mark.parametrize("variant", [{}, {"signed": True}, {"recursive": True}, {"attention": "dot"}, {"key_norm": 0.5},
                                     {"rel_bias": True}])
def test_padding_changes_nothing(model_student_config, form: str, variant: dict) -> None:
    """Extra padding (a larger token bucket) leaves every logit unchanged, in both forms."""
    torch.manual_seed(0)
    model = Student(model_student_config(**variant)).double().eval().set_form(form)
    ids, mask = batch()
    pad = torch.zeros(3, 7, dtype=ids.dtype)
    a = model(ids, mask)
    b = model(torch.cat([ids, pad], 1), torch.cat([mask, pad.bool()], 1))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_signed_equals_soft_threshold() -> None:
    """sum_j m_j [ReLU(V-Z) - ReLU(-V-Z)] == sum_j m_j (V + (|V-Z| - |V+Z|)/2) for Z >= 0."""
    torch.manual_seed(1)
    relu = Nonlinearity("relu", 1.0, PolySpec(8))
    absf = Nonlinearity("abs", 1.0, PolySpec(8))
    attn = InhibitorAttention(16, 2, absf, relu, signed=True).double().eval()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    q, k, v = attn.qkv(x, mask)
    z = attn.inhibition(q, k, mask).unsqueeze(-1)  # [B, H, T, T, 1]
    assert (z >= 0).all()
    vj = v.unsqueeze(2)
    m = mask[:, None, None, :, None].double()
    soft = (m * (vj + ((vj - z).abs() - (vj + z).abs()) / 2)).sum(3)
    h = soft.transpose(1, 2).reshape(2, 7, 16)
    expected = attn.out(attn.beta * h)
    got, _ = attn(x, mask)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["abs", "relu"]), degree=st.sampled_from([4, 6, 8, 14, 30]),
       bound=st.floats(0.1, 50.0), seed=st.integers(0, 10_000))
def test_poly_form_within_fit_bound(kind: str, degree: int, bound: float, seed: int) -> None:
    """On in-range inputs the poly form differs from exact by at most B * fit.max_error."""
    nl = Nonlinearity(kind, bound, PolySpec(degree)).double()
    x = (torch.rand(2000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * bound
    exact = nl(x)
    nl.set_form("poly")
    err = (nl(x) - exact).abs().max().item()
    # Training evaluates the fit in the monomial basis (parity Horner): its rounding grows with the
    # degree, to ~1e-7 B at degree 30, where Clenshaw on the Chebyshev series stays at 1e-10.
    assert err <= bound * (nl.fit.max_error + 1e-6)


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["abs", "relu"]), first=st.sampled_from([6, 14]), second=st.sampled_from([8, 30]),
       seed=st.integers(0, 10_000))
def test_set_spec_switches_the_polynomial(kind: str, first: int, second: int, seed: int) -> None:
    """After set_spec the poly form is the new fit's, not the cached old one."""
    nl = Nonlinearity(kind, 3.0, PolySpec(first)).double()
    nl.set_form("poly")
    x = (torch.rand(500, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * 3.0
    nl(x)  # builds and caches the first fit
    nl.set_spec(PolySpec(second))
    fresh = Nonlinearity(kind, 3.0, PolySpec(second)).double()
    fresh.set_form("poly")
    torch.testing.assert_close(nl(x), fresh(x))
    assert nl.fit.degree == second


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["abs", "relu"]), degree=st.sampled_from([6, 14]), ratio=st.floats(1.05, 4.0))
def test_poly_form_holds_stray_inputs_at_the_edge_only_while_training(kind: str, degree: int, ratio: float) -> None:
    """Training: an input beyond B is evaluated at the edge (finite, and the penalty sees it);
    inference: the bare polynomial, as the circuit evaluates it."""
    nl = Nonlinearity(kind, 2.0, PolySpec(degree)).double()
    nl.set_form("poly")
    x = torch.tensor([2.0 * ratio, -2.0 * ratio], dtype=torch.float64)
    nl.train()
    held = nl(x)
    torch.testing.assert_close(held, 2.0 * torch.from_numpy(nl.fit(np.array([1.0, -1.0]))))
    assert nl.penalties.mean.item() > 0 and nl.penalties.row_max.item() > 0
    nl.eval()
    torch.testing.assert_close(nl(x), 2.0 * torch.from_numpy(nl.fit(np.array([ratio, -ratio]))))


def test_range_penalty_only_outside_margin() -> None:
    nl = Nonlinearity("relu", 2.0, PolySpec(8), margin=0.05).train()
    nl(torch.tensor([0.5, -1.8]))
    assert nl.penalties.mean.item() == 0.0 and nl.penalties.row_max.item() == 0.0
    nl(torch.tensor([3.0]))
    assert nl.penalties.mean.item() == pytest.approx((1.5 - 0.95) ** 2)
    assert nl.penalties.row_max.item() == pytest.approx((1.5 - 0.95) ** 2)
    assert nl.max_ratio.item() == pytest.approx(1.5)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**16), edge=st.floats(0.5, 0.95))
def test_row_penalty_is_each_sentences_largest_real_input(lengths: list[int], seed: int, edge: float) -> None:
    """range_stats's row penalty: per sentence, relu(max |t| over its real tokens - edge)^2, averaged over
    sentences; padding (filled with garbage far beyond B) changes nothing, and only each sentence's largest
    input gets a gradient."""
    from he_inhibitor.model.nonlinear import range_stats

    g = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    valid = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).double().unsqueeze(-1)  # [B, T, 1]
    x = (torch.rand(b, t, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2)
    x = torch.where(valid.bool(), x, torch.full_like(x, 50.0)).requires_grad_()
    _, pen = range_stats(x, edge, True, valid)
    worst = [x[i, :n].detach().abs().max() for i, n in enumerate(lengths)]
    want = sum(max(float(w) - edge, 0.0) ** 2 for w in worst) / b
    assert pen.row_max.item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    pen.row_max.backward()
    for i, n in enumerate(lengths):
        touched = x.grad[i].nonzero()
        if worst[i] > edge:
            assert len(touched) == 1 and x[i][tuple(touched[0])].abs() == worst[i] and touched[0][0] < n
        else:
            assert len(touched) == 0


@pytest.mark.parametrize("fused", [False, True])
def test_layer_row_penalty_ignores_padding(model_student_config, fused: bool) -> None:
    """Through a layer's attention (the modules, or the fused kernel) and FFN in poly form: with garbage
    far beyond B at the padding, a padded batch's row penalty is the mean of each sentence's own, run
    alone without padding."""
    torch.manual_seed(0)
    model = Student(model_student_config(dropout=0.0)).set_form("poly").fuse(fused).train()
    layer = model.layers[0]
    with torch.no_grad():
        for _, m in model.nonlinearities():
            m.bound.fill_(1.0)  # below the real inputs, so that the penalty acts on them too
    _, mask = batch(b=4, t=9)
    x = torch.randn(4, 9, model.cfg.d_model)
    x = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 30.0))

    def row_penalty(x: torch.Tensor, mask: torch.Tensor) -> float:
        layer.attn(x, mask)
        layer.ffn(x, mask)
        return sum(p.row_max.item() for fn in (layer.attn.abs_fn, layer.attn.relu_fn, layer.ffn.relu_fn)
                   for p in [fn.penalties])

    together = row_penalty(x, mask)
    alone = [row_penalty(x[i : i + 1, :n], mask[i : i + 1, :n]) for i, n in enumerate(mask.sum(1).tolist())]
    assert together > 0
    assert together == pytest.approx(sum(alone) / len(alone), rel=1e-4)


@pytest.mark.parametrize("variant", [{}, {"recursive": True}, {"rel_bias": True}])
def test_save_load_round_trip(model_student_config, tmp_path, variant: dict) -> None:
    torch.manual_seed(2)
    model = Student(model_student_config(**variant))
    if model.layers[0].attn.rel_bias is not None:
        with torch.no_grad():
            model.layers[0].attn.rel_bias.uniform_(-0.5, 0.5)
    model.train()
    ids, mask = batch()
    model(ids, mask)  # moves the running statistics away from their initial values
    model.eval()
    save_student(model, tmp_path, half=False)
    loaded = load_student(tmp_path)
    torch.testing.assert_close(loaded(ids, mask), model(ids, mask))
    save_student(model, tmp_path, half=True)
    assert (loaded(ids, mask) - load_student(tmp_path)(ids, mask)).abs().max() < 1e-2


def test_load_refuses_bad_directory(model_student_config, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a student directory"):
        load_student(tmp_path)
    save_student(Student(model_student_config()), tmp_path)
    (tmp_path / "config.json").write_text('{"d_model": 16, "bogus": 1}')
    with pytest.raises(ValueError, match="bogus"):
        load_student(tmp_path)


def test_frozen_norm_is_affine_after_freezing(model_student_config) -> None:
    model = Student(model_student_config()).train()
    ids, mask = batch()
    model(ids, mask)
    model.freeze_norms()
    norm = model.norms1[0]
    x = torch.randn(2, 5, 16)
    scale, shift = norm.affine()
    torch.testing.assert_close(norm(x, torch.ones(2, 5, dtype=torch.bool)), x * scale + shift)


def test_sentence_longer_than_positions_refused(model_student_config) -> None:
    model = Student(model_student_config())
    with pytest.raises(ValueError, match="exceeds max_len"):
        model.embed(torch.zeros(1, 17, dtype=torch.long), torch.ones(1, 17, dtype=torch.bool))


def test_dot_product_exact_form_calibrates_its_substitute(model_student_config) -> None:
    """The softmax phase must still record the score range the poly substitute will see."""
    model = Student(model_student_config(attention="dot")).eval()
    ids, mask = batch()
    model(ids, mask)
    ratios = [float(m.max_ratio) for name, m in model.nonlinearities() if "attn" in name]
    assert ratios and all(r > 0 for r in ratios)


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(["abs", "relu"]), degree=st.sampled_from([6, 14]), bound=st.floats(0.5, 30.0),
       centre=st.floats(-0.6, 0.6), seed=st.integers(0, 10_000))
def test_weighted_fit_follows_the_observed_inputs(kind: str, degree: int, bound: float, centre: float, seed: int) -> None:
    """A weighted non-linearity refuses poly form until fitted; fitted to a histogram of its inputs, its
    poly form is B * fit(x / B) of that histogram's fit, and the fit survives a save/load round trip."""
    nl = Nonlinearity(kind, bound, PolySpec(degree, "weighted")).double()
    g = torch.Generator().manual_seed(seed)
    x = (centre + 0.1 * torch.randn(4000, generator=g, dtype=torch.float64)).clamp(-1, 1) * bound
    nl.set_form("poly")
    with pytest.raises(RuntimeError, match="not made yet"):
        nl(x)
    nl.set_form("exact")
    nl.collect_density(True)
    nl(x)
    hist = nl.density.numpy().copy()
    nl.fit_to_density()
    nl.collect_density(False)
    assert hist.sum() == x.numel()
    want = bound * weighted_fit(kind, degree, hist).__call__((x / bound).numpy())
    nl.set_form("poly")
    torch.testing.assert_close(nl(x), torch.from_numpy(want), rtol=0, atol=bound * 1e-6)
    assert nl.fit.method == "weighted" and nl.fit.degree == degree
    back = Nonlinearity(kind, bound, PolySpec(degree, "weighted")).double()
    back.load_state_dict({k: v.float() for k, v in nl.state_dict().items()})  # saved buffers are float32
    back.set_form("poly")
    torch.testing.assert_close(back(x), nl(x), rtol=0, atol=bound * 1e-5)


def test_weighted_student_round_trip(model_student_config, tmp_path) -> None:
    """A student with weighted fits keeps them through save_student/load_student (buffers stay float32)."""
    torch.manual_seed(3)
    model = Student(model_student_config(relu_poly=PolySpec(8, "weighted"))).eval()
    ids, mask = batch()
    for _, m in model.nonlinearities():
        if m.spec.weighted:
            m.collect_density(True)
    model(ids, mask)
    for _, m in model.nonlinearities():
        if m.spec.weighted:
            m.fit_to_density()
            m.collect_density(False)
    model.set_form("poly")
    save_student(model, tmp_path)
    loaded = load_student(tmp_path).set_form("poly")
    for (_, a), (_, b) in zip(model.nonlinearities(), loaded.nonlinearities()):
        if a.spec.weighted:
            np.testing.assert_allclose(b.fit.coeffs, a.fit.coeffs, rtol=1e-6)
    assert (loaded(ids, mask) - model(ids, mask)).abs().max() < 1e-2
    with pytest.raises(ValueError, match="not fitted to data"):
        Nonlinearity("relu", 1.0, PolySpec(8)).fit_to_density()


def test_key_norm_divides_the_sum_over_keys(model_student_config) -> None:
    """key_norm p scales each sentence's attention output by n^-p (n its length); beta starts 10^p higher."""
    torch.manual_seed(0)
    plain = Student(model_student_config()).double().eval()
    normed = Student(model_student_config(key_norm=0.5)).double().eval()
    normed.load_state_dict(plain.state_dict())  # the same weights, beta included
    ids, mask = batch()
    x = plain.embed(ids, mask)
    a, _ = plain.layers[0].attn(x, mask)
    b, _ = normed.layers[0].attn(x, mask)
    bias = plain.layers[0].attn.out.bias
    n = mask.sum(1).double()[:, None, None]
    torch.testing.assert_close(b - bias, (a - bias) / n.sqrt(), rtol=1e-10, atol=1e-12)
    assert float(Student(model_student_config(key_norm=0.5)).layers[0].attn.beta) == pytest.approx(0.2 * 10**0.5)
    with pytest.raises(ValueError, match="key_norm"):
        model_student_config(key_norm=0.5, attention="dot")
    with pytest.raises(ValueError, match="key_norm"):
        model_student_config(key_norm=1.5)


@pytest.mark.parametrize("bad,match", [({"method": "weightd"}, "unknown fit method"), ({"degree": 0}, "degree"),
                                       ({"floor": 0.0}, "floor")])
def test_bad_poly_spec_refused_at_config_load(bad: dict, match: str) -> None:
    """A misspelt fit fails when the config is read, not after an exact phase."""
    with pytest.raises(ValueError, match=match):
        StudentConfig.from_dict({"relu_poly": {"degree": 14, **bad}})


@pytest.mark.parametrize("form", ["exact", "poly"])
@pytest.mark.parametrize("rel_bias", [False, True])
def test_fused_attention_equals_the_modules(model_student_config, rel_bias: bool, form: str) -> None:
    """Student.fuse: the compiled kernel gives the same logits and gradients and pads nothing, in both forms,
    also with a relative bias (an [H, T, T] offset); in poly form it records the same ranges and range
    penalties (the loss's range term), clamping while training (bounds set below the inputs, so that
    the clamp and the penalty act) and not in eval (the config's bounds, which hold the inputs)."""
    torch.manual_seed(0)
    cfg = model_student_config(key_norm=0.5, rel_bias=rel_bias)
    plain, fused = Student(cfg), Student(cfg)
    with torch.no_grad():  # alpha and the bias start at 0: move them, so that the kernel's offset is checked too
        for layer in plain.layers:
            layer.attn.alpha.fill_(-0.3)
            if rel_bias:
                layer.attn.rel_bias.uniform_(-0.5, 0.5)
    fused.load_state_dict(plain.state_dict())
    plain.set_form(form)
    fused.set_form(form).fuse()
    ids, mask = batch()

    def set_bound(model: Student, train: bool) -> None:
        with torch.no_grad():
            for layer in model.layers:
                for fn, config_bound in ((layer.attn.abs_fn, cfg.abs_bound), (layer.attn.relu_fn, cfg.attn_relu_bound)):
                    fn.bound.fill_(1.5 if train else config_bound)

    def run(model: Student, train: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[float]]:
        model.train(train).zero_grad()
        for _, m in model.nonlinearities():
            m.max_ratio.zero_()
        logits = model(ids, mask)
        # exact form's kernel records no ranges (training before calibration has no range term)
        loss = logits.square().sum() + (
            model.range_penalty("mean") + model.range_penalty("row_max") if train and form == "poly" else 0.0)
        if train:
            loss.backward()
        seen = [float(m.max_ratio) for _, m in model.nonlinearities()] + (
            [float(p) for _, m in model.nonlinearities() for p in m.penalties] if train and form == "poly" else [])
        return logits, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, seen

    for train in (True, False):
        set_bound(plain, train), set_bound(fused, train)
        (want, want_grads, want_seen), (got, got_grads, got_seen) = run(plain, train), run(fused, train)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert want_grads.keys() == got_grads.keys()
        for name in want_grads:
            torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-5, msg=name)
        if form == "poly":
            assert (max(want_seen) > 1.0) == train  # training reaches the clamp; eval stays inside the bounds
            np.testing.assert_allclose(got_seen, want_seen, rtol=1e-5, atol=1e-7)
    pad = torch.zeros(3, 5, dtype=ids.dtype)
    torch.testing.assert_close(fused(torch.cat([ids, pad], 1), torch.cat([mask, pad.bool()], 1)), got,
                               rtol=1e-5, atol=1e-5)


def test_fused_attention_refuses_mixed_forms(model_student_config) -> None:
    """|x| and ReLU in different forms have no one kernel: a clear error, not a silent exact or poly pass."""
    model = Student(model_student_config()).fuse()
    model.layers[0].attn.abs_fn.set_form("poly")
    with pytest.raises(RuntimeError, match="one form"):
        model(*batch())


@settings(max_examples=30, deadline=None)
@given(n_heads=st.sampled_from([1, 2, 4, 8, 16]), L=st.integers(1, 20), c=st.floats(0.0, 5.0))
def test_one_sided_bias_pattern(n_heads: int, L: int, c: float) -> None:
    """A quarter of the heads start with c on every key after the query, a quarter on every key before it."""
    b = one_sided_bias(n_heads, L, c).numpy()  # [H, 2L - 1], index o + L - 1
    c = np.float32(c)  # the table is float32
    q = n_heads // 4
    o = np.arange(-(L - 1), L)
    assert b.shape == (n_heads, 2 * L - 1)
    np.testing.assert_array_equal(b[:q], np.broadcast_to(np.where(o > 0, c, 0.0), (q, 2 * L - 1)))
    np.testing.assert_array_equal(b[q : 2 * q], np.broadcast_to(np.where(o < 0, c, 0.0), (q, 2 * L - 1)))
    np.testing.assert_array_equal(b[2 * q :], 0.0)


def test_one_sided_heads_ignore_the_other_side(model_student_config) -> None:
    """With a large start, a left-looking head's output at query i does not move when tokens after i change,
    a right-looking one's not when tokens before i change (exact form, out = identity to read the heads)."""
    torch.manual_seed(0)
    cfg = model_student_config(n_heads=4, rel_bias=True, rel_bias_init=1e4)
    attn = Student(cfg).double().eval().layers[0].attn
    with torch.no_grad():
        attn.out.weight.copy_(torch.eye(16))
        attn.out.bias.zero_()
    d_h, i = 4, 4
    x = torch.randn(1, 9, 16, dtype=torch.double)
    mask = torch.ones(1, 9, dtype=torch.bool)
    after, before = x.clone(), x.clone()
    after[:, i + 1 :] = torch.randn(1, 9 - i - 1, 16, dtype=torch.double)
    before[:, :i] = torch.randn(1, i, 16, dtype=torch.double)
    out, out_after, out_before = (attn(v, mask)[0][0, i] for v in (x, after, before))
    torch.testing.assert_close(out_after[:d_h], out[:d_h])  # head 0 reads the left context
    torch.testing.assert_close(out_before[d_h : 2 * d_h], out[d_h : 2 * d_h])  # head 1 the right
    assert not torch.allclose(out_after[2 * d_h :], out[2 * d_h :])  # the zero-start heads see both sides
    with pytest.raises(ValueError, match="needs rel_bias"):
        model_student_config(rel_bias_init=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        model_student_config(rel_bias=True, rel_bias_init=-1.0)
