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
  of the weight plaintexts excluded, as a server encodes them once for every
  client: circuit/weight_store.py; that set-up is reported per bucket), its
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
from he_inhibitor.circuit.compile import Compiled
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.encrypted import measured_depth
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.circuit.ir import OpKind
from he_inhibitor.circuit.params import Plan
from he_inhibitor.circuit.ray_lanes import RayLanes, lanes_of
from he_inhibitor.circuit.stats import stage_stats
from he_inhibitor.circuit.weight_store import WeightStore

# report key -> simulator primitive
COUNTED = {"rotations": "rotate", "relinearizations": "relinearize", "ciphertext_multiplications": "mul",
           "plaintext_multiplications": "mul_plain", "rescales": "rescale", "mod_switches": "mod_switch",
           "refreshes": "refresh"}


def plain_logits(compiled: Compiled, x0: list[np.ndarray], m: np.ndarray, batch: int = 16) -> np.ndarray:
    """[n, n_labels] plain-executor logits of sentences of one length (one mask m), `batch` per pass."""
    public = compiled.public_plaintexts(m)
    out = []
    for lo in range(0, len(x0), batch):
        packed = [compiled.pack_input(x, m) for x in x0[lo:lo + batch]]
        inputs = {k: np.stack([p[k] for p in packed]) for k in packed[0]}
        logits = plain.run(compiled.circuit, inputs, public)["logits"]
        out += [compiled.read_logits(row) for row in logits]
    return np.asarray(out)


def _by_circuit(target: Target, corpus: Corpus, rows) -> dict[tuple[int, object], list[int]]:
    """Sentence indices grouped by the circuit they run: (bucket T, attention plan)."""
    groups: dict[tuple[int, object], list[int]] = {}
    for i in rows:
        T = int(corpus.T[i])
        groups.setdefault((T, target.shift_plan(T, corpus.n(i))), []).append(int(i))
    return groups


def corpus_logits(target: Target, corpus: Corpus, batch: int = 16) -> np.ndarray:
    """[N, n_labels] plain logits, each sentence in its bucket's circuit for its length."""
    out: np.ndarray | None = None
    for (T, shifts), rows in tqdm(_by_circuit(target, corpus, range(len(corpus))).items(),
                                  desc=f"{target.name}: plain", unit="circuit", dynamic_ncols=True):
        by_n: dict[int, list[int]] = {}
        for i in rows:
            by_n.setdefault(corpus.n(i), []).append(i)
        for n, idx in by_n.items():
            logits = plain_logits(target.plan_for(T, n).compiled, [corpus.x0[i] for i in idx], corpus.m[idx[0]], batch)
            out = np.zeros((len(corpus), logits.shape[1])) if out is None else out
            out[idx] = logits
        target.release(T, shifts)
    assert out is not None, "an empty corpus"
    return out


def _traffic(plan: Plan, keys: ClientKeys, m: np.ndarray) -> dict[str, int]:
    """Bytes on the wire per query: seeded inputs, the reply, refresh round trips.

    The reply is a ciphertext mod-switched to the last level (what the client
    decrypts); a refresh sends its masked inputs up and the map's seeded fresh outputs back.
    """
    compiled, params = plan.compiled, plan.params
    packed = compiled.pack_input(np.zeros((compiled.T, compiled.layout.d)), m)
    query = sum(len(keys.encrypt_bytes(v, params.depth)) for v in packed.values())
    reply = len(serial.to_bytes(keys.encrypt(np.zeros(params.slots), 0)))
    fresh = len(keys.encrypt_bytes(np.zeros(params.slots), params.depth))
    groups: dict[tuple[int, ...], int] = {}
    for i in compiled.circuit.of_kind(OpKind.REFRESH):
        args = compiled.circuit.nodes[i].args
        groups[args] = groups.get(args, 0) + 1
    up = sum(sum(compiled.circuit.nodes[a].op is not OpKind.CONST for a in args) for args in groups)
    return {"query_bytes": query, "reply_bytes": reply, "refresh_bytes": up * reply + sum(groups.values()) * fresh}


