"""Compiled-circuit bundles: a directory on disk (the shipped one: he_inhibitor/paths.py), one circuit per token bucket.

A bundle stores what determines the circuits, not their derived plaintexts:

* weights.npz: the student's parameters (StudentWeights), float64,
* student.json: head count, signed flag, and each non-linearity's fit (the
  approximation library's JSON) and bound,
* circuit-t<T>.json per bucket: T, ring degree, precision, the chosen chain,
  the attention plan of every token count the bucket takes (arrange.py:
  sentences of different lengths run different circuits), and the SHA-256 of
  each plan's circuit (node list and constants), and the union of their
  rotation steps (the bucket's key set),
* report.json: per bucket depth, refreshes, rotation steps, serialized
  evaluation-key bytes and per-stage counts,
* client/: all the client reads (tokenizer.json; model.safetensors holding
  only the word and position tables in float16; signature.json with the
  buckets, layouts, parameters and label names), so a client never opens the
  torch model or imports torch.

Loading recompiles a plan's circuit when a sentence first needs it (the
linear diagonals, ~100 MB at N = 16384, are cheaper to rebuild than to ship)
with the stored chain, keeps them in memory (their diagonals shared), and refuses a circuit
whose recompiled node list hashes differently from the stored one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from he_inhibitor.approx import Fit
from he_inhibitor.ckks import CkksParams, keygen
from he_inhibitor.circuit.arrange import ShiftPlan, choose_plans
from he_inhibitor.circuit.arrange import one_region as arrange_one_region
from he_inhibitor.circuit.compile import Compiled, compile_student
from he_inhibitor.circuit.costs import CostTable
from he_inhibitor.circuit.ir import Circuit, refresh_round_trips
from he_inhibitor.circuit.noise import NoiseModel
from he_inhibitor.circuit.params import Plan, Precision, plan_of, plan_student
from he_inhibitor.circuit.simulate import simulate
from he_inhibitor.circuit.poly import FitPoly
from he_inhibitor.circuit.stats import stage_stats
from he_inhibitor.circuit.weights import LayerWeights, Nonlin, StudentWeights
from he_inhibitor.paths import CLIENT_DIR, SHIPPED_BUNDLE  # noqa: F401  (re-exported: predict, simulate and the service default to it)

BUCKETS = (32, 64)  # a sentence runs in the smallest bucket that holds it (max_len 64)
SIGNATURE_FILE = "signature.json"

_ARRAYS = [f.name for f in fields(LayerWeights) if f.name not in ("gamma", "alpha", "beta", "abs_fn",
                                                                   "attn_relu", "ffn_relu", "conv", "rel_bias")]
_OPTIONAL = ("conv", "rel_bias")  # per-layer arrays that only some students have
_NONLINS = ("abs_fn", "attn_relu", "ffn_relu")


@dataclass(frozen=True)
class ClientAssets:
    """What the client embeds with: the tokenizer file and the word/position tables."""

    tokenizer_json: str
    word: np.ndarray  # [vocab, d]
    pos: np.ndarray  # [max_len, d]
    labels: tuple[str, ...]


def node_list(circuit: Circuit) -> list[list]:
    return [[n.op.value, list(n.args), n.arg, n.stage, n.lane] for n in circuit.nodes]


def circuit_hash(circuit: Circuit) -> str:
    """SHA-256 of the node list and every constant (the weights), so new weights give a new hash.

    Constants are hashed as float32: a last-bit difference in a float64
    product on another machine's BLAS must not change the identity.
    """
    h = hashlib.sha256(json.dumps(node_list(circuit)).encode())
    for c in circuit.consts:
        h.update(c.encode() if isinstance(c, str) else np.asarray(c, dtype=np.float32).tobytes())
        h.update(b"\0")
    return h.hexdigest()


def _nonlin_json(nl: Nonlin) -> dict:
    if not isinstance(nl.fn, FitPoly):
        raise ValueError(f"only approximation-library fits can be bundled, not {nl.fn.name}")
    return {"fit": nl.fn.fit.to_json(), "bound": nl.bound}


def _nonlin(d: dict) -> Nonlin:
    return Nonlin(FitPoly(Fit.from_json(d["fit"])), float(d["bound"]))


def _circuit_file(T: int) -> str:
    return f"circuit-t{T}.json"


def key_bytes(steps: Sequence[int], params: CkksParams) -> int:
    """Serialized (seeded) relinearization + Galois keys for exactly these steps."""
    return len(keygen(params, sorted(steps)).public_blob)


@dataclass(frozen=True)
class Bucket:
    """One token bucket: its parameters, the attention plan of each token count, one circuit per plan."""

    T: int
    params: CkksParams
    max_level: int | None
    plans: dict[int, ShiftPlan | None]  # tokens -> plan (None: a dot-product student, one circuit)
    hashes: dict[ShiftPlan | None, str]
    rotation_steps: tuple[int, ...]  # the union over the plans: the bucket's key set
    trips: dict[ShiftPlan | None, int]  # refresh round trips of each plan's circuit
    source: Path | None = None  # the bundle, whose weights a plan's circuit is rebuilt from
    weights: StudentWeights | None = None  # or the weights themselves (a bucket compiled in memory)
    compiled: Compiled | None = None  # or one circuit that serves every length (Bucket.of)
    lanes: int = 2  # the attention's lanes; a bundle records circuits of 2, others are recompiled from them

    @classmethod
    def of(cls, compiled: Compiled, params: CkksParams) -> Bucket:
        """One circuit for every token count it holds (e.g. compiled with the default plan)."""
        plans = {n: compiled.plan for n in range(1, compiled.T + 1) if compiled.holds(n)}
        return cls(compiled.T, params, compiled.max_level, plans, {compiled.plan: circuit_hash(compiled.circuit)},
                   tuple(sorted(compiled.circuit.rotation_steps())),
                   {compiled.plan: refresh_round_trips(compiled.circuit)}, compiled=compiled)

    def round_trips(self, n: int) -> int:
        """Refresh round trips of the circuit a sentence of n tokens runs: client and server hold to it."""
        return self.trips[self.plans[n]]

    def plan_for(self, n: int) -> Plan:
        """The compiled circuit for sentences of n tokens (recompiled, hash-checked)."""
        if n not in self.plans:
            raise ValueError(f"bucket T={self.T} takes {min(self.plans)} to {max(self.plans)} tokens, not {n}")
        if self.compiled is not None:
            return plan_of(self.compiled, self.params)
        if self.source is not None:
            plan = _plan(self.source, self.T, self.plans[n], _stamp(self.source, self.T))
        elif self.weights is None:
            raise ValueError("this bucket has neither a bundle nor weights to compile from")
        else:
            plan = _checked(self, self.weights, self.plans[n])
        return plan if self.lanes == 2 else _relaned(plan, self.lanes,
                                                      self.weights or load_weights(self.source))

    def plans_json(self) -> dict[str, list[int] | None]:
        return {str(n): (None if p is None else p.as_json()) for n, p in sorted(self.plans.items())}

    def trips_json(self) -> dict[str, int]:
        return {str(n): self.trips[p] for n, p in sorted(self.plans.items())}


@dataclass(frozen=True)
class PlanSummary:
    """What a bundle records of one plan's circuit, without keeping its ~100 MB of diagonals."""

    depth: int
    refreshes: int
    round_trips: int
    rotation_steps: tuple[int, ...]
    stages: dict
    sha256: str
    predicted_seconds: float

    @classmethod
    def of(cls, plan: Plan, predicted_seconds: float) -> PlanSummary:
        c = plan.compiled.circuit
        return cls(plan.depth, plan.refreshes, plan.round_trips, tuple(sorted(c.rotation_steps())), stage_stats(c),
                   circuit_hash(c), predicted_seconds)


