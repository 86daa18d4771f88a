"""Lanes on Ray (embedded, 2 CPUs): same answer as one process, keys sent once, killed workers survived or reported."""

import os
import signal

import numpy as np
import pytest

import torch
import ray

from he_inhibitor.circuit.encrypted import EncryptedExecutor, measured_depth
from he_inhibitor.circuit.ir import OpKind, levels_and_degrees
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.params import Precision, plan_student
from he_inhibitor.circuit.executors import PlainExecutor
from he_inhibitor.circuit.ray_lanes import (
    LaneError, RayLaneExecutor, RayLanes, lanes_of, segments_of, start_ray, with_lanes,
)
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.weights import from_torch
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig

T = 8
LANES = 3  # two lane workers beside lane 0


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    cfg = StudentConfig(vocab_size=40, max_len=16, d_model=16, n_heads=4, d_ff=32, n_layers=1, dropout=0.0,
                        abs_poly=PolySpec(6), relu_poly=PolySpec(6))
    model = Student(cfg).double().eval().set_form("poly")
    sw = from_torch(model)
    # N = 8192 holds 3 levels: the circuit runs through client-aided refreshes
    plan = with_lanes(plan_student(sw, T, n=8192, precision=Precision(30, 40, 60)), LANES, sw)
    return model, plan


def sentence(model, n_valid, seed):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, 40, (1, T), generator=g)
    m = (torch.arange(T) < n_valid).double()[None]
    with torch.no_grad():
        return model.embed(tok, m)[0].numpy(), m[0].numpy()


@pytest.fixture(scope="module")
def cluster():
    started = start_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def test_segments_cover_the_lanes_once(student):
    _, plan = student
    c = plan.compiled.circuit
    assert lanes_of(c) == list(range(LANES))
    segs = segments_of(c)
    assert {s.lane for s in segs} == set(range(1, LANES))
    covered = [i for s in segs for i in s.nodes]
    assert sorted(covered) == [i for i, n in enumerate(c.nodes) if n.lane and n.op is not OpKind.CONST]
    owner = {i: k for k, s in enumerate(segs) for i in s.nodes}
    for k, s in enumerate(segs):
        assert all(c.nodes[i].lane == 0 for i in s.inputs) and s.outputs
        assert all(owner[i] < k and segs[owner[i]].lane == s.lane for i in s.links)  # worker to worker
        # the caller walks lane 0 in order: every lane-0 input exists before any lane-0 node reads an output
        readers = [j for j, n in enumerate(c.nodes) if n.lane == 0 and set(n.args) & set(s.nodes)]
        assert max(s.inputs, default=-1) < min(readers, default=len(c.nodes))
    # refreshes inside the attention (N = 8192): the lanes are cut at each client round trip
    assert len(segs) > LANES - 1
    # the plain executor does not care about lanes: recompiling for more lanes changes nothing it computes
    x0, m = sentence(student[0], T, 1)
    two = plan_student(from_torch(student[0]), T, n=8192, precision=Precision(30, 40, 60)).compiled
    np.testing.assert_allclose(PlainExecutor(plan.compiled).run(x0, m).logits, PlainExecutor(two).run(x0, m).logits,
                               rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_lanes_on_ray_equal_plain_within_bound_and_keys_go_once(student, cluster):
    model, plan = student
    ex = EncryptedExecutor(plan.compiled, plan.params)
    ex.prepare()
    levels, _ = levels_and_degrees(plan.compiled.circuit)
    with RayLaneExecutor(ex) as lanes:
        assert len(lanes.pool.actors) == LANES - 1
        for seed in (1, 2):  # the default attention plan holds full sentences (n = T)
            x0, m = sentence(model, T, seed)
            sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, chain=plan.params.depth)
            res = lanes.run(x0, m)
            # every ciphertext, local or from a lane worker, at the level the IR predicted
            assert len(res.chain_index) == len(plan.compiled.circuit.nodes) - len(plan.compiled.circuit.consts)
            assert all(plan.params.depth - levels[i] == ci for i, ci in res.chain_index.items())
            assert measured_depth(plan.compiled.circuit, res.chain_index) == plan.depth
            err = np.abs(res.logits - sim.logits).max()
            assert err <= sim.noise_bound
            assert lanes.last["store_bytes_out"] > 0 and lanes.last["store_bytes_in"] > 0
        stats = lanes.pool.stats()
    # two sentences, one warm-up: each worker loaded the keys and the circuit exactly once
    assert all(s["key_loads"] == {lanes.key_id: 1} for s in stats)
    assert all(s["circuit_loads"] == {lanes.circuit_id: 1} for s in stats)
    assert sum(s["segments_run"] for s in stats) == 2 * len(segments_of(plan.compiled.circuit))


@pytest.mark.slow
def test_killed_worker_is_restarted_and_the_segment_retried(student, cluster):
    model, plan = student
    ex = EncryptedExecutor(plan.compiled, plan.params)
    x0, m = sentence(model, T, 3)
    sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, chain=plan.params.depth)
    with RayLanes(LANES - 1, max_restarts=2, timeout_s=300) as pool, RayLaneExecutor(ex, pool) as lanes:
        before = [s["pid"] for s in pool.stats()]
        killed = []

        def kill(k, seg):  # mid-sentence: the segment was just submitted to this worker
            if not killed:
                killed.append(before[(seg.lane - 1) % len(before)])
                os.kill(killed[0], signal.SIGKILL)

        lanes.on_submit = kill
        res = lanes.run(x0, m)
        assert killed
        assert np.abs(res.logits - sim.logits).max() <= sim.noise_bound  # the retry gave the right answer
        after = pool.stats()
        assert killed[0] not in [s["pid"] for s in after]  # a new process took its place
        restarted = [s for s in after if s["pid"] not in before]
        assert len(restarted) == 1 and restarted[0]["key_loads"] == {lanes.key_id: 1}  # keys reloaded once


