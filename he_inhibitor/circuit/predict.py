"""`he-inhibitor predict`: one sentence through a bundle, in plain, simulate or encrypted mode.

The client part of the bundle tokenizes and embeds (no torch); the server part
is recompiled for the sentence's bucket. Every mode also runs the plain
executor (the reference the encrypted logits are held against); `simulate`
and `encrypted` run the simulator for the predicted error bound, the op
counts and the op-count floor (the cost table's seconds for exactly the
primitives that run; the critical path when lanes run on their own cores).
With --lanes K > 1 the circuit is recompiled with its attention shifts on K
lanes and lanes 1..K-1 run on Ray actors (circuit/ray_lanes.py; embedded Ray,
or the cluster at --ray ADDRESS). Key generation, encoding the weights and
starting the lane workers are set-up, timed apart: the bar is encryption to
decryption. CPU seconds are reported beside wall clock because
on a loaded machine wall clock measures the load as much as the circuit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from he_inhibitor.ckks import keygen
from he_inhibitor.circuit.bundle import SHIPPED_BUNDLE, load_bucket, load_bundle, load_weights
from he_inhibitor.circuit.client_bundle import ClientBundle
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.encrypted import measured_depth
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.circuit.ray_lanes import RayLaneExecutor, RayLanes, default_lanes, lanes_of, with_lanes
from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.vocab import SentenceTooLongError

MODES = tuple(m.value for m in Mode)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify a sentence (or a TSV of them) with a compiled circuit bundle")
    p.add_argument("text", nargs="?", help="the sentence")
    p.add_argument("--data", type=Path, help="instead of TEXT: a TSV (sentence<TAB>label); prints a summary")
    p.add_argument("--limit", type=int, default=None, help="with --data: the first N sentences")
    p.add_argument("--circuit", type=Path, default=SHIPPED_BUNDLE, help=f"bundle directory (default {SHIPPED_BUNDLE})")
    p.add_argument("--mode", choices=MODES, default="encrypted")
    p.add_argument("--lanes", type=int, default=None,
                   help="lanes for the encrypted run: the attention shifts split K ways, lanes 1..K-1 on Ray "
                        "actors (1: one process, no Ray; at most T; default 2 where ray is installed, else 1)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the lanes on the Ray cluster at ADDRESS (default: Ray embedded, 2 CPUs)")
    p.add_argument("--json", action="store_true", help="print one JSON object (per sentence with --data)")
    p.set_defaults(func=run)


class Predictor:
    """A bundle's client and server halves; per bucket the recompiled circuit and, for encrypted
    mode, keys and executor (with its Ray lane workers) made once and reused. Close it when done."""

    def __init__(self, bundle: Path, mode: str = "encrypted", lanes: int = 2, ray: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self.bundle, self.mode, self.lanes, self.ray = Path(bundle), mode, lanes, ray
        self.client = ClientBundle.load(bundle)
        self._plans: dict[tuple[int, int], object] = {}
        self._keys: dict[int, tuple] = {}
        self._runners: dict[tuple[int, object], tuple] = {}
        self._pool = None  # RayLanes, started with the first encrypted run on more than one lane

    def _plan(self, T: int, n: int):
        """The bundled circuit for n tokens (hash-checked), recompiled when asked for more lanes than it has."""
        if (T, n) not in self._plans:
            plan = load_bundle(self.bundle, T, n)
            if self.lanes > len(lanes_of(plan.compiled.circuit)):
                plan = with_lanes(plan, self.lanes, load_weights(self.bundle))
            self._plans[T, n] = plan
        return self._plans[T, n]

    def lanes_for(self, plan) -> int:
        """Lanes an encrypted run of this plan uses (at most the circuit's, 1 without Ray)."""
        return min(self.lanes, len(lanes_of(plan.compiled.circuit)))

    def _bucket_keys(self, T: int, plan) -> tuple:
        """(keys, seconds to make them): one key set per bucket, for every plan's rotation steps."""
        if T not in self._keys:
            t = time.perf_counter()
            steps = set(load_bucket(self.bundle, T).rotation_steps)
            if self.lanes > 2:  # recompiled lanes start further apart
                steps |= set(range(1, self.lanes + 1))
            self._keys[T] = (keygen(plan.params, sorted(steps)), time.perf_counter() - t)
        return self._keys[T]

    def _runner(self, T: int, n: int) -> tuple:
        """(runner, key bytes, seconds to make the keys, seconds to encode the weights and start the workers)."""
        plan = self._plan(T, n)
        key = (T, plan.compiled.plan)
        if key not in self._runners:
            keys, key_seconds = self._bucket_keys(T, plan)
            t = time.perf_counter()
            if self.lanes_for(plan) > 1 and self._pool is None:
                self._pool = RayLanes(self.lanes - 1, self.ray)
            runner = make_executor(Mode.ENCRYPTED, plan.compiled, plan.params, keys=keys, prepare=True,
                                   pool=self._pool if self.lanes_for(plan) > 1 else None)
            self._runners[key] = (runner, len(keys.public_blob), key_seconds, time.perf_counter() - t)
        return self._runners[key]

    def predict(self, text: str) -> dict:
        """The prediction and its accounting as one JSON-ready dict."""
        prep = self.client.prepare(text)
        t = time.perf_counter()
        plan = self._plan(prep.T, prep.n_tokens)
        compile_seconds = time.perf_counter() - t
        comp, params = plan.compiled, plan.params
        t = time.perf_counter()
        plain = make_executor(Mode.PLAIN, comp).run(prep.x0, prep.m).logits
        shifts = comp.plan
        out: dict = {"mode": self.mode, "T": prep.T, "n_tokens": prep.n_tokens, "plain_logits": plain.tolist(),
                     "plan": None if shifts is None else {"B": shifts.B, "shifts": shifts.m,
                                                          "regions": shifts.regions(prep.n_tokens)},
                     "depth": plan.depth, "refreshes": plan.refreshes, "compile_seconds": compile_seconds,
                     "seconds": time.perf_counter() - t, "max_abs_error": 0.0, "predicted_error_bound": None}
        logits = plain
        if self.mode != "plain":
            t = time.perf_counter()
            sim = make_executor(Mode.SIMULATE, comp, params, CostTable.shipped(params.poly_modulus_degree),
                                strict=False).run(prep.x0, prep.m)
            one = float(sum(sim.seconds.values()))
            out.update(predicted_error_bound=sim.noise_bound, approx_error=sim.approx_error,
                       counts=dict(sim.totals()), floor_seconds=sim.parallel_seconds if self.lanes_for(plan) > 1
                       else one, floor_seconds_one_process=one,
                       worst_range=max(max(r.ratio, r.garbage_ratio) for r in sim.ranges),
                       seconds=time.perf_counter() - t, max_abs_error=None)
            logits = sim.logits
        if self.mode == "encrypted":
            logits = self._encrypted(prep, out)
            out["max_abs_error"] = float(np.abs(logits - plain).max())
        out["logits"] = [float(v) for v in logits]
        out["label"] = self.client.labels[int(np.argmax(logits))]
        return out

    def _encrypted(self, prep, out: dict) -> np.ndarray:
        runner, key_bytes, key_seconds, setup_seconds = self._runner(prep.T, prep.n_tokens)
        parallel = isinstance(runner, RayLaneExecutor)
        t = time.perf_counter()
        res = runner.run(prep.x0, prep.m)
        out.update(seconds=time.perf_counter() - t, stage_seconds=res.seconds, client_seconds=res.client_seconds,
                   key_seconds=key_seconds, setup_seconds=setup_seconds, key_bytes=key_bytes,
                   lanes=runner.lanes if parallel else 1, ray_workers=len(self._pool.actors) if parallel else 0,
                   levels_used=measured_depth(runner.compiled.circuit, res.chain_index),
                   refreshes=res.refreshes, refresh_round_trips=self._plan(prep.T, prep.n_tokens).round_trips,
                   cpu_seconds=res.cpu_seconds,
                   worker_cpu_seconds=runner.worker_cpu_seconds if parallel else None,
                   transfer_seconds=runner.transfer_seconds if parallel else None,
                   store_bytes=runner.last.get("store_bytes") if parallel else None)
        return res.logits

    def close(self) -> None:
        self._runners.clear()
        self._keys.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict(bundle: Path, text: str, mode: str = "encrypted", lanes: int = 2, ray: str | None = None) -> dict:
    """One sentence, keys made for it alone (see Predictor to reuse them)."""
    with Predictor(bundle, mode, lanes, ray) as p:
        return p.predict(text)


def summarize(rows: list[dict], labels: list[int], names: list[str]) -> dict:
    """Over a data set: agreement with plain labels and with the data, errors against their bounds."""
    agree = sum(r["label"] == names[int(np.argmax(r["plain_logits"]))] for r in rows)
    within = [r for r in rows if r["max_abs_error"] is not None and r["predicted_error_bound"] is not None]
    return {"sentences": len(rows), "agree_with_plain": agree,
            "correct": sum(r["label"] == names[y] for r, y in zip(rows, labels)),
            "errors_within_bound": sum(r["max_abs_error"] <= r["predicted_error_bound"] for r in within),
            "max_abs_error": max((r["max_abs_error"] for r in within), default=None),
            "max_error_over_bound": max((r["max_abs_error"] / r["predicted_error_bound"] for r in within),
                                        default=None),
            "median_seconds": float(np.median([r["seconds"] for r in rows])) if rows else None}


def _text(r: dict) -> str:
    lines = [f"label {r['label']}   logits {np.round(r['logits'], 4).tolist()}   "
             f"(T={r['T']}, {r['n_tokens']} tokens, mode {r['mode']})"]
    if r["plan"] is not None:
        p = r["plan"]
        lines.append(f"attention: {p['shifts']} shifts over blocks of {p['B']} slots, {p['regions']} query regions")
    if r["mode"] != "plain":
        lines.append(f"plain logits {np.round(r['plain_logits'], 4).tolist()}; predicted error bound "
                     f"{r['predicted_error_bound']:.3g}; polynomial inputs reach {r['worst_range']:.0%} "
                     "of their interval")
        c = r["counts"]
        lines.append("op counts: " + ", ".join(f"{k} {c[k]}" for k in ("rotate", "mul", "relinearize", "mul_plain",
                                                                     "rescale", "add", "refresh") if k in c))
    if r["mode"] == "encrypted":
        lines.append(f"max |logit - plain logit| {r['max_abs_error']:.3g} (bound {r['predicted_error_bound']:.3g}); "
                     f"levels used {r['levels_used']} (simulator: {r['depth']}); "
                     f"{r['refresh_round_trips']} client refreshes")
        cpu = f"CPU {r['cpu_seconds']:.2f} s"
        if r["lanes"] > 1:
            cpu += f" + lane workers {r['worker_cpu_seconds']:.2f} s"
        floor = ("no cost table for this N" if r["floor_seconds_one_process"] == 0 else
                 f"{r['floor_seconds']:.2f} s ({r['floor_seconds_one_process']:.2f} s on one process)")
        lines.append(f"encryption to decryption {r['seconds']:.2f} s on {r['lanes']} lane(s) ({cpu}); "
                     f"op-count floor {floor}")
        lines.append(f"set-up (not timed above): keys {r['key_seconds']:.1f} s, {r['key_bytes'] / 1e6:.1f} MB; "
                     f"weights encoded and lane workers started {r['setup_seconds']:.1f} s")
        stages = {**r["stage_seconds"], "client (encrypt, refresh, decrypt)": r["client_seconds"]}
        lines += [f"  {k:36s} {v:7.2f} s" for k, v in stages.items() if k]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.data is None):
        raise SystemExit("predict takes either TEXT or --data FILE.tsv")
    lanes = args.lanes
    if lanes is None:
        lanes = default_lanes()
    elif lanes > 1 and importlib_missing("ray"):
        raise SystemExit("--lanes K > 1 runs lanes on Ray: pip install 'he-inhibitor[ray]'")
    if args.data is not None:  # read before any set-up: a bad file is refused at once, by name
        try:
            sentences, labels = load_sst2_tsv(args.data)
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: --data {args.data}: {err}")
    with Predictor(args.circuit, args.mode, lanes, args.ray) as p:
        if args.text is not None:
            r = p.predict(args.text)
            print(json.dumps(r) if args.json else _text(r))
            return 0
        rows, kept = [], []
        for text, y in list(zip(sentences, labels))[:args.limit]:
            try:
                rows.append(p.predict(text))
            except SentenceTooLongError:
                continue
            kept.append(y)
            r = rows[-1]
            print(json.dumps(r) if args.json else f"{r['label']:10s} err {r['max_abs_error'] or 0:.3g} / bound "
                  f"{r['predicted_error_bound'] or 0:.3g}  {r['seconds']:6.2f} s  {text[:60]}", flush=True)
        summary = summarize(rows, kept, p.client.labels)
        print(json.dumps(summary))
        ok = summary["agree_with_plain"] == len(rows) and summary["errors_within_bound"] == len(rows)
        return 0 if ok or args.mode != "encrypted" else 1


def importlib_missing(name: str) -> bool:
    return importlib.util.find_spec(name) is None
