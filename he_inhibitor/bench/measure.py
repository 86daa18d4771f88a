"""Benchmark one target: static counts, the op-count floor, keys and bytes, latency, accuracy, agreement.

* Counts per stage come from the simulator (polynomials expanded into their
  plans, mod-switches into what `drop_to` runs); levels from the circuit.
* The floor is those counts times the per-primitive, per-level SEAL costs
  measured in the same run (`circuit.costs.measure`): what the circuit costs
  with no overhead at all. Measured server time per stage sits beside it.
* Latency is end to end (encryption to decryption, keys excluded) on a
  sample of K sentences, after one warm-up run that encodes the weight
  plaintexts into the executor's cache (reported as `cold_seconds`). With
  workers = 2 the circuit's lane 1 (half the attention shifts) runs in a
  second process (circuit.parallel); the floor stays the one-core sum of all
  ops, and the measured stage times are the main process's wall clock. CPU
  seconds (both processes) are reported too: on a loaded machine they are
  the steadier figure.
* Accuracy is the plain executor's on all N sentences, batched: every op of
  the plain executor is slot-wise or a roll of the last axis, so a stack of
  sentences runs through the circuit at once.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from he_inhibitor.bench.corpus import Corpus
from he_inhibitor.bench.target import Target
from he_inhibitor.ckks import keygen, serial
from he_inhibitor.circuit import plain
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.encrypted import EncryptedExecutor
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.stats import stage_stats

# report key -> simulator primitive
COUNTED = {"rotations": "rotate", "relinearizations": "relinearize", "ciphertext_multiplications": "mul",
           "plaintext_multiplications": "mul_plain", "rescales": "rescale", "mod_switches": "mod_switch",
           "refreshes": "refresh"}


def plain_logits(compiled: Compiled, corpus: Corpus, batch: int = 16) -> np.ndarray:
    """[N, n_labels] logits of the plain executor, `batch` sentences per pass."""
    out = []
    for lo in range(0, len(corpus), batch):
        idx = range(lo, min(lo + batch, len(corpus)))
        packed = [compiled.pack_input(corpus.x0[i]) for i in idx]
        public = [compiled.public_plaintexts(corpus.m[i]) for i in idx]
        inputs = {k: np.stack([p[k] for p in packed]) for k in packed[0]}
        bound = {k: np.stack([p[k] for p in public]) for k in public[0]}
        logits = plain.run(compiled.circuit, inputs, bound)["logits"]
        out += [compiled.read_logits(row) for row in logits]
    return np.asarray(out)


def _traffic(target: Target, keys) -> dict[str, int]:
    """Bytes on the wire: evaluation keys, one query (seeded inputs), the reply, refresh round trips.

    The reply is a ciphertext mod-switched to the last level (what the client
    decrypts); a refresh sends such a ciphertext up and a seeded fresh one back.
    """
    compiled, params = target.plan.compiled, target.plan.params
    packed = compiled.pack_input(np.zeros((compiled.T, compiled.layout.d)))
    query = sum(len(keys.encrypt_bytes(v, params.depth)) for v in packed.values())
    reply = len(serial.to_bytes(keys.encrypt(np.zeros(params.slots), 0)))
    fresh = len(keys.encrypt_bytes(np.zeros(params.slots), params.depth))
    return {"eval_key_bytes": len(keys.public_blob), "query_bytes": query, "reply_bytes": reply,
            "refresh_bytes": target.plan.refreshes * (reply + fresh)}


def _stage_table(compiled: Compiled, sim, measured: dict[str, list[float]]) -> dict[str, dict]:
    levels = {st: c["levels"] for st, c in stage_stats(compiled.circuit).items()}
    table = {}
    for st, counts in sim.counts.items():
        row = {"levels": levels.get(st, 0), **{k: int(counts.get(p, 0)) for k, p in COUNTED.items()}}
        row["predicted_seconds"] = float(sim.seconds.get(st, 0.0))
        row["measured_seconds"] = float(np.median(measured[st])) if measured.get(st) else 0.0
        table[st] = row
    return table


@dataclass
class _Runs:
    """What the K timed encrypted runs measured (one entry per sentence), and the warm-up's seconds."""

    cold: float = 0.0
    latency: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)


