"""Compiled-circuit bundles: a directory on disk (the shipped one: he_inhibitor/paths.py), one circuit per token bucket.

A bundle stores what determines the circuits, not their derived plaintexts:

* weights.npz: the student's parameters (StudentWeights), float64,
* student.json: head count, signed flag, and each non-linearity's fit (the
  approximation library's JSON) and bound,
* circuit-t<T>.json per bucket: T, ring degree, precision, the chosen chain,
  and the node list (op, args, step, stage, lane) with its SHA-256,
* report.json: per bucket depth, refreshes, rotation steps, serialized
  evaluation-key bytes and per-stage counts,
* client/: all the client reads (tokenizer.json; model.safetensors holding
  only the word and position tables in float16; signature.json with the
  buckets, layouts, parameters and label names), so a client never opens the
  torch model or imports torch.

Loading recompiles (the linear diagonals, ~100 MB at N = 16384, are cheaper to
rebuild than to ship) with the stored chain, and refuses a bundle whose
recompiled node list hashes differently from the stored one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from he_inhibitor.ckks import CkksParams
from he_inhibitor.circuit.compile import compile_student
from he_inhibitor.circuit.ir import Circuit, OpKind, depth, refresh_round_trips
from he_inhibitor.circuit.params import Plan, Precision, plan_student
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
    from he_inhibitor.approx import Fit

    return Nonlin(FitPoly(Fit.from_json(d["fit"])), float(d["bound"]))


def _circuit_file(T: int) -> str:
    return f"circuit-t{T}.json"


def key_bytes(plan: Plan) -> int:
    """Serialized (seeded) relinearization + Galois keys for exactly the circuit's steps."""
    from he_inhibitor.ckks import keygen

    return len(keygen(plan.params, sorted(plan.compiled.circuit.rotation_steps())).public_blob)


def save_bundle(sw: StudentWeights, buckets: int | Sequence[int], out_dir: str | Path, n: int = 16384,
                precision: Precision = Precision(), client: ClientAssets | None = None) -> dict[int, Plan]:
    """Compile one circuit per bucket, then write the bundle; returns the plans by T."""
    Ts = sorted({buckets} if isinstance(buckets, int) else set(buckets))
    plans = {T: plan_student(sw, T, n, precision) for T in Ts}
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
    for T, plan in plans.items():
        c = plan.compiled.circuit
        (out / _circuit_file(T)).write_text(json.dumps({
            "T": T, "n": n, "precision": asdict(precision), "coeff_bits": list(plan.params.coeff_bits),
            "scale_bits": plan.params.scale_bits, "refreshes": plan.refreshes,
            "main_shifts": plan.compiled.main_shifts,
            "sha256": circuit_hash(c), "nodes": node_list(c)}) + "\n")
    reports = {str(T): {**report(plan), "key_bytes": key_bytes(plan)} for T, plan in plans.items()}
    (out / "report.json").write_text(json.dumps({"buckets": reports}, indent=1) + "\n")
    if client is not None:
        _save_client(out / CLIENT_DIR, plans, client)
    return plans


def _save_client(d: Path, plans: dict[int, Plan], assets: ClientAssets) -> None:
    from safetensors.numpy import save_file

    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.json").write_text(assets.tokenizer_json)
    save_file({"word.weight": np.ascontiguousarray(assets.word, dtype=np.float16),
               "pos.weight": np.ascontiguousarray(assets.pos, dtype=np.float16)}, str(d / "model.safetensors"))
    sig = {"max_len": int(assets.pos.shape[0]), "labels": list(assets.labels),
           "buckets": {str(T): signature(plan, assets.labels) for T, plan in plans.items()}}
    (d / SIGNATURE_FILE).write_text(json.dumps(sig, indent=1) + "\n")


def signature(plan: Plan, labels: Sequence[str]) -> dict:
    """One bucket's client-facing description (the fields of service.protocol.Signature)."""
    comp, params = plan.compiled, plan.params
    c = comp.circuit
    if len(labels) != comp.pool_w.shape[1]:
        raise ValueError(f"{len(labels)} label names for a circuit with {comp.pool_w.shape[1]} logits")
    return {
        "poly_modulus_degree": params.poly_modulus_degree, "coeff_bits": list(params.coeff_bits),
        "scale_bits": params.scale_bits, "T": comp.T, "n_slots": c.n_slots,
        "block_of": list(comp.layout.block_of), "inputs": list(comp.pack_input(np.zeros((comp.T, comp.layout.d)))),
        "outputs": list(c.outputs), "input_level": params.depth, "rotation_steps": sorted(c.rotation_steps()),
        "logit_slots": [int(s) for s in comp.read_logits(np.arange(c.n_slots, dtype=np.float64))],
        "labels": list(labels), "depth": plan.depth, "refreshes": plan.refreshes,
    }


def report(plan: Plan) -> dict:
    c = plan.compiled.circuit
    return {"T": plan.compiled.T, "depth": plan.depth, "chain_levels": plan.params.depth,
            "refreshes": plan.refreshes, "refresh_round_trips": plan.round_trips,
            "rotation_steps": sorted(c.rotation_steps()), "coeff_bits": list(plan.params.coeff_bits),
            "n": plan.params.poly_modulus_degree, "stages": stage_stats(c)}


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


def load_bundle(bundle: str | Path, T: int | None = None) -> Plan:
    """Recompile bucket T (default: the smallest) with its stored chain; ValueError if it no longer matches."""
    d = Path(bundle)
    Ts = buckets_of(d)
    if not Ts:
        raise FileNotFoundError(f"{d}: no circuit-t<T>.json: not a circuit bundle")
    T = Ts[0] if T is None else T
    if T not in Ts:
        raise ValueError(f"{d} has buckets {Ts}, not T={T}")
    meta = json.loads((d / _circuit_file(T)).read_text())
    params = CkksParams(int(meta["n"]), tuple(meta["coeff_bits"]), int(meta["scale_bits"]))
    compiled = compile_student(load_weights(d), T, params.slots,
                               max_level=params.depth if meta["refreshes"] else None,
                               main_shifts=meta["main_shifts"])
    c = compiled.circuit
    if circuit_hash(c) != meta["sha256"]:
        raise ValueError(f"{d}: the recompiled circuit differs from the bundled one (compiler or weights changed)")
    return Plan(compiled, params, depth(c, through_refresh=True), len(c.of_kind(OpKind.REFRESH)),
                refresh_round_trips(c))
