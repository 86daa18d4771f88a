"""`he-inhibitor bench-lanes`: what lanes on Ray buy, measured here and predicted beyond this machine.

Measured, in one run on one key set and one prepared executor (the bundle's
own circuit, lanes [0, 1]):
* latency of one sentence with 1 lane (EncryptedExecutor alone), 2 lanes
  (lane 1 on a Ray actor), and a whole sentence on a Ray actor
  (ray_sentences); encryption to decryption, set-up excluded, wall and CPU;
* throughput with C concurrent clients (threads, one sentence each) through
  the same executors: Ray lanes take them all at once (lane 0 of each in this
  process); Ray sentences run whole evaluations on one actor per CPU, this
  process only encrypting, refreshing and decrypting.
The home-made two-process executor these replace (circuit/parallel.py: a
forked worker, ciphertexts through /dev/shm files, one run at a time) was
measured by this command in the same run before its removal; its numbers
stay in docs/bench/ray_lanes.json.
Predicted, by the simulator on the circuit recompiled for each lane count
(1-64, capped at T shifts): the critical path when every lane has its own
core (simulate's makespan, per-primitive costs of circuit/data/costs_n*.json),
the one-core sum, the serial part (lane 0 outside the shift ranges), and the
object-store bytes per sentence (every ciphertext that crosses a lane,
serialized size at its level).
"""

from __future__ import annotations

import argparse
import inspect
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from he_inhibitor.ckks import CkksEvaluator, keygen, serial
from he_inhibitor.circuit.bundle import buckets_of, load_bundle, load_weights
from he_inhibitor.circuit.client_bundle import ClientBundle
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.circuit.ir import OpKind, levels_and_degrees
from he_inhibitor.circuit.ray_lanes import RayLaneExecutor, RayLanes, lanes_of, segments_of, start_ray, with_lanes
from he_inhibitor.circuit.ray_sentences import RaySentenceExecutor, RaySentences
from he_inhibitor.circuit.weight_store import DEFAULT_MAX_BYTES
from he_inhibitor.bench.report import save_figure
from he_inhibitor.service.artifacts import SHIPPED_CIRCUIT

SENTENCES = (  # 12 tokens each: the shipped T = 32 bucket's circuit for them has 3 shifts, so up to 3 lanes
    "the plot is dull and the jokes fall flat .",
    "a warm and funny story with a great cast .",
    "the acting is fine but the story goes nowhere .",
    "the script is lazy and the direction is worse .",
    "the jokes are stale and the pacing is slow .",
    "a gripping , beautifully acted film .",
    "not bad at all .",
    "an utterly forgettable sequel .",
)


CONFIGS = ("one", "lanes", "sentences")


def _bundle_plan(bundle: Path, T: int, n: int | None = None):
    """load_bundle for bucket T and, where the compiler's circuits follow the sentence, n tokens."""

    if n is not None and len(inspect.signature(load_bundle).parameters) > 2:
        return load_bundle(bundle, T, n)
    return load_bundle(bundle, T)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-lanes", help="latency and throughput against lanes on Ray; the simulator's curve")
    p.add_argument("--circuit", type=Path, default=None, help="circuit bundle (default: the shipped one)")
    p.add_argument("--reps", type=int, default=2, help="latency runs per configuration")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput (0: skip)")
    p.add_argument("--predict", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64],
                   help="lane counts for the simulator's curve")
    p.add_argument("--buckets", type=int, nargs="+", default=None, help="buckets for the curve (default: all)")
    p.add_argument("--predict-only", action="store_true", help="skip every encrypted run")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS),
                   help="what to measure: one (1 lane), lanes (2 lanes on Ray), sentences (whole sentences on Ray)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="join this Ray cluster (default: embedded)")
    p.add_argument("--sentence-cache", action="store_true",
                   help="sentence actors keep the weight plaintexts (about 2 GB each at N = 16384) instead of "
                        "encoding them per evaluation as the service does")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="PNG for the curve and the measured points")
    p.set_defaults(func=run)


# -- prediction ---------------------------------------------------------------------------------


def ciphertext_bytes(params) -> dict[int, int]:
    """Serialized bytes of a ciphertext at each chain index (SEAL's zstd, as the lanes send them)."""

    keys = keygen(params, [])
    ev = CkksEvaluator(keys.public_context())
    ct = keys.encrypt(np.random.default_rng(0).uniform(-1, 1, params.slots), params.depth)
    return {c: len(serial.to_bytes(ct if c == params.depth else ev.drop_to(ct, c))) for c in range(0, params.depth + 1)}


