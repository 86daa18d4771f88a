"""Benchmark one target: static counts, the op-count floor, keys and bytes, latency, accuracy, agreement.

* Every sentence runs in the smallest token bucket that holds it (as the
  client routes it); statics, the floor and latency are reported per bucket,
  and the headline statics are the smallest bucket's.
* Counts per stage come from the simulator (polynomials expanded into their
  plans, mod-switches into what `drop_to` runs); levels from the circuit.
* The floor is those counts times the per-primitive, per-level SEAL costs
  measured in the same run (`circuit.costs.measure`): what the circuit costs
  with no overhead at all. Measured server time per stage sits beside it.
* Keys: buckets with equal parameters share one key set holding the union of
  their rotation steps; the evaluation-key bytes are what a client sends to
  run every bucket.
* Encrypted runs: K sentences (default all N) in a seeded random order, each
  timed end to end (encryption to decryption, keys and the one-off encoding
  of the weight plaintexts excluded; that set-up is reported per bucket), its
  error held against the simulator's bound for that very sentence. With a
  log file every run is appended as it finishes and a rerun resumes where the
  log stops: an 872-sentence run takes hours.
* With lanes = K > 1 the circuit's lanes 1..K-1 (attention shifts) run on Ray
  actors (circuit.ray_lanes; the circuit recompiled for K lanes when it has
  fewer); the floor stays the one-core sum of all ops. CPU seconds (every
  process) are reported too: on a loaded machine they are the steadier figure.
* Accuracy is the plain executor's on all N sentences, batched per bucket:
  every op of the plain executor is slot-wise or a roll of the last axis, so
  a stack of sentences runs through the circuit at once.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm import tqdm

from he_inhibitor.bench.corpus import Corpus
from he_inhibitor.bench.target import Target
from he_inhibitor.ckks import ClientKeys, keygen, serial
from he_inhibitor.circuit import plain
from he_inhibitor.circuit.bundle import circuit_hash
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.encrypted import EncryptedExecutor, measured_depth
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.params import Plan
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.stats import stage_stats

# report key -> simulator primitive
COUNTED = {"rotations": "rotate", "relinearizations": "relinearize", "ciphertext_multiplications": "mul",
           "plaintext_multiplications": "mul_plain", "rescales": "rescale", "mod_switches": "mod_switch",
           "refreshes": "refresh"}


def plain_logits(compiled: Compiled, x0: list[np.ndarray], m: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """[n, n_labels] logits of the plain executor on sentences of one bucket, `batch` per pass."""
    out = []
    for lo in range(0, len(x0), batch):
        idx = range(lo, min(lo + batch, len(x0)))
        packed = [compiled.pack_input(x0[i]) for i in idx]
        public = [compiled.public_plaintexts(m[i]) for i in idx]
        inputs = {k: np.stack([p[k] for p in packed]) for k in packed[0]}
        bound = {k: np.stack([p[k] for p in public]) for k in public[0]}
        logits = plain.run(compiled.circuit, inputs, bound)["logits"]
        out += [compiled.read_logits(row) for row in logits]
    return np.asarray(out)


def corpus_logits(target: Target, corpus: Corpus, batch: int = 16) -> np.ndarray:
    """[N, n_labels] plain logits, each sentence in its bucket."""
    out: np.ndarray | None = None
    for T, plan in target.plans.items():
        rows = corpus.rows(T)
        if len(rows):
            logits = plain_logits(plan.compiled, [corpus.x0[i] for i in rows], [corpus.m[i] for i in rows], batch)
            out = np.zeros((len(corpus), logits.shape[1])) if out is None else out
            out[rows] = logits
    assert out is not None, "an empty corpus"
    return out


def _traffic(plan: Plan, keys: ClientKeys) -> dict[str, int]:
    """Bytes on the wire per query: seeded inputs, the reply, refresh round trips.

    The reply is a ciphertext mod-switched to the last level (what the client
    decrypts); a refresh sends such a ciphertext up and a seeded fresh one back.
    """
    compiled, params = plan.compiled, plan.params
    packed = compiled.pack_input(np.zeros((compiled.T, compiled.layout.d)))
    query = sum(len(keys.encrypt_bytes(v, params.depth)) for v in packed.values())
    reply = len(serial.to_bytes(keys.encrypt(np.zeros(params.slots), 0)))
    fresh = len(keys.encrypt_bytes(np.zeros(params.slots), params.depth))
    return {"query_bytes": query, "reply_bytes": reply, "refresh_bytes": plan.refreshes * (reply + fresh)}


def shared_keys(target: Target) -> tuple[dict[int, ClientKeys], int, float]:
    """One key set per distinct parameter set, holding its buckets' rotation steps.

    Returns the keys by bucket, the evaluation-key bytes of all sets, and the
    key generation seconds.
    """
    groups: dict[object, list[int]] = {}
    for T, plan in target.plans.items():
        groups.setdefault(plan.params, []).append(T)
    by_bucket, total, t = {}, 0, time.perf_counter()
    for params, Ts in groups.items():
        steps = sorted(set().union(*(target.plans[T].compiled.circuit.rotation_steps() for T in Ts)))
        keys = keygen(params, steps)
        total += len(keys.public_blob)
        by_bucket.update({T: keys for T in Ts})
    return by_bucket, total, time.perf_counter() - t


def _simulate(plan: Plan, x0: np.ndarray, m: np.ndarray, costs: CostTable):
    return simulate(plan.compiled, NoiseModel.of(plan.params), x0, m, costs, chain=plan.params.depth, strict=False)


def _stage_table(compiled: Compiled, sim, measured: dict[str, list[float]]) -> dict[str, dict]:
    levels = {st: c["levels"] for st, c in stage_stats(compiled.circuit).items()}
    table = {}
    for st, counts in sim.counts.items():
        row = {"levels": levels.get(st, 0), **{k: int(counts.get(p, 0)) for k, p in COUNTED.items()}}
        row["predicted_seconds"] = float(sim.seconds.get(st, 0.0))
        row["measured_seconds"] = float(np.median(measured[st])) if measured.get(st) else 0.0
        table[st] = row
    return table


class RunLog:
    """Per-sentence encrypted runs, appended to a JSONL file as they finish; a rerun resumes from it.

    Each record names the circuit it ran (its hash), so a log is never
    resumed against a different circuit.
    """

    def __init__(self, path: Path | None, target: Target) -> None:
        self.path = path
        self.hashes = {T: circuit_hash(p.compiled.circuit) for T, p in target.plans.items()}
        self.records: dict[int, dict] = {}
        if path is not None and path.is_file():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    rec = json.loads(line)
                    ok = self.hashes.get(int(rec["T"])) == rec["circuit"]
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"{path}:{n}: not a bench run record ({err}); move the file away") from err
                if not ok:
                    raise ValueError(f"{path}:{n}: ran a different circuit than {target.name}'s; use another log")
                self.records[int(rec["index"])] = rec

    def add(self, rec: dict) -> None:
        rec = {**rec, "circuit": self.hashes[rec["T"]]}
        self.records[rec["index"]] = rec
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")


def _encrypted_runs(target: Target, keys: dict[int, ClientKeys], corpus: Corpus, sample: np.ndarray,
                    plain_out: np.ndarray, costs: CostTable, seed: int, lanes: int, log: RunLog,
                    ray: str | None = None) -> dict[int, float]:
    """Run every sample sentence not yet in the log; returns the per-bucket set-up seconds."""
    from he_inhibitor.circuit.ray_lanes import RayLaneExecutor, RayLanes, lanes_of

    todo = [int(i) for i in sample if int(i) not in log.records]
    setup: dict[int, float] = {}
    runners: dict[int, object] = {}
    pool = None
    with ExitStack() as stack:
        for i in tqdm(todo, desc=f"{target.name}: encrypted", unit="sentence", dynamic_ncols=True):
            T = int(corpus.T[i])
            plan = target.plans[T]
            if T not in runners:
                t = time.perf_counter()
                ex = EncryptedExecutor(plan.compiled, plan.params, keys=keys[T], seed=seed)
                ex.prepare()
                runners[T] = ex
                if lanes > 1 and len(lanes_of(plan.compiled.circuit)) > 1:
                    if pool is None:
                        pool = stack.enter_context(RayLanes(lanes - 1, ray))
                    runners[T] = RayLaneExecutor(ex, pool)
                setup[T] = time.perf_counter() - t
            run = runners[T]
            t = time.perf_counter()
            res = run.run(corpus.x0[i], corpus.m[i])
            latency = time.perf_counter() - t
            sim = _simulate(plan, corpus.x0[i], corpus.m[i], costs)
            log.add({
                "index": i, "T": T, "seconds": latency, "server_seconds": sum(res.seconds.values()),
                "cpu_seconds": res.cpu_seconds + getattr(run, "worker_cpu_seconds", 0.0),
                "label": int(np.argmax(res.logits)), "plain_label": int(np.argmax(plain_out[i])),
                "gold": int(corpus.labels[i]), "max_abs_error": float(np.abs(res.logits - plain_out[i]).max()),
                "predicted_error_bound": float(sim.noise_bound), "stages": res.seconds,
                "levels_used": measured_depth(plan.compiled.circuit, res.chain_index),
                "max_poly_input_ratio": max((r.ratio for r in sim.ranges), default=0.0),
            })
    return setup


def _bucket_result(plan: Plan, sim, runs: list[dict], traffic: dict, routed: int, setup: float | None) -> dict:
    stages = _stage_table(plan.compiled, sim, {st: [r["stages"][st] for r in runs] for st in sim.counts})
    totals = {key: sum(row[key] for row in stages.values()) for key in next(iter(stages.values()))}
    totals["levels"] = plan.depth
    floor = float(sum(sim.seconds.values()))
    server = float(np.median([r["server_seconds"] for r in runs])) if runs else None
    return {
        "T": plan.compiled.T, "depth": plan.depth, "chain_levels": plan.params.depth, "refreshes": plan.refreshes,
        "refresh_round_trips": plan.round_trips, "rotation_steps": sorted(plan.compiled.circuit.rotation_steps()),
        **traffic, "sentences": routed, "encrypted_sentences": len(runs), "setup_seconds": setup,
        "median_seconds": float(np.median([r["seconds"] for r in runs])) if runs else None,
        "server_median_seconds": server, "floor_seconds": floor,
        "measured_over_floor": server / floor if server is not None and floor else None,
        "predicted_error_bound": float(sim.noise_bound),
        "max_poly_input_ratio": max((r.ratio for r in sim.ranges), default=0.0),
        "stages": stages, "totals": totals,
    }


def bench_target(target: Target, corpus: Corpus, costs: CostTable, k: int | None = None, seed: int = 0,
                 batch: int = 16, lanes: int = 1, log: Path | None = None, ray: str | None = None) -> dict:
    """Everything the report prints for one target (see module docstring); k: encrypted runs (None: all)."""
    run_log = RunLog(log, target)
    logits = corpus_logits(target, corpus, batch)
    pred = logits.argmax(1)
    fits = ~corpus.truncated
    sample = np.random.default_rng(seed).permutation(len(corpus))[: k or len(corpus)]
    keys, key_bytes, keygen_seconds = shared_keys(target)
    setup = _encrypted_runs(target, keys, corpus, sample, logits, costs, seed, lanes, run_log, ray)
    runs = [run_log.records[int(i)] for i in sample]
    buckets = {}
    for T, plan in target.plans.items():
        rows = corpus.rows(T)
        # counts and the floor do not depend on the sentence; the bound is that of the bucket's first one
        x0, m = (corpus.x0[rows[0]], corpus.m[rows[0]]) if len(rows) else (np.zeros((T, target.embedder.d)), np.eye(T)[0])
        buckets[T] = _bucket_result(plan, _simulate(plan, x0, m, costs), [r for r in runs if r["T"] == T],
                                    _traffic(plan, keys[T]), len(rows), setup.get(T))
    head = buckets[target.buckets[0]]
    params = target.plan.params
    labels = np.array([r["label"] for r in runs])
    return {
        "name": target.name,
        "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_bits": list(params.coeff_bits),
        **{key: head[key] for key in ("T", "chain_levels", "refreshes", "refresh_round_trips", "query_bytes",
                                      "reply_bytes", "refresh_bytes", "floor_seconds", "measured_over_floor",
                                      "stages", "totals")},
        "depth": max(b["depth"] for b in buckets.values()),
        "rotation_steps": sorted(set().union(*(b["rotation_steps"] for b in buckets.values()))),
        "keygen_seconds": keygen_seconds,
        "eval_key_bytes": key_bytes,
        "sentences": len(corpus),
        "truncated": int(corpus.truncated.sum()),
        "accuracy": float((pred == corpus.labels).mean()),
        "accuracy_fitting": float((pred[fits] == corpus.labels[fits]).mean()) if fits.any() else None,
        "encrypted_sentences": len(runs),
        "median_seconds": float(np.median([r["seconds"] for r in runs])),
        "p95_seconds": float(np.percentile([r["seconds"] for r in runs], 95)),
        "server_median_seconds": float(np.median([r["server_seconds"] for r in runs])),
        "cpu_median_seconds": float(np.median([r["cpu_seconds"] for r in runs])),
        "lanes": lanes,
        "encrypted_accuracy": float(np.mean(labels == np.array([r["gold"] for r in runs]))),
        "agreement": float(np.mean(labels == np.array([r["plain_label"] for r in runs]))),
        "max_abs_error": max(r["max_abs_error"] for r in runs),
        "predicted_error_bound": max(r["predicted_error_bound"] for r in runs),
        "max_error_over_bound": max(r["max_abs_error"] / r["predicted_error_bound"] for r in runs),
        # every run consumed exactly the levels the simulator predicts for its bucket
        "levels_as_predicted": all(r["levels_used"] == target.plans[r["T"]].depth for r in runs),
        # the largest |input| / B of any polynomial, over every sentence run encrypted
        "max_poly_input_ratio": max(r["max_poly_input_ratio"] for r in runs),
        "buckets": {str(T): b for T, b in buckets.items()},
    }
