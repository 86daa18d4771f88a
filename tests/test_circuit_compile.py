"""The compiled student: plain executor == torch student in poly form; depth; key steps."""

import numpy as np
import pytest

import torch

from he_inhibitor.circuit import plain
from he_inhibitor.circuit.arrange import candidates, one_region
from he_inhibitor.circuit.compile import compile_student
from he_inhibitor.circuit.ir import CircuitError, OpKind, check, depth, levels_and_degrees, refresh_round_trips
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig

T, D, H, DFF = 8, 16, 4, 32


def random_student(signed: bool, seed: int = 0, relu_poly: PolySpec = PolySpec(14), n_heads: int = H,
                   abs_poly: PolySpec = PolySpec(14), key_norm: float = 0.0, qkv_conv: int = 0,
                   rel_bias: bool = False) -> Student:
    """A random-weight student of the shipped class, float64, poly form, non-trivial norms (and conv taps,
    relative biases)."""
    torch.manual_seed(seed)
    cfg = StudentConfig(vocab_size=40, max_len=16, d_model=D, n_heads=n_heads, d_ff=DFF, n_layers=2,
                        dropout=0.0, signed=signed, relu_poly=relu_poly, abs_poly=abs_poly, key_norm=key_norm,
                        qkv_conv=qkv_conv, rel_bias=rel_bias)
    model = Student(cfg).double().eval().set_form("poly")
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "running_var"):
                mod.running_mean.normal_(0.0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
        for layer in model.layers:
            layer.attn.alpha.fill_(-0.3)  # |alpha| enters Z
            for conv in layer.attn.qkv.convs or ():
                conv.weight.uniform_(-0.8, 0.8)
            if layer.attn.rel_bias is not None:
                layer.attn.rel_bias.uniform_(-0.3, 0.3)
    return model


def sentence(model: Student, n_valid: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, model.cfg.vocab_size, (1, T), generator=g)
    m = (torch.arange(T) < n_valid).double()[None]
    with torch.no_grad():
        return model(tok, m)[0].numpy(), model.embed(tok, m)[0].numpy(), m[0].numpy()


def logits(comp, x0, m):
    return comp.read_logits(plain.run(comp.circuit, comp.pack_input(x0, m), comp.public_plaintexts(m))["logits"])


@pytest.mark.parametrize("n_slots,signed,max_level,n_heads,key_norm", [
    (256, False, None, H, 0.0), (256, True, None, H, 0.0), (128, False, 12, H, 0.0),
    (512, False, None, H, 0.0), (256, False, None, 8, 0.0), (256, False, None, H, 0.5),
    (128, True, 12, H, 1.0), (256, False, 4, H, 0.0)])
def test_plain_executor_equals_torch_student(n_slots, signed, max_level, n_heads, key_norm):
    """For every sentence length n, with n shifts in one region and with every plan a bucket may choose
    for it; also with the sum over keys divided by n^key_norm (the key masks carry it exactly), on
    several ciphertexts (128 slots) and refreshed: also on the shortest chain, four levels."""
    model = random_student(signed, n_heads=n_heads, key_norm=key_norm)
    sw = from_torch(model)
    res = Layout.heads(T, n_slots, sw.d, n_heads)
    for n_valid in range(1, T + 1):
        want, x0, m = sentence(model, n_valid)
        for p in [one_region(T, n_valid)] + candidates(n_valid, T, res, n_heads):
            comp = compile_student(sw, T, n_slots, max_level, shifts=p)
            np.testing.assert_allclose(logits(comp, x0, m), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    assert comp.circuit.of_kind(OpKind.REFRESH)  # the client folds H back and arranges each later layer
    if max_level is not None:
        check(comp.circuit, max_level)


@pytest.mark.parametrize("n_slots,signed,max_level", [(256, False, None), (128, True, 12), (512, False, None)])
def test_plain_executor_equals_torch_student_with_relative_bias(n_slots, signed, max_level):
    """b_h(j - i) rides in one plaintext per shift: exact on one or several ciphertexts, refreshed or not."""
    model = random_student(signed, key_norm=0.5, rel_bias=True)
    sw = from_torch(model)
    assert sw.layers[0].rel_bias.shape == (H, 2 * model.cfg.max_len - 1)
    comp = compile_student(sw, T, n_slots, max_level)
    plain_comp = compile_student(from_torch(random_student(signed, key_norm=0.5)), T, n_slots, max_level)
    assert depth(comp.circuit, True) == depth(plain_comp.circuit, True)  # the bias costs no level
    res = Layout.heads(T, n_slots, sw.d, H)
    for n_valid in (T, 5, 3, 1):
        want, x0, m = sentence(model, n_valid)
        for c in [compile_student(sw, T, n_slots, max_level, shifts=p)
                  for p in [one_region(T, n_valid)] + candidates(n_valid, T, res, H)]:
            np.testing.assert_allclose(logits(c, x0, m), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_plain_executor_equals_torch_student_with_weighted_fits():
    """Weighted |x| and ReLU fits (coefficients fitted to the student's own inputs) compile as they are."""
    model = random_student(False, relu_poly=PolySpec(14, "weighted"), abs_poly=PolySpec(14, "weighted")).set_form("exact")
    weighted = [m for _, m in model.nonlinearities() if m.spec.weighted]
    for m in weighted:
        m.collect_density(True)
    sentence(model, T)
    for m in weighted:
        m.fit_to_density()
        m.collect_density(False)
    model.set_form("poly")
    assert {nl.fn.fit.method for layer in from_torch(model).layers
            for nl in (layer.abs_fn, layer.attn_relu, layer.ffn_relu)} == {"weighted"}
    for n_valid in (T, 3):
        want, x0, m = sentence(model, n_valid)
        comp = compile_student(from_torch(model), T, 256, shifts=one_region(T, n_valid))
        np.testing.assert_allclose(logits(comp, x0, m), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_token_convolutions_are_refused():
    """A convolution over neighbouring tokens does not commute with the arranged layout (tokens repeat
    and wrap there): the compiler says so rather than compile something else."""
    with pytest.raises(CircuitError, match="token convolutions"):
        compile_student(from_torch(random_student(False, qkv_conv=3)), T, 256)


def test_depth_and_key_steps():
    model = random_student(False)
    sw = from_torch(model)
    comp = compile_student(sw, T, 256)
    a, r, f = (sw.layers[0].abs_fn.fn.depth, sw.layers[0].attn_relu.fn.depth, sw.layers[0].ffn_relu.fn.depth)
    assert depth(comp.circuit, through_refresh=True) == 2 * ((2 + a + r) + (2 + f)) + 1
    assert depth(comp.circuit) == 4 + f  # the output: Wo, the FFN and the head after the last refresh
    # the deepest segment between the client's refreshes: the attention's polynomials, or Wo + FFN + next QKV
    assert check(comp.circuit, 99).max() == max(a + r, 4 + f)
    steps = comp.circuit.rotation_steps()
    bs, bpc = 2 * T, 256 // (2 * T)
    head_sums = {H * bs * 2**i for i in range(int(np.log2(bpc // H)))}
    # 1 and 2: the shifts on two lanes (lane 1 starts one shift on, each lane strides 2); -T: the pooled label;
    # the linear layers all run in the bucket layout (the client arranges the attention's inputs)
    assert steps == {-T, 1, 2, bs, comp.n1 * bs} | head_sums


def test_short_chain_puts_work_before_a_refresh_on_its_last_levels():
    """On the shortest chain (the ReLUs' depth) the compiler refreshes where the chain runs out and
    places the work before a refresh on the chain's last levels (compile.qk_room, wo_room): every
    linear layer rotates at chain index 2 or below, every |x| polynomial starts exactly its depth from the
    end, and the round trips are the five per layer that chain needs."""
    model = random_student(False, abs_poly=PolySpec(6))
    sw = from_torch(model)
    a, r, f = (sw.layers[0].abs_fn.fn.depth, sw.layers[0].attn_relu.fn.depth, sw.layers[0].ffn_relu.fn.depth)
    assert a < r == f  # |x| then fits with a level to spare, as in the shipped student
    L = r
    comp = compile_student(from_torch(model), T, 256, max_level=L)
    c = comp.circuit
    consumed, _ = levels_and_degrees(c)
    index = L - consumed  # chain index: levels left
    bs, bpc = 2 * T, 256 // (2 * T)
    head_sums = {H * bs * 2**i for i in range(int(np.log2(bpc // H)))}
    linear = {bs, comp.n1 * bs} - head_sums
    rotations = [i for i in c.of_kind(OpKind.ROTATE) if c.nodes[i].arg in linear]
    assert rotations and max(index[i] for i in rotations) <= 2
    abs_polys = [i for i in c.of_kind(OpKind.POLY) if c.nodes[i].fn.depth == a and "attn" in c.nodes[i].stage]
    assert abs_polys and {int(index[c.nodes[i].args[0]]) for i in abs_polys} == {a}
    # per layer: the arranging refresh, Z, the fold, the FFN's hidden ciphertexts before and after the ReLU
    assert refresh_round_trips(c) == 5 * len(sw.layers)