def _plan_key(p: ShiftPlan | None) -> str:
    return "all" if p is None else f"{p.B},{p.m}"


def _predicted_seconds(plan: Plan, n_tokens: int) -> float:
    """The simulator's predicted serial seconds for one sentence of n tokens (zero input: costs only)."""
    comp, params = plan.compiled, plan.params
    m = (np.arange(comp.T) < n_tokens).astype(np.float64)
    sim = simulate(comp, NoiseModel.of(params), np.zeros((comp.T, comp.layout.d)), m,
                   CostTable.shipped(params.poly_modulus_degree), chain=params.depth, strict=False)
    return float(sum(sim.seconds.values()))


def plan_bucket(sw: StudentWeights, T: int, tokens: Sequence[int], n: int = 16384,
                precision: Precision = Precision(), one_region: bool = False
                ) -> tuple[Bucket, Plan, dict[ShiftPlan | None, PlanSummary]]:
    """Compile a bucket: the chain from the plan that holds every n <= T, then for each token count
    the candidate plan (arrange.candidates) the simulator predicts cheapest, on that chain.

    one_region: every token count n runs n shifts in one query region (arrange.one_region): the
    shifts follow n but the blocks stay half empty, the comparison target for the packing.
    Returns the bucket (compiling from `sw`), the base plan's circuit and a summary of each used plan.
    """
    base = plan_student(sw, T, n, precision)
    params, max_level = base.params, base.compiled.max_level

    def build(p: ShiftPlan | None) -> Plan:
        if p == base.compiled.plan:
            return base
        return plan_of(compile_student(sw, T, params.slots, max_level=max_level, shifts=p), params)

    def held(p: ShiftPlan) -> int:
        return max(t for t in range(1, T + 1) if p.holds(t))

    cost = _affine_cost(build, held)
    if base.compiled.plan is None:  # dot-product attention: one circuit for every length
        plans: dict[int, ShiftPlan | None] = {t: None for t in tokens}
    elif one_region:
        plans = {t: arrange_one_region(T, t) for t in tokens}
    else:
        plans = dict(choose_plans(tokens, T, base.compiled.layout, sw.n_heads, cost))
    summaries = {}
    for p in set(plans.values()):
        plan = build(p)
        summaries[p] = PlanSummary.of(plan, _predicted_seconds(plan, T) if p is None else cost(p))
    steps = tuple(sorted({st for s in summaries.values() for st in s.rotation_steps}))
    bucket = Bucket(T, params, max_level, plans, {p: s.sha256 for p, s in summaries.items()}, steps,
                    {p: s.round_trips for p, s in summaries.items()}, weights=sw)
    return bucket, base, summaries