def lane_traffic(circuit, depth: int, sizes: dict[int, int]) -> dict:
    """Ciphertexts and bytes through the object store per sentence, from the segments alone."""

    levels, _ = levels_and_degrees(circuit)
    segs = segments_of(circuit)
    put = {i for s in segs for i in s.inputs}  # put once, read by every lane that needs it
    back = {i for s in segs for i in s.outputs}
    size = lambda i: sizes[depth - int(levels[i])]  # noqa: E731
    return {"segments": len(segs), "ciphertexts": len(put) + len(back),
            "bytes": int(sum(size(i) for i in put | back)),
            # what the workers fetch: each segment its inputs (on one node they share one copy)
            "fetched_bytes": int(sum(size(i) for s in segs for i in s.inputs + s.links))}


def predict_curve(bundle: Path, buckets: list[int], lanes: list[int], ns: dict[int, list[int]] | None = None
                  ) -> list[dict]:
    """Rows per (bucket T, token count n, lanes); n = T unless `ns` gives other counts for a bucket
    (where circuits follow the token count, a short sentence has fewer shifts and so fewer useful lanes)."""

    weights = load_weights(bundle)
    rows = []
    for T, n in [(T, n) for T in buckets for n in (ns or {}).get(T, [T])]:
        base = _bundle_plan(bundle, T, n)
        params = base.params
        costs = CostTable.shipped(params.poly_modulus_degree)
        sizes = ciphertext_bytes(params)
        x0 = np.zeros((T, base.compiled.layout.d))
        m = (np.arange(T) < n).astype(np.float64)
        for k in lanes:
            plan = with_lanes(base, k, weights)
            c = plan.compiled.circuit
            sim = make_executor(Mode.SIMULATE, plan.compiled, params, costs, strict=False).run(x0, m)
            one = float(sum(sim.seconds.values()))
            rows.append({"T": T, "n": n, "lanes": k, "effective_lanes": len(lanes_of(c)),
                         "predicted_seconds": float(sim.parallel_seconds), "one_core_seconds": one,
                         "rotation_keys": len(c.rotation_steps()),
                         "refreshes": len(c.of_kind(OpKind.REFRESH)), **{f"store_{k2}": v for k2, v in
                                                                         lane_traffic(c, params.depth,
                                                                                      sizes).items()}})
        _amdahl([r for r in rows if r["T"] == T and r["n"] == n], T)
    return rows


def _amdahl(rows: list[dict], T: int) -> None:
    """Serial and parallel seconds from the curve's ends: makespan(K) ~ S + P / K (K effective lanes).

    The serial part S is lane 0's work outside the shift ranges (Q/K/V and
    output projections, half copies, the lane sums, FFN, pooling, refreshes):
    no lane count removes it.
    """
    one = [r for r in rows if r["effective_lanes"] == 1]
    most = max(rows, key=lambda r: r["effective_lanes"])
    if not one or most["effective_lanes"] == 1:
        return
    k = most["effective_lanes"]
    par = (one[0]["predicted_seconds"] - most["predicted_seconds"]) * k / (k - 1)
    for r in rows:
        r["serial_seconds"] = one[0]["predicted_seconds"] - par
        r["parallel_seconds"] = par


# -- measurement --------------------------------------------------------------------------------


def _timed(runner, x0, m) -> dict:
    cpu = time.process_time()
    t = time.perf_counter()
    res = runner.run(x0, m)
    wall = time.perf_counter() - t
    last = getattr(runner, "last", None) or {}
    return {"seconds": wall, "driver_cpu_seconds": time.process_time() - cpu,
            "worker_cpu_seconds": getattr(runner, "worker_cpu_seconds", 0.0),
            "logits": [float(v) for v in res.logits], **{k: v for k, v in last.items() if k.startswith("store")}}


