"""Compiled-circuit bundles: `circuits/<name>/` on disk.

A bundle stores what determines the circuit, not its derived plaintexts:

* weights.npz: the student's parameters (StudentWeights), float64,
* student.json: head count, signed flag, and each non-linearity's fit (the
  approximation library's JSON) and bound,
* circuit.json: T, ring degree, precision, the chosen chain, and the node list
  (op, args, step, stage) with its SHA-256, for inspection and as a check,
* report.json: depth, refreshes, rotation steps and per-stage counts.

Loading recompiles (the linear diagonals, ~100 MB at N = 16384, are cheaper to
rebuild than to ship) and refuses a bundle whose recompiled node list hashes
differently from the stored one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from he_inhibitor.circuit.ir import Circuit
from he_inhibitor.circuit.params import Plan, Precision, plan_student
from he_inhibitor.circuit.poly import FitPoly
from he_inhibitor.circuit.stats import stage_stats
from he_inhibitor.circuit.weights import LayerWeights, Nonlin, StudentWeights

_ARRAYS = [f.name for f in fields(LayerWeights) if f.name not in ("gamma", "alpha", "beta", "abs_fn",
                                                                   "attn_relu", "ffn_relu")]
_NONLINS = ("abs_fn", "attn_relu", "ffn_relu")


def node_list(circuit: Circuit) -> list[list]:
    return [[n.op.value, list(n.args), n.arg, n.stage] for n in circuit.nodes]


def circuit_hash(circuit: Circuit) -> str:
    return hashlib.sha256(json.dumps(node_list(circuit)).encode()).hexdigest()


def _nonlin_json(nl: Nonlin) -> dict:
    if not isinstance(nl.fn, FitPoly):
        raise ValueError(f"only approximation-library fits can be bundled, not {nl.fn.name}")
    return {"fit": nl.fn.fit.to_json(), "bound": nl.bound}


def _nonlin(d: dict) -> Nonlin:
    from he_inhibitor.approx import Fit

    return Nonlin(FitPoly(Fit.from_json(d["fit"])), float(d["bound"]))


def save_bundle(sw: StudentWeights, T: int, out_dir: str | Path, n: int = 16384,
                precision: Precision = Precision()) -> Plan:
    """Compile, then write the bundle; returns the compiled plan."""
    plan = plan_student(sw, T, n, precision)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"sf": sw.sf, "tf": sw.tf, "wc": sw.wc, "bc": sw.bc}
    for i, lw in enumerate(sw.layers):
        arrays.update({f"l{i}.{k}": getattr(lw, k) for k in _ARRAYS})
    np.savez_compressed(out / "weights.npz", **arrays)
    student = {"n_heads": sw.n_heads, "signed": sw.signed, "layers": [
        {"gamma": lw.gamma, "alpha": lw.alpha, "beta": lw.beta, **{k: _nonlin_json(getattr(lw, k)) for k in _NONLINS}}
        for lw in sw.layers]}
    (out / "student.json").write_text(json.dumps(student, indent=1) + "\n")
    c = plan.compiled.circuit
    (out / "circuit.json").write_text(json.dumps({
        "T": T, "n": n, "precision": asdict(precision), "coeff_bits": list(plan.params.coeff_bits),
        "scale_bits": plan.params.scale_bits, "sha256": circuit_hash(c), "nodes": node_list(c)}) + "\n")
    (out / "report.json").write_text(json.dumps(report(plan), indent=1) + "\n")
    return plan


def report(plan: Plan) -> dict:
    c = plan.compiled.circuit
    return {"depth": plan.depth, "chain_levels": plan.params.depth, "refreshes": plan.refreshes,
            "refresh_round_trips": plan.round_trips, "rotation_steps": sorted(c.rotation_steps()),
            "coeff_bits": list(plan.params.coeff_bits), "n": plan.params.poly_modulus_degree,
            "stages": stage_stats(c)}


def load_weights(bundle: str | Path) -> StudentWeights:
    d = Path(bundle)
    student = json.loads((d / "student.json").read_text())
    with np.load(d / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    layers = tuple(LayerWeights(
        **{k: arrays[f"l{i}.{k}"] for k in _ARRAYS},
        gamma=float(ls["gamma"]), alpha=float(ls["alpha"]), beta=float(ls["beta"]),
        **{k: _nonlin(ls[k]) for k in _NONLINS}) for i, ls in enumerate(student["layers"]))
    return StudentWeights(int(student["n_heads"]), bool(student["signed"]), layers,
                          arrays["sf"], arrays["tf"], arrays["wc"], arrays["bc"])


def load_bundle(bundle: str | Path) -> Plan:
    """Recompile a bundle; raises ValueError if the circuit no longer matches the stored one."""
    d = Path(bundle)
    meta = json.loads((d / "circuit.json").read_text())
    plan = plan_student(load_weights(d), int(meta["T"]), int(meta["n"]), Precision(**meta["precision"]))
    if circuit_hash(plan.compiled.circuit) != meta["sha256"]:
        raise ValueError(f"{d}: the recompiled circuit differs from the bundled one (compiler or weights changed)")
    return plan