def _affine_cost(build, held):
    """The simulator's predicted seconds of a plan, from two simulated plans per block width B.

    Every shift adds the same operations at the same levels, so at fixed B the cost is affine in the
    shift count m: simulating the plans of 1 and of 2 shifts prices every m exactly, instead of
    simulating dozens of circuits of ~2 s each.
    """
    lines: dict[int, tuple[float, float]] = {}

    def cost(p: ShiftPlan) -> float:
        if p.B not in lines:
            lo, hi = ShiftPlan(p.B, 1), ShiftPlan(p.B, 2)
            c1, c2 = (_predicted_seconds(build(q), held(q)) for q in (lo, hi))
            lines[p.B] = (c1, c2 - c1)
        c1, per_shift = lines[p.B]
        return c1 + per_shift * (p.m - 1)

    return cost


def _relaned(plan: Plan, lanes: int, sw: StudentWeights) -> Plan:
    """The plan's circuit recompiled with its shifts on `lanes` lanes: the same chain, depth and round trips."""
    comp = plan.compiled
    new = plan_of(compile_student(sw, comp.T, plan.params.slots, max_level=comp.max_level, lanes=lanes,
                                  shifts=comp.plan), plan.params)
    if (new.depth, new.round_trips) != (plan.depth, plan.round_trips):
        raise ValueError(f"{lanes} lanes change the circuit's depth or round trips")
    return new


def _checked(bucket: Bucket, sw: StudentWeights, shifts: ShiftPlan | None) -> Plan:
    compiled = compile_student(sw, bucket.T, bucket.params.slots, max_level=bucket.max_level, shifts=shifts)
    if circuit_hash(compiled.circuit) != bucket.hashes.get(shifts):
        raise ValueError(f"the recompiled circuit of bucket T={bucket.T}, plan {shifts} differs from the bundled "
                         "one (compiler or weights changed)")
    return plan_of(compiled, bucket.params)


