"""One executor interface; static per-stage statistics agree with the layout formulas."""

import numpy as np
import pytest


from he_inhibitor.circuit.arrange import one_region
from he_inhibitor.circuit.attention import head_sum_steps
from he_inhibitor.circuit.compile import compile_student
from he_inhibitor.circuit.executors import make_executor
from he_inhibitor.circuit.layout import Layout
from he_inhibitor.circuit.linear import compile_group
from he_inhibitor.circuit.params import Precision, plan_student
from he_inhibitor.circuit.stats import stage_stats
from he_inhibitor.circuit.weights import fold_layer, from_torch
from test_circuit_compile import H, T, random_student, sentence


def test_plain_and_simulate_share_one_interface():
    model = random_student(False)
    plan = plan_student(from_torch(model), T, n=8192, precision=Precision(28, 40, 60),
                        shifts=one_region(T, 6))  # 4 levels
    want, x0, m = sentence(model, 6)
    runs = {mode: make_executor(mode, plan.compiled, plan.params).run(x0, m) for mode in ("plain", "simulate")}
    np.testing.assert_allclose(runs["plain"].logits, want, rtol=1e-9)
    np.testing.assert_array_equal(runs["simulate"].logits, runs["plain"].logits)
    with pytest.raises(ValueError):
        make_executor("simulate", plan.compiled)
    with pytest.raises(ValueError):
        make_executor("bogus", plan.compiled, plan.params)


def test_stage_stats_match_the_layout_formulas():
    model = random_student(False)
    sw = from_torch(model)
    n_slots = 256
    comp = compile_student(sw, T, n_slots)
    stats = stage_stats(comp.circuit)
    assert list(stats) == ["layer0.attn", "layer0.ffn", "layer1.attn", "layer1.ffn", "head"]
    fw = fold_layer(sw.layers[0], H)
    xl = Layout.heads(T, n_slots, sw.d, H)
    fl = Layout.natural(T, n_slots, sw.d_ff)
    al = comp.att_layout  # the full bucket's plan: blocks of 2T, T shifts
    qkv = compile_group([fw.wq, fw.wk, fw.wv], [fw.bq, fw.bk, fw.bv], xl, [xl] * 3, comp.n1).rotation_count(2)
    wo = compile_group([fw.wo], [fw.bo], xl, [xl], comp.n1).rotation_count(2)
    attn = stats["layer0.attn"]
    head_sums = len(head_sum_steps(al, H))
    # K and V each rotate T - 1 times over the two lanes; Z is head-summed once per shift
    assert attn["rotate"] == qkv + wo + 2 * al.n_cts * (T - 1) + T * head_sums
    assert attn["levels"] == 2 + fw.abs_fn.depth + fw.attn_relu.depth  # QKV, the polynomials, Wo
    assert attn["poly"] == 2 * T * al.n_cts
    ffn = stats["layer0.ffn"]
    w1 = compile_group([fw.w1], [fw.b1], xl, [fl], comp.n1).rotation_count(2)
    w2 = compile_group([fw.w2], [fw.b2], fl, [xl], comp.n1).rotation_count(2)
    assert ffn["rotate"] == w1 + w2 and ffn["levels"] == 2 + fw.ffn_relu.depth
    assert stats["head"]["levels"] == 1
