"""Whole sentences on Ray actors (embedded, 2 CPUs): concurrent sentences equal plain within the bound,
keys once per actor, a killed actor's sentence run again or reported."""

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ray

from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.ray_lanes import LaneError, start_ray
from he_inhibitor.circuit.ray_sentences import RaySentenceExecutor, RaySentences
from he_inhibitor.circuit.simulate import simulate
from test_ray_lanes import T, sentence, student  # noqa: F401


@pytest.fixture(scope="module")
def cluster():
    started = start_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_concurrent_sentences_on_two_actors(student, cluster):  # noqa: F811
    model, plan = student
    ex = EncryptedExecutor(plan.compiled, plan.params)
    cases = [sentence(model, T, seed) for seed in (1, 2, 3)]  # the default attention plan holds n = T
    with RaySentences(2) as pool, RaySentenceExecutor(ex, pool) as sentences:
        with ThreadPoolExecutor(3) as threads:
            results = list(threads.map(lambda c: sentences.run(*c), cases))
        for (x0, m), res in zip(cases, results):
            sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, chain=plan.params.depth)
            assert np.abs(res.logits - sim.logits).max() <= sim.noise_bound
            assert res.refreshes == plan.round_trips  # one client round trip per group of refreshes
        stats = pool.stats()
    assert sum(s["evaluations"] for s in stats) == 3 and all(s["jobs"] == 0 for s in stats)
    assert all(s["key_loads"] in ({}, {sentences.key_id: 1}) for s in stats)  # once per actor that needed them


@pytest.mark.slow
def test_killed_actor_mid_sentence_is_retried_or_reported(student, cluster):  # noqa: F811
    model, plan = student
    ex = EncryptedExecutor(plan.compiled, plan.params)
    x0, m = sentence(model, T, 4)
    sim = simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, chain=plan.params.depth)
    for retries in (1, 0):
        with RaySentences(1, max_restarts=1, timeout_s=300) as pool, \
                RaySentenceExecutor(ex, pool, retries=retries) as sentences:
            pid = pool.stats()[0]["pid"]
            killed = []

            def kill(attempt, refreshes):  # paused at its first refresh: the job lives only in that actor
                if not killed:
                    killed.append(pid)
                    os.kill(pid, signal.SIGKILL)

            sentences.on_refresh = kill
            if retries:
                res = sentences.run(x0, m)
                assert killed and sentences.attempts == 2  # run again from its inputs on the restarted actor
                assert np.abs(res.logits - sim.logits).max() <= sim.noise_bound
                assert pool.stats()[0]["pid"] != pid
            else:
                with pytest.raises(LaneError, match="sentence worker failed"):
                    sentences.run(x0, m)