def save_bundle(sw: StudentWeights, buckets: int | Sequence[int], out_dir: str | Path, n: int = 16384,
                precision: Precision = Precision(), client: ClientAssets | None = None,
                one_region: bool = False) -> dict[int, Bucket]:
    """Compile every bucket (a sentence of n tokens runs in the smallest T >= n), then write the bundle."""
    Ts = sorted({buckets} if isinstance(buckets, int) else set(buckets))
    compiled = {T: plan_bucket(sw, T, range(lo + 1, T + 1), n, precision, one_region)
                for lo, T in zip([0] + Ts, Ts)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"sf": sw.sf, "tf": sw.tf, "wc": sw.wc, "bc": sw.bc}
    for i, lw in enumerate(sw.layers):
        arrays.update({f"l{i}.{k}": getattr(lw, k) for k in _ARRAYS})
        arrays.update({f"l{i}.{k}": getattr(lw, k) for k in _OPTIONAL if getattr(lw, k) is not None})
    np.savez_compressed(out / "weights.npz", **arrays)
    student = {"n_heads": sw.n_heads, "signed": sw.signed, "key_norm": sw.key_norm, "layers": [
        {"gamma": lw.gamma, "alpha": lw.alpha, "beta": lw.beta, **{k: _nonlin_json(getattr(lw, k)) for k in _NONLINS}}
        for lw in sw.layers]}
    (out / "student.json").write_text(json.dumps(student, indent=1) + "\n")
    for T, (bucket, _, _) in compiled.items():
        (out / _circuit_file(T)).write_text(json.dumps({
            "T": T, "n": n, "precision": asdict(precision), "coeff_bits": list(bucket.params.coeff_bits),
            "scale_bits": bucket.params.scale_bits, "max_level": bucket.max_level,
            "plans": bucket.plans_json(), "sha256": {_plan_key(p): h for p, h in bucket.hashes.items()},
            "round_trips": {_plan_key(p): k for p, k in bucket.trips.items()},
            "rotation_steps": list(bucket.rotation_steps)}, indent=1) + "\n")
    reports = {str(T): report(bucket, summaries) for T, (bucket, _, summaries) in compiled.items()}
    (out / "report.json").write_text(json.dumps({"buckets": reports}, indent=1) + "\n")
    if client is not None:
        _save_client(out / CLIENT_DIR, {T: b for T, (b, _, _) in compiled.items()},
                     {T: base for T, (_, base, _) in compiled.items()}, client)
    _plan.cache_clear()
    return {T: replace(b, source=out.resolve(), weights=None) for T, (b, _, _) in compiled.items()}


def _save_client(d: Path, buckets: dict[int, Bucket], any_plan: dict[int, Plan], assets: ClientAssets) -> None:
    from safetensors.numpy import save_file

    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.json").write_text(assets.tokenizer_json)
    save_file({"word.weight": np.ascontiguousarray(assets.word, dtype=np.float16),
               "pos.weight": np.ascontiguousarray(assets.pos, dtype=np.float16)}, str(d / "model.safetensors"))
    sig = {"max_len": int(assets.pos.shape[0]), "labels": list(assets.labels),
           "buckets": {str(T): signature(b, any_plan[T], assets.labels) for T, b in buckets.items()}}
    (d / SIGNATURE_FILE).write_text(json.dumps(sig, indent=1) + "\n")


def signature(bucket: Bucket, plan: Plan, labels: Sequence[str]) -> dict:
    """One bucket's client-facing description (the fields of service.protocol.Signature).

    The layout of x, the head count and the plan of each token count tell the
    client how to pack its inputs and answer the refreshes (arrange.py); the
    depth and round trips are the same for every plan of a bucket.
    """
    comp, params = plan.compiled, bucket.params
    c = comp.circuit
    if len(labels) != comp.pool_w.shape[1]:
        raise ValueError(f"{len(labels)} label names for a circuit with {comp.pool_w.shape[1]} logits")
    return {
        "poly_modulus_degree": params.poly_modulus_degree, "coeff_bits": list(params.coeff_bits),
        "scale_bits": params.scale_bits, "T": comp.T, "n_slots": c.n_slots,
        "block_of": list(comp.layout.block_of), "n_heads": comp.n_heads, "plans": bucket.plans_json(),
        "outputs": list(c.outputs), "input_level": params.depth, "rotation_steps": list(bucket.rotation_steps),
        "logit_slots": [int(s) for s in comp.read_logits(np.arange(c.n_slots, dtype=np.float64))],
        "labels": list(labels), "depth": plan.depth, "refreshes": max(bucket.trips.values()),
        "round_trips": bucket.trips_json(),
    }


def report(bucket: Bucket, summaries: dict[ShiftPlan | None, PlanSummary]) -> dict:
    """Per bucket: chain, keys, and per plan the tokens it serves, depth, round trips, op counts, predicted seconds."""
    by_plan = {_plan_key(p): {"tokens": [t for t, q in sorted(bucket.plans.items()) if q == p],
                              **{k: v for k, v in asdict(s).items() if k != "sha256"}}
               for p, s in sorted(summaries.items(), key=lambda kv: _plan_key(kv[0]))}
    return {"T": bucket.T, "chain_levels": bucket.params.depth, "coeff_bits": list(bucket.params.coeff_bits),
            "n": bucket.params.poly_modulus_degree, "rotation_steps": list(bucket.rotation_steps),
            "key_bytes": key_bytes(bucket.rotation_steps, bucket.params), "plans": by_plan}


