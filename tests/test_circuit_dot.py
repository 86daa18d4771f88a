"""Dot-product attention under the same compiler: plain == torch dot student (poly form), depth, keys, SEAL levels."""

import numpy as np
import pytest

import torch

from he_inhibitor.circuit import plain
from he_inhibitor.circuit.compile import compile_student
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.ir import OpKind, check, depth, levels_and_degrees
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.params import Precision, plan_student
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig

T, D, H, DFF = 8, 16, 4, 32


def dot_student(n_layers: int = 2, degree: int = 14, seed: int = 0) -> Student:
    """A random-weight dot-product student, float64, poly form, non-trivial frozen norms."""
    torch.manual_seed(seed)
    cfg = StudentConfig(vocab_size=40, max_len=16, d_model=D, n_heads=H, d_ff=DFF, n_layers=n_layers,
                        dropout=0.0, attention="dot", relu_poly=PolySpec(degree))
    model = Student(cfg).double().eval().set_form("poly")
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "running_var"):
                mod.running_mean.normal_(0.0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
    return model


def sentence(model: Student, n_valid: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, model.cfg.vocab_size, (1, T), generator=g)
    m = (torch.arange(T) < n_valid).double()[None]
    with torch.no_grad():
        return model(tok, m)[0].numpy(), model.embed(tok, m)[0].numpy(), m[0].numpy()


@pytest.mark.parametrize("n_slots,max_level", [(256, None), (128, 12), (512, None)])
def test_plain_executor_equals_torch_dot_student(n_slots, max_level):
    model = dot_student()
    comp = compile_student(from_torch(model), T, n_slots, max_level)
    for n_valid in (T, 3):
        want, x0, m = sentence(model, n_valid)
        got = comp.read_logits(plain.run(comp.circuit, comp.pack_input(x0, m), comp.public_plaintexts(m))["logits"])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    if max_level is not None:
        check(comp.circuit, max_level)
        assert comp.circuit.of_kind(OpKind.REFRESH)


def test_dot_depth_and_key_steps():
    sw = from_torch(dot_student())
    comp = compile_student(sw, T, 256)
    r, f = sw.layers[0].attn_relu.fn.depth, sw.layers[0].ffn_relu.fn.depth
    assert depth(comp.circuit) == 2 * ((4 + r) + (2 + f)) + 1
    bs, bpc = 2 * T, 256 // (2 * T)
    head_sums = {H * bs * 2**i for i in range(int(np.log2(bpc // H)))}
    # T // 2: the second lane's first shift; the same key set as the inhibitor's
    assert comp.circuit.rotation_steps() == {-T, 1, T // 2, bs, comp.n1 * bs} | head_sums
    assert sorted({n.lane for n in comp.circuit.nodes}) == [0, 1]


@pytest.mark.slow
def test_dot_encrypted_levels_equal_simulated_and_error_within_bound():
    model = dot_student(n_layers=1, degree=6)
    # N = 8192 holds 3 levels: the depth-14 circuit runs through client-aided refreshes
    plan = plan_student(from_torch(model), T, n=8192, precision=Precision(30, 40, 60))
    ex = EncryptedExecutor(plan.compiled, plan.params, seed=0)
    levels, _ = levels_and_degrees(plan.compiled.circuit)
    want, x0, m = sentence(model, 5)
    sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, chain=plan.params.depth)
    np.testing.assert_allclose(sim.logits, want, rtol=1e-9, atol=1e-12)
    res = ex.run(x0, m)
    assert all(plan.params.depth - levels[i] == c for i, c in res.chain_index.items())
    assert sim.depth == plan.depth and res.refreshes == plan.refreshes > 0
    err = np.abs(res.logits - sim.logits).max()
    assert err <= sim.noise_bound < 100 * err
    # lane 1 on a Ray actor: tests/test_ray_lanes.py (the dot-product student too)