@pytest.mark.slow
def test_killed_worker_beyond_its_restarts_is_reported(student, cluster):
    model, plan = student
    ex = EncryptedExecutor(plan.compiled, plan.params)
    x0, m = sentence(model, T, 4)
    with RayLanes(LANES - 1, max_restarts=0, timeout_s=120) as pool, RayLaneExecutor(ex, pool) as lanes:
        pids = [s["pid"] for s in pool.stats()]
        lanes.on_submit = lambda k, seg: os.kill(pids[(seg.lane - 1) % len(pids)], signal.SIGKILL)
        with pytest.raises(LaneError, match="lane worker failed"):
            lanes.run(x0, m)


@pytest.mark.slow
def test_dot_product_student_on_ray_lanes(cluster):
    from test_circuit_dot import dot_student
    from test_circuit_dot import sentence as dot_sentence

    model = dot_student(n_layers=1, degree=6)
    plan = plan_student(from_torch(model), T, n=8192, precision=Precision(30, 40, 60))
    ex = EncryptedExecutor(plan.compiled, plan.params, seed=0)
    _, x0, m = dot_sentence(model, 5)
    sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, chain=plan.params.depth)
    res = ex.run(x0, m)
    with RayLaneExecutor(ex) as lanes:  # lane 1 (half the shifts) on a Ray actor: same levels, same bound
        res2 = lanes.run(x0, m)
    assert res2.chain_index == res.chain_index
    assert np.abs(res2.logits - sim.logits).max() <= sim.noise_bound


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory):
    """The CLI tests' tiny bundle (one layer, buckets 8 and 16, N = 8192)."""
    from test_circuit_cli import WORDS

    from he_inhibitor.cli import main
    from he_inhibitor.model.student import save_student
    from he_inhibitor.vocab import SPECIALS, make_tokenizer

    d = tmp_path_factory.mktemp("ray-cli")
    torch.manual_seed(0)
    cfg = StudentConfig(vocab_size=len(SPECIALS) + len(WORDS), max_len=16, d_model=16, n_heads=4, d_ff=32,
                        n_layers=1, dropout=0.0, abs_poly=PolySpec(6), relu_poly=PolySpec(6))
    save_student(Student(cfg).eval(), d / "student")
    make_tokenizer(list(SPECIALS) + WORDS).save(str(d / "student" / "tokenizer.json"))
    assert main(["compile", "--model", str(d / "student"), "--out", str(d / "b"), "--buckets", "8", "16",
                 "--n", "8192"]) == 0
    return d / "b"


@pytest.mark.slow
def test_predict_reports_its_lanes(cluster, cli_bundle, capsys):
    import json

    from test_circuit_cli import LONG, SHORT

    from he_inhibitor.cli import main

    # three lanes: the bundle (two lanes) recompiled, lanes 1 and 2 on two Ray actors; a lane needs a shift
    # of its own, so a sentence whose attention plan has fewer shifts runs on fewer lanes
    assert main(["predict", "--circuit", str(cli_bundle), "--mode", "encrypted", "--lanes", "3", "--json", LONG]) == 0
    r = json.loads(capsys.readouterr().out)
    shifts = r["plan"]["shifts"] if r.get("plan") else r["T"]
    assert r["lanes"] == min(3, shifts) > 1 and r["ray_workers"] == 2 and r["store_bytes"] > 0
    assert r["levels_used"] == r["depth"] and 0 < r["max_abs_error"] <= r["predicted_error_bound"]
    assert main(["predict", "--circuit", str(cli_bundle), "--mode", "encrypted", "--lanes", "1", "--json", LONG]) == 0
    r1 = json.loads(capsys.readouterr().out)
    assert r1["lanes"] == 1 and r1["ray_workers"] == 0 and r1["label"] == r["label"]
    assert main(["predict", "--circuit", str(cli_bundle), "--mode", "encrypted", "--lanes", "3", "--json", SHORT]) == 0
    assert 0 < json.loads(capsys.readouterr().out)["max_abs_error"]


def test_lane_flags_parse():
    from he_inhibitor.cli import build_parser

    def parse(*argv):
        return build_parser(list(argv)).parse_args(list(argv))

    a = parse("predict", "--lanes", "4", "--ray", "127.0.0.1:6379", "x")
    assert (a.lanes, a.ray) == (4, "127.0.0.1:6379")
    assert parse("predict", "x").lanes is None and parse("bench").lanes is None  # default_lanes(): 2 with ray
    from he_inhibitor.circuit.ray_lanes import default_lanes

    assert default_lanes() == 2  # ray is installed where this module runs
    s = parse("serve", "--ray", "local")
    assert (s.ray, s.lanes) == ("local", 1) and parse("serve").ray is None  # no flags: no Ray at all
    assert parse("bench-lanes", "--predict-only", "--predict", "1", "2").predict == [1, 2]
