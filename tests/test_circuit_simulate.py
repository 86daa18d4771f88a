"""The simulator: same logits as plain, exact depth and primitive counts, loud range failures,
parameters from depth (never below 128-bit security), refresh counting."""

import numpy as np
import pytest

import torch

from he_inhibitor.circuit import plain
from he_inhibitor.circuit.arrange import one_region
from he_inhibitor.circuit.compile import compile_student
from he_inhibitor.circuit.interpret import answered, interpret
from he_inhibitor.circuit.ir import OpKind, RangeError, check, depth
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.params import Precision, chain_prices, plan_student
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.ckks import CkksParams, InsecureParametersError
from test_circuit_compile import T, random_student, sentence


@pytest.fixture(scope="module")
def student():
    model = random_student(False)
    return model, from_torch(model)


def test_simulate_matches_plain_and_counts(student):
    model, sw = student
    comp = compile_student(sw, T, 256, shifts=one_region(T, 5))
    want, x0, m = sentence(model, 5)
    r = simulate(comp, NoiseModel(512, 30), x0, m)
    got = comp.read_logits(plain.run(comp.circuit, comp.pack_input(x0, m), comp.public_plaintexts(m))["logits"])
    np.testing.assert_array_equal(r.logits, got)
    # the refreshes are the client's maps: per layer one arranging Q, K, V (and x) and one folding H back
    assert r.depth == depth(comp.circuit, through_refresh=True) and r.round_trips == 4
    assert r.refreshes == len(comp.circuit.of_kind(OpKind.REFRESH))
    totals = r.totals()
    assert totals["rotate"] == len(comp.circuit.of_kind(OpKind.ROTATE))
    polys = [comp.circuit.nodes[i].fn for i in comp.circuit.of_kind(OpKind.POLY)]
    plan_mults = sum(model.layers[0].attn.abs_fn.fit.plan().counts["mults"] for _ in polys)
    assert totals["mul"] == totals["relinearize"] == plan_mults  # every fit here has the same plan size
    assert 0 < r.noise_bound < r.worst_case_bound
    assert r.noise_bound < 1e-2  # 30-bit scale, small ring
    assert 0 < r.approx_error <= r.approx_worst_case
    model.set_form("exact")  # same weights, exact |x| and ReLU
    try:
        assert r.approx_error == pytest.approx(np.abs(r.logits - _exact_logits(model, x0, m)).max(), rel=1e-9)
    finally:
        model.set_form("poly")
    assert all(x.ratio < 1 for x in r.ranges)


def test_on_refresh_and_on_node_see_what_the_walk_makes(student):
    """The hooks scripts/noise_by_refresh.py checks SEAL against: on_node once per node made, in circuit order;
    on_refresh once per round trip, in order, before it is answered, each value the plain circuit's at that
    point and carrying a positive predicted bound."""
    model, sw = student
    comp = compile_student(sw, T, 256, shifts=one_region(T, 5))
    _, x0, m = sentence(model, 5)
    seen, plain_points, made = [], [], []
    noise = NoiseModel(512, 30)
    r = simulate(comp, noise, x0, m, on_refresh=seen.append, on_node=lambda i, node, v: made.append((i, node, v)))
    order = [i for i, _, _ in made]
    assert order == sorted(set(order))  # each node once, in circuit order
    for kind in (OpKind.POLY, OpKind.REFRESH, OpKind.MUL_PLAIN):
        assert set(comp.circuit.of_kind(kind)) <= set(order)
    assert all(comp.circuit.nodes[i] is node for i, node, _ in made)
    public = comp.public_plaintexts(m)

    def record(point):
        plain_points.append(point.values)
        return plain.refreshed(point, public)

    answered(interpret(comp.circuit, plain.PlainBackend(public), comp.pack_input(x0, m)), record)
    assert len(seen) == r.round_trips == len(plain_points)
    for point, want in zip(seen, plain_points):
        assert len(point.values) == len(want)
        for got, value in zip(point.values, want):
            np.testing.assert_array_equal(got.v, value)
            assert (got.e.bound(noise.k) > 0).all()


def _exact_logits(model, x0, m):
    x = torch.as_tensor(x0)[None]
    mask = torch.as_tensor(m)[None]
    with torch.no_grad():
        xl, _, _ = model.encode(x, mask)
        return model.classifier(model.pool(xl, mask))[0].numpy()


def test_out_of_range_input_fails_loudly(student):
    model, sw = student
    comp = compile_student(sw, T, 256, shifts=one_region(T, 5))
    _, x0, m = sentence(model, 5)
    with pytest.raises(RangeError, match="leaves the interval"):
        simulate(comp, NoiseModel(512, 30), 1000 * x0, m)


def test_parameters_from_depth_and_refresh(student):
    _, sw = student
    roomy = plan_student(sw, T, n=32768, precision=Precision(20, 40, 40))  # 40 levels
    # the chain holds the deepest segment between the client's refreshes (the attention, 1 + a + r)
    assert roomy.params.depth == check(roomy.compiled.circuit, 99).max()
    assert roomy.round_trips == 4  # no cost table at N = 32768: the fewest round trips
    tight = plan_student(sw, T, n=16384)
    assert tight.depth == roomy.depth and tight.params.depth <= Precision().max_levels(16384)
    assert tight.params.total_bits <= 438
    # at N = 16384 the shipped cost table prices every chain; the cheapest wins, and a shorter chain
    # never needs fewer round trips, each held by its chain
    prices = chain_prices(sw, T, n=16384)
    assert tight.params.depth == min(prices, key=lambda c: c.seconds).levels
    assert all(a.levels > b.levels and a.round_trips <= b.round_trips for a, b in zip(prices, prices[1:]))
    for c in prices:
        assert check(c.compiled.circuit, c.levels).max() <= c.levels
    # a forced chain (compile --levels) is that candidate's circuit; one too short or too long is refused
    longest = prices[0]
    forced = plan_student(sw, T, n=16384, precision=Precision(levels=longest.levels))
    assert forced.params.depth == longest.levels and forced.round_trips == longest.round_trips
    for bad in (prices[-1].levels - 1, Precision().max_levels(16384) + 1):
        with pytest.raises(ValueError, match=f"a chain of {bad} levels"):
            plan_student(sw, T, n=16384, precision=Precision(levels=bad))
    with pytest.raises(InsecureParametersError):
        CkksParams.for_depth(12, 8192, 30, 50, 50)