def shared_keys(target: Target) -> tuple[dict[int, ClientKeys], int, float]:
    """One key set per distinct parameter set, holding its buckets' rotation steps (every plan's).

    Returns the keys by bucket, the evaluation-key bytes of all sets, and the
    key generation seconds.
    """
    groups: dict[object, list[int]] = {}
    for T, bucket in target.buckets_by_T.items():
        groups.setdefault(bucket.params, []).append(T)
    by_bucket, total, t = {}, 0, time.perf_counter()
    for params, Ts in groups.items():
        steps = set().union(*(target.buckets_by_T[T].rotation_steps for T in Ts))
        if target.lanes > 2:  # circuits recompiled for more lanes start their lanes further apart
            steps |= set(range(1, target.lanes + 1))
        keys = keygen(params, sorted(steps))
        total += len(keys.public_blob)
        by_bucket.update({T: keys for T in Ts})
    return by_bucket, total, time.perf_counter() - t


def _simulate(plan: Plan, x0: np.ndarray, m: np.ndarray, costs: CostTable):
    return make_executor(Mode.SIMULATE, plan.compiled, plan.params, costs, strict=False).run(x0, m)


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
        self.hashes = {T: b.hashes for T, b in target.buckets_by_T.items()}
        self.records: dict[int, dict] = {}
        if path is not None and path.is_file():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    rec = json.loads(line)
                    ok = rec["circuit"] in self.hashes[int(rec["T"])].values()
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"{path}:{n}: not a bench run record ({err}); move the file away") from err
                if not ok:
                    raise ValueError(f"{path}:{n}: ran a different circuit than {target.name}'s; use another log")
                self.records[int(rec["index"])] = rec

    def add(self, rec: dict, shifts: object) -> None:
        rec = {**rec, "circuit": self.hashes[rec["T"]][shifts]}
        self.records[rec["index"]] = rec
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")


def _encrypted_runs(target: Target, keys: dict[int, ClientKeys], corpus: Corpus, sample: np.ndarray,
                    plain_out: np.ndarray, costs: CostTable, seed: int, lanes: int, log: RunLog,
                    ray: str | None = None) -> dict[tuple[int, object], float]:
    """Run every sample sentence not yet in the log, grouped by circuit (one set-up each, one alive at a
    time; their encoded weights in one store, as in the server, so a bucket's later circuits find them
    encoded); returns the set-up seconds per circuit."""
    todo = [int(i) for i in sample if int(i) not in log.records]
    setup: dict[tuple[int, object], float] = {}
    weights = WeightStore()
    pool = None
    with ExitStack() as stack, tqdm(total=len(todo), desc=f"{target.name}: encrypted", unit="sentence",
                                    dynamic_ncols=True) as bar:
        for (T, shifts), rows in _by_circuit(target, corpus, todo).items():
            t = time.perf_counter()
            plan = target.plan_for(T, corpus.n(rows[0]))
            if lanes > 1 and len(lanes_of(plan.compiled.circuit)) > 1 and pool is None:
                pool = stack.enter_context(RayLanes(lanes - 1, ray))
            run = make_executor(Mode.ENCRYPTED, plan.compiled, plan.params, keys=keys[T], seed=seed, prepare=True,
                                weights=weights, pool=pool if lanes > 1 else None)
            setup[T, shifts] = time.perf_counter() - t
            for i in rows:
                t = time.perf_counter()
                res = run.run(corpus.x0[i], corpus.m[i])
                latency = time.perf_counter() - t
                sim = _simulate(plan, corpus.x0[i], corpus.m[i], costs)
                log.add({
                    "index": i, "T": T, "n_tokens": corpus.n(i),
                    "plan": None if shifts is None else shifts.as_json(), "seconds": latency,
                    "server_seconds": sum(res.seconds.values()), "client_seconds": res.client_seconds,
                    "round_trips": plan.round_trips + 1,
                    "cpu_seconds": res.cpu_seconds + getattr(run, "worker_cpu_seconds", 0.0),
                    "floor_seconds": float(sum(sim.seconds.values())),
                    "label": int(np.argmax(res.logits)), "plain_label": int(np.argmax(plain_out[i])),
                    "gold": int(corpus.labels[i]), "max_abs_error": float(np.abs(res.logits - plain_out[i]).max()),
                    "predicted_error_bound": float(sim.noise_bound), "stages": res.seconds,
                    "levels_used": measured_depth(plan.compiled.circuit, res.chain_index), "depth": plan.depth,
                    "max_poly_input_ratio": max((r.ratio for r in sim.ranges), default=0.0),
                }, shifts)
                bar.update()
            del run
            target.release(T, shifts)
    return setup