def _encrypted_runs(target: Target, keys, corpus: Corpus, sample: np.ndarray, plain: np.ndarray,
                    seed: int, workers: int) -> _Runs:
    """One warm-up run (fills the weight-plaintext caches), then the sample, timed."""
    runs = _Runs()
    with ExitStack() as stack:
        ex = EncryptedExecutor(target.plan.compiled, target.plan.params, keys=keys, seed=seed)
        par = None
        if workers == 2:
            from he_inhibitor.circuit.parallel import ParallelExecutor

            par = stack.enter_context(ParallelExecutor(ex))
        run = ex.run if par is None else par.run
        t = time.perf_counter()
        run(corpus.x0[sample[0]], corpus.m[sample[0]])
        runs.cold = time.perf_counter() - t
        for i in sample:
            t = time.perf_counter()
            res = run(corpus.x0[i], corpus.m[i])
            runs.latency.append(time.perf_counter() - t)
            runs.server.append(sum(res.seconds.values()))
            runs.cpu.append(res.cpu_seconds + (par.worker_cpu_seconds if par is not None else 0.0))
            for st, sec in res.seconds.items():
                runs.stages.setdefault(st, []).append(sec)
            runs.labels.append(int(np.argmax(res.logits)))
            runs.errors.append(float(np.abs(res.logits - plain[i]).max()))
    return runs


def bench_target(target: Target, corpus: Corpus, costs: CostTable, k: int, seed: int = 0,
                 batch: int = 16, workers: int = 1) -> dict:
    """Everything the report prints for one target (see module docstring); k >= 1, workers 1 or 2."""
    plan = target.plan
    compiled, params = plan.compiled, plan.params
    logits = plain_logits(compiled, corpus, batch)
    pred = logits.argmax(1)
    fits = ~corpus.truncated
    sample = np.random.default_rng(seed).permutation(len(corpus))[:k]
    # counts and the floor do not depend on the sentence; the error bound is the first sample's
    sim = simulate(compiled, NoiseModel.of(params), corpus.x0[sample[0]], corpus.m[sample[0]], costs,
                   chain=params.depth, strict=False)
    t = time.perf_counter()
    keys = keygen(params, sorted(compiled.circuit.rotation_steps()))
    keygen_seconds = time.perf_counter() - t
    traffic = _traffic(target, keys)
    runs = _encrypted_runs(target, keys, corpus, sample, logits, seed, workers)
    stages = _stage_table(compiled, sim, runs.stages)
    floor = float(sum(sim.seconds.values()))
    totals = {key: sum(row[key] for row in stages.values()) for key in next(iter(stages.values()))}
    totals["levels"] = plan.depth
    return {
        "name": target.name,
        "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_bits": list(params.coeff_bits),
        "T": compiled.T,
        "depth": plan.depth,
        "chain_levels": params.depth,
        "refreshes": plan.refreshes,
        "refresh_round_trips": plan.round_trips,
        "rotation_steps": sorted(compiled.circuit.rotation_steps()),
        "keygen_seconds": keygen_seconds,
        **traffic,
        "sentences": len(corpus),
        "truncated": int(corpus.truncated.sum()),
        "accuracy": float((pred == corpus.labels).mean()),
        "accuracy_fitting": float((pred[fits] == corpus.labels[fits]).mean()) if fits.any() else None,
        "latency_sentences": k,
        "median_seconds": float(np.median(runs.latency)),
        "p95_seconds": float(np.percentile(runs.latency, 95)),
        "server_median_seconds": float(np.median(runs.server)),
        "cpu_median_seconds": float(np.median(runs.cpu)),
        "workers": workers,
        "floor_seconds": floor,
        "measured_over_floor": float(np.median(runs.server)) / floor if floor else None,
        "cold_seconds": runs.cold,
        "encrypted_accuracy": float(np.mean(np.asarray(runs.labels) == corpus.labels[sample])),
        "agreement": float(np.mean(np.asarray(runs.labels) == pred[sample])),
        "max_abs_error": max(runs.errors),
        "predicted_error_bound": sim.noise_bound,
        "max_poly_input_ratio": max((r.ratio for r in sim.ranges), default=0.0),
        "stages": stages,
        "totals": totals,
    }
