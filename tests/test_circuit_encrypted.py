"""Encrypted execution (SEAL) of a small compiled student: levels, error bound, key set."""

import numpy as np
import pytest

import torch

from he_inhibitor.circuit.arrange import candidates
from he_inhibitor.circuit.encrypted import EncryptedExecutor, measured_depth
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.ir import levels_and_degrees
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.params import Precision, plan_student
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig

T = 8


@pytest.mark.slow
@pytest.mark.parametrize("rel_bias", [False, True])
def test_encrypted_matches_simulator_levels_and_bound(rel_bias):
    """A short and a full sentence, each in the circuit of its own attention plan, through the client's
    maps under SEAL; with a relative bias too (one vector plaintext added per shift)."""
    torch.manual_seed(0)
    cfg = StudentConfig(vocab_size=40, max_len=16, d_model=16, n_heads=4, d_ff=32, n_layers=1, dropout=0.0,
                        abs_poly=PolySpec(6), relu_poly=PolySpec(6), rel_bias=rel_bias)
    model = Student(cfg).double().eval().set_form("poly")
    with torch.no_grad():
        if rel_bias:
            model.layers[0].attn.rel_bias.uniform_(-0.3, 0.3)
    sw = from_torch(model)
    for n_valid, seed in ((5, 1), (T, 2)):
        # N = 8192 holds 3 levels: the attention (7 levels) runs through further client-aided refreshes
        shifts = candidates(n_valid, T, Layout.heads(T, 4096, 16, 4), 4)[0]
        plan = plan_student(sw, T, n=8192, precision=Precision(30, 40, 60), shifts=shifts)
        assert plan.refreshes > 0
        ex = EncryptedExecutor(plan.compiled, plan.params)
        assert set(ex.public.rotation_steps) == plan.compiled.circuit.rotation_steps()
        levels, _ = levels_and_degrees(plan.compiled.circuit)
        encoded = ex.prepare()  # every weight plaintext, at the level where the circuit uses it
        g = torch.Generator().manual_seed(seed)
        tok = torch.randint(0, 40, (1, T), generator=g)
        m = (torch.arange(T) < n_valid).double()[None]
        with torch.no_grad():
            want, x0 = model(tok, m)[0].numpy(), model.embed(tok, m)[0].numpy()
        sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m[0].numpy(), chain=plan.params.depth)
        np.testing.assert_allclose(sim.logits, want, rtol=1e-9, atol=1e-12)
        for runner in (ex,):  # lanes on Ray: tests/test_ray_lanes.py
            res = runner.run(x0, m[0].numpy())
            # every ciphertext sits at exactly the level the IR predicted, and the depth SEAL consumed
            # (through the refreshes) is the simulator's
            assert len(res.chain_index) == len(plan.compiled.circuit.nodes) - len(plan.compiled.circuit.consts)
            assert all(plan.params.depth - levels[i] == c for i, c in res.chain_index.items())
            assert measured_depth(plan.compiled.circuit, res.chain_index) == sim.depth == plan.depth
            assert res.refreshes == plan.refreshes
            err = np.abs(res.logits - sim.logits).max()
            assert err <= sim.noise_bound
            assert sim.noise_bound < 100 * err  # a useful bound, not an absurd one
        # prepare() foresaw every weight encoding the run needed
        assert sum(k[0] == "weight" for k in ex.weights.keys()) == encoded