def _predict_again(target: Target, corpus: Corpus, records: list[dict], costs: CostTable) -> None:
    """Give records resumed from a log the current simulator's error bound.

    A log keeps what SEAL measured, for the circuit its hash names; the bound
    is a prediction, and a log may predate a change to the noise model
    (design §9), so it is made again rather than read back.
    """
    by_index = {int(rec["index"]): rec for rec in records}
    with tqdm(total=len(records), desc=f"{target.name}: bounds of logged runs", unit="sentence",
              dynamic_ncols=True, disable=not records) as bar:
        for (T, shifts), rows in _by_circuit(target, corpus, list(by_index)).items():
            plan = target.plan_for(T, corpus.n(rows[0]))
            for i in rows:
                by_index[i]["predicted_error_bound"] = float(_simulate(plan, corpus.x0[i], corpus.m[i], costs).noise_bound)
                bar.update()
            target.release(T, shifts)


def _bucket_result(plan: Plan, sim, runs: list[dict], traffic: dict, routed: int, setup: list[float],
                   plans: dict[str, dict]) -> dict:
    """One bucket: statics of its most used circuit (stage table, floor, traffic), latency over all its runs."""
    stages = _stage_table(plan.compiled, sim, {st: [r["stages"][st] for r in runs if st in r["stages"]]
                                               for st in sim.counts})
    totals = {key: sum(row[key] for row in stages.values()) for key in next(iter(stages.values()))}
    totals["levels"] = plan.depth
    floor = float(sum(sim.seconds.values()))
    server = float(np.median([r["server_seconds"] for r in runs])) if runs else None
    shifts = plan.compiled.plan
    return {
        "T": plan.compiled.T, "depth": plan.depth, "chain_levels": plan.params.depth, "refreshes": plan.refreshes,
        "refresh_round_trips": plan.round_trips, "rotation_steps": sorted(plan.compiled.circuit.rotation_steps()),
        "typical_plan": None if shifts is None else shifts.as_json(),
        **traffic, "sentences": routed, "encrypted_sentences": len(runs),
        "setup_seconds": float(np.median(setup)) if setup else None,
        "median_seconds": float(np.median([r["seconds"] for r in runs])) if runs else None,
        "server_median_seconds": server, "floor_seconds": floor,
        "measured_over_floor": server / floor if server is not None and floor else None,
        "predicted_error_bound": float(sim.noise_bound),
        "max_poly_input_ratio": max((r.ratio for r in sim.ranges), default=0.0),
        "stages": stages, "totals": totals, "plans": plans,
    }


def _plans_table(target: Target, corpus: Corpus, T: int, runs: list[dict]) -> dict[str, dict]:
    """Per attention plan of bucket T: the token counts it serves, sentences routed to it, their median latency."""
    bucket = target.buckets_by_T[T]
    rows = corpus.rows(T)
    out: dict[str, dict] = {}
    for shifts in sorted(set(bucket.plans.values()), key=lambda p: (0, 0) if p is None else (p.B, p.m)):
        key = "all" if shifts is None else f"{shifts.B},{shifts.m}"
        mine = [r for r in runs if r.get("plan") == (None if shifts is None else shifts.as_json())]
        out[key] = {"tokens": [n for n, p in sorted(bucket.plans.items()) if p == shifts],
                    "sentences": int(sum(bucket.plans[corpus.n(i)] == shifts for i in rows)),
                    "encrypted_sentences": len(mine),
                    "median_seconds": float(np.median([r["seconds"] for r in mine])) if mine else None}
    return out