def buckets_of(bundle: str | Path) -> list[int]:
    return sorted(int(p.stem.split("-t")[1]) for p in Path(bundle).glob("circuit-t*.json"))


def load_weights(bundle: str | Path) -> StudentWeights:
    d = Path(bundle)
    student = json.loads((d / "student.json").read_text())
    with np.load(d / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    layers = tuple(LayerWeights(
        **{k: arrays[f"l{i}.{k}"] for k in _ARRAYS},
        gamma=float(ls["gamma"]), alpha=float(ls["alpha"]), beta=float(ls["beta"]),
        **{k: _nonlin(ls[k]) for k in _NONLINS}, **{k: arrays.get(f"l{i}.{k}") for k in _OPTIONAL})
        for i, ls in enumerate(student["layers"]))
    return StudentWeights(int(student["n_heads"]), bool(student["signed"]), layers,
                          arrays["sf"], arrays["tf"], arrays["wc"], arrays["bc"],
                          float(student.get("key_norm", 0.0)))  # bundles from before key_norm: the plain sum


def load_bucket(bundle: str | Path, T: int | None = None) -> Bucket:
    """Bucket T (default: the smallest) of a bundle: parameters, plan table, hashes, key steps."""
    d = Path(bundle).resolve()
    Ts = buckets_of(d)
    if not Ts:
        raise FileNotFoundError(f"{d}: no circuit-t<T>.json: not a circuit bundle")
    T = Ts[0] if T is None else T
    if T not in Ts:
        raise ValueError(f"{d} has buckets {Ts}, not T={T}")
    meta = json.loads((d / _circuit_file(T)).read_text())
    if "plans" not in meta:
        raise ValueError(f"{d}: a bundle from before per-length attention plans; recompile it (he-inhibitor compile)")
    params = CkksParams(int(meta["n"]), tuple(meta["coeff_bits"]), int(meta["scale_bits"]))
    plans = {int(t): None if p is None else ShiftPlan(*p) for t, p in meta["plans"].items()}
    key = lambda k: None if k == "all" else ShiftPlan(*map(int, k.split(",")))  # noqa: E731
    hashes = {key(k): h for k, h in meta["sha256"].items()}
    trips = {key(k): int(t) for k, t in meta["round_trips"].items()}
    return Bucket(T, params, meta["max_level"], plans, hashes, tuple(meta["rotation_steps"]), trips, d)


def _stamp(bundle: Path, T: int) -> tuple[int, int]:
    """When the bucket's files last changed: a rewritten bundle is never served from the cache."""
    return (bundle / _circuit_file(T)).stat().st_mtime_ns, (bundle / "weights.npz").stat().st_mtime_ns


@lru_cache(maxsize=24)
def _plan(bundle: Path, T: int, shifts: ShiftPlan | None, stamp: tuple[int, int]) -> Plan:
    """One plan's circuit, recompiled from the bundle's weights; ValueError if it no longer matches.

    Cached (keyed by the files' stamp), as many as the shipped bundle's two buckets have (22): the
    plans of a bucket share their linear layers' diagonals (linear.compile_group keeps them), so a
    plan beyond the first costs about 3 MB and 0.15 s instead of ~100 MB and 1 s."""
    bucket = load_bucket(bundle, T)
    compiled = compile_student(load_weights(bundle), T, bucket.params.slots, max_level=bucket.max_level,
                               shifts=shifts)
    if circuit_hash(compiled.circuit) != bucket.hashes.get(shifts):
        raise ValueError(f"{bundle}: the recompiled circuit of bucket T={T}, plan {shifts} differs from the "
                         "bundled one (compiler or weights changed)")
    return plan_of(compiled, bucket.params)


def load_bundle(bundle: str | Path, T: int | None = None, n: int | None = None) -> Plan:
    """The circuit of bucket T (default: the smallest) for sentences of n tokens (default: T)."""
    bucket = load_bucket(bundle, T)
    return bucket.plan_for(bucket.T if n is None else n)