def _throughput(runner, prepared: list, clients: int, serialize: bool) -> dict:
    """`clients` threads, one sentence each, started together; sentences per hour over the whole wall time."""
    lock = threading.Lock()

    def one(p):
        if serialize:
            with lock:
                return _timed(runner, p.x0, p.m)
        return _timed(runner, p.x0, p.m)

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        runs = list(pool.map(one, [prepared[i % len(prepared)] for i in range(clients)]))
    wall = time.perf_counter() - t
    return {"clients": clients, "wall_seconds": wall, "sentences_per_hour": 3600 * clients / wall,
            "median_latency_seconds": float(np.median([r["seconds"] for r in runs])),
            "max_latency_seconds": float(max(r["seconds"] for r in runs))}


def measure(bundle: Path, reps: int, clients: int, address: str | None, log, save=None,
            configs: tuple[str, ...] = CONFIGS, sentence_cache: bool = False) -> dict:
    """Each configuration in turn on one key set and one prepared executor (see the module docstring)."""

    client = ClientBundle.load(bundle)
    prepared = [client.prepare(s) for s in SENTENCES]
    T = min(p.T for p in prepared)
    prepared = [p for p in prepared if p.T == T]
    groups: dict = {}  # sentences sharing one circuit (where circuits follow the token count)
    for p in prepared:
        plan = _bundle_plan(bundle, T, p.n_tokens)
        groups.setdefault(getattr(plan.compiled, "plan", None), (plan, []))[1].append(p)

    # the largest group whose circuit has work for a second lane (circuits that follow n give short
    # sentences a single shift); any group when no lanes are measured
    usable = [g for g in groups.values() if "lanes" not in configs or len(lanes_of(g[0].compiled.circuit)) > 1]
    if not usable:
        raise SystemExit("no sentence here has a circuit with two lanes: measure with --configs one sentences")
    plan, prepared = max(usable, key=lambda g: len(g[1]))
    plain = make_executor(Mode.PLAIN, plan.compiled)
    t = time.perf_counter()
    keys = keygen(plan.params, sorted(plan.compiled.circuit.rotation_steps()))
    ex = make_executor(Mode.ENCRYPTED, plan.compiled, plan.params, keys=keys, prepare=True)
    shifts = getattr(plan.compiled, "plan", None)
    out: dict = {"T": T, "sentences": len(prepared), "n_tokens": [p.n_tokens for p in prepared],
                 "attention_plan": None if shifts is None else str(shifts),
                 "setup_seconds": {"keys_and_weights": time.perf_counter() - t},
                 "latency": {}, "throughput": {}, "key_bytes": len(keys.public_blob)}

    def bench(name: str, runner, serialize: bool, latency: bool = True, throughput: bool = True) -> None:
        if latency:
            runs = []
            for r in range(reps):
                p = prepared[r % len(prepared)]
                log(f"latency: {name}, run {r + 1}/{reps}")
                run = _timed(runner, p.x0, p.m)
                run["max_abs_error"] = float(np.abs(np.array(run["logits"]) - plain.run(p.x0, p.m).logits).max())
                runs.append(run)
            out["latency"][name] = {"median_seconds": float(np.median([r["seconds"] for r in runs])), "runs": runs}
            if save is not None:
                save(out)
        if throughput and clients:
            log(f"throughput: {name}, {clients} concurrent clients")
            out["throughput"][name] = _throughput(runner, prepared, clients, serialize)
        if save is not None:
            save(out)  # a long run on a shared machine: keep what is measured so far

    if "one" in configs:
        bench("1 lane (one process)", ex, True, throughput=False)  # one process answers one sentence at a time
    t = time.perf_counter()
    started = start_ray(address)
    out["setup_seconds"]["ray_start"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        if "lanes" in configs:
            with RayLanes(1, address) as pool:
                lanes = RayLaneExecutor(ex, pool)
                out["setup_seconds"]["ray_lanes_warm"] = time.perf_counter() - t
                bench("2 lanes on Ray", lanes, False)
                out["ray_lane_workers"] = pool.stats()
        if "sentences" in configs:
            ex.weights.clear()  # from here on this process only encrypts, refreshes and decrypts
            t = time.perf_counter()
            # by default weights encoded per evaluation: actors stay small
            out["sentence_actor_weight_cache"] = sentence_cache
            with RaySentences(address=address, weight_cache=DEFAULT_MAX_BYTES if sentence_cache else 0) as pool:
                sentences = RaySentenceExecutor(ex, pool)
                out["setup_seconds"]["ray_sentences"] = time.perf_counter() - t
                bench(f"sentences on Ray ({len(pool.actors)} actors, 1 lane each"
                      f"{', weights cached' if sentence_cache else ''})", sentences, False)
                out["ray_sentence_workers"] = pool.stats()
                out["sentence_attempts"] = sentences.attempts
    finally:
        if started:
            import ray

            ray.shutdown()
    return out


# -- report -------------------------------------------------------------------------------------


def plot(result: dict, path: Path) -> Path:
    """Left: seconds per sentence against lanes (predicted curves, measured points); right: throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meas = result.get("measured") or {}
    tp = meas.get("throughput") or {}
    fig, axes = plt.subplots(1, 2 if tp else 1, figsize=(12 if tp else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    rows = result["predicted"]
    for T, n in sorted({(r["T"], r.get("n", r["T"])) for r in rows}):
        pts = [r for r in rows if r["T"] == T and r.get("n", T) == n]
        ax.plot([r["lanes"] for r in pts], [r["predicted_seconds"] for r in pts], "o-",
                label=f"predicted critical path, T = {T}, n = {n} (serial part {pts[0].get('serial_seconds', 0):.1f} s)")
    for name, lat in meas.get("latency", {}).items():
        k = 2 if name.startswith("2 lanes") else 1
        cpu = float(np.median([r["driver_cpu_seconds"] + r["worker_cpu_seconds"] for r in lat["runs"]]))
        busiest = float(np.median([max(r["driver_cpu_seconds"], r["worker_cpu_seconds"]) for r in lat["runs"]]))
        line, = ax.plot([k], [lat["median_seconds"]], "x" if "old" in name else "s", ms=9,
                        label=f"measured wall (T = {meas['T']}): {name}"
                              + ("" if name.startswith("sentences") else f"; CPU {cpu:.0f} s in all"))
        if not name.startswith("sentences"):  # a sentence actor's CPU is not reported back
            ax.plot([k], [busiest], "o", ms=9, mfc="none", color=line.get_color(),
                    label=f"  its busiest process's CPU seconds ({busiest:.0f} s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("lanes (one core each)")
    ax.set_ylabel("seconds per sentence")
    ax.set_title("One sentence against lanes")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    if tp:
        ax = axes[0][1]
        names = list(tp)
        ax.barh(range(len(names)), [tp[n]["sentences_per_hour"] for n in names])
        ax.set_yticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=7)
        ax.set_xlabel(f"sentences per hour, {tp[names[0]]['clients']} concurrent clients (T = {meas['T']})")
        ax.set_title("Throughput on this 2-core machine (shared, loaded)")
        ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def run(args: argparse.Namespace) -> int:

    bundle = args.circuit or SHIPPED_CIRCUIT
    log = (lambda msg: print(f"[bench-lanes] {msg}", flush=True))
    result: dict = {"bundle": str(bundle)}
    if not args.predict_only:
        def save(measured: dict) -> None:
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({**result, "measured": measured, "partial": True}, indent=1) + "\n")

        result["measured"] = measure(bundle, args.reps, args.clients, args.ray, log, save, tuple(args.configs),
                                     args.sentence_cache)
    log("predicting the curve")
    measured = result.get("measured") or {}
    buckets = args.buckets or buckets_of(bundle)
    ns = {T: [T] for T in buckets}
    if measured.get("n_tokens") and measured["T"] in ns:  # also the measured sentences' own circuit
        ns[measured["T"]] = sorted({measured["n_tokens"][0], measured["T"]})
    result["predicted"] = predict_curve(bundle, buckets, args.predict, ns)
    for row in result["predicted"]:
        print(f"T={row['T']:3d} n={row['n']:3d} lanes {row['lanes']:3d} ({row['effective_lanes']:2d} effective): "
              f"{row['predicted_seconds']:7.2f} s (one core {row['one_core_seconds']:.2f} s), "
              f"{row['store_ciphertexts']} ciphertexts, {row['store_bytes'] / 1e6:.1f} MB through the store, "
              f"{row['rotation_keys']} rotation keys")
    for name, lat in result.get("measured", {}).get("latency", {}).items():
        print(f"latency {name}: median {lat['median_seconds']:.2f} s")
    for name, tp in result.get("measured", {}).get("throughput", {}).items():
        print(f"throughput {name}: {tp['sentences_per_hour']:.0f} sentences/hour ({tp['clients']} clients)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        print(f"plot: {plot(result, args.plot)}")
    return 0