def bench_target(target: Target, corpus: Corpus, costs: CostTable, k: int | None = None, seed: int = 0,
                 batch: int = 16, lanes: int = 1, log: Path | None = None, ray: str | None = None,
                 rtt_ms: float = 0.0) -> dict:
    """Everything the report prints for one target (see module docstring); k: encrypted runs (None: all).

    rtt_ms: a network round-trip time added per round trip (the query and each refresh) to every
    latency, reported beside the loopback figures.
    """
    run_log = RunLog(log, target)
    logits = corpus_logits(target, corpus, batch)
    pred = logits.argmax(1)
    fits = ~corpus.truncated
    sample = np.random.default_rng(seed).permutation(len(corpus))[: k or len(corpus)]
    keys, key_bytes, keygen_seconds = shared_keys(target)
    _predict_again(target, corpus, [run_log.records[int(i)] for i in sample if int(i) in run_log.records], costs)
    setup = _encrypted_runs(target, keys, corpus, sample, logits, costs, seed, lanes, run_log, ray)
    runs = [run_log.records[int(i)] for i in sample]
    buckets = {}
    for T in target.buckets:
        rows = corpus.rows(T)
        mine = [r for r in runs if r["T"] == T]
        ns = [corpus.n(i) for i in rows] or [T]
        n = int(np.median(ns))  # the bucket's typical sentence: its circuit gives the statics
        m = (np.arange(T) < n).astype(np.float64)
        x0 = next((corpus.x0[i] for i in rows if corpus.n(i) == n), np.zeros((T, target.embedder.d)))
        plan = target.plan_for(T, n)
        buckets[T] = _bucket_result(plan, _simulate(plan, x0, m, costs), mine, _traffic(plan, keys[T], m), len(rows),
                                    [s for (TT, _), s in setup.items() if TT == T], _plans_table(target, corpus, T, mine))
        target.release(T, plan.compiled.plan)
    head = buckets[target.buckets[0]]
    params = target.params
    labels = np.array([r["label"] for r in runs])
    seconds = np.array([r["seconds"] for r in runs])
    with_rtt = seconds + np.array([r["round_trips"] for r in runs]) * rtt_ms / 1e3
    return {
        "name": target.name,
        "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_bits": list(params.coeff_bits),
        **{key: head[key] for key in ("T", "chain_levels", "refreshes", "refresh_round_trips", "query_bytes",
                                      "reply_bytes", "refresh_bytes", "floor_seconds", "measured_over_floor",
                                      "stages", "totals")},
        "depth": max(b["depth"] for b in buckets.values()),
        "rotation_steps": sorted(set().union(*(set(b.rotation_steps) for b in target.buckets_by_T.values()))),
        "keygen_seconds": keygen_seconds,
        "eval_key_bytes": key_bytes,
        "sentences": len(corpus),
        "truncated": int(corpus.truncated.sum()),
        "accuracy": float((pred == corpus.labels).mean()),
        "accuracy_fitting": float((pred[fits] == corpus.labels[fits]).mean()) if fits.any() else None,
        "encrypted_sentences": len(runs),
        "median_seconds": float(np.median(seconds)),
        "p95_seconds": float(np.percentile(seconds, 95)),
        "rtt_ms": rtt_ms,
        "median_seconds_with_rtt": float(np.median(with_rtt)),
        "p95_seconds_with_rtt": float(np.percentile(with_rtt, 95)),
        "round_trips_per_query": int(max(r["round_trips"] for r in runs)),
        "server_median_seconds": float(np.median([r["server_seconds"] for r in runs])),
        "cpu_median_seconds": float(np.median([r["cpu_seconds"] for r in runs])),
        "lanes": lanes,
        "encrypted_accuracy": float(np.mean(labels == np.array([r["gold"] for r in runs]))),
        "agreement": float(np.mean(labels == np.array([r["plain_label"] for r in runs]))),
        "max_abs_error": max(r["max_abs_error"] for r in runs),
        "predicted_error_bound": max(r["predicted_error_bound"] for r in runs),
        "max_error_over_bound": max(r["max_abs_error"] / r["predicted_error_bound"] for r in runs),
        # every run consumed exactly the levels the simulator predicts for its circuit
        "levels_as_predicted": all(r["levels_used"] == r["depth"] for r in runs),
        # the largest |input| / B of any polynomial, over every sentence run encrypted
        "max_poly_input_ratio": max(r["max_poly_input_ratio"] for r in runs),
        "runs": [{k: r[k] for k in ("index", "T", "n_tokens", "plan", "seconds", "round_trips", "floor_seconds",
                                    "max_abs_error", "predicted_error_bound")} for r in runs],
        "buckets": {str(T): b for T, b in buckets.items()},
    }
