"""Bundles round-trip: each bucket's reloaded circuit is node-for-node the compiled one and computes the same logits."""

import json

import numpy as np
import pytest


from he_inhibitor.circuit.bundle import buckets_of, circuit_hash, load_bundle, save_bundle
from he_inhibitor.circuit.compile import compile_student
from he_inhibitor.circuit.executors import make_executor
from he_inhibitor.circuit.params import Precision
from he_inhibitor.circuit.weights import from_torch
from test_circuit_compile import T, random_student, sentence


def test_bundle_round_trip(tmp_path):
    """Every token count of every bucket has a recorded plan; its reloaded circuit is the one compiled
    for that plan (hash-checked) and computes the torch student's logits."""
    model = random_student(True, key_norm=0.5, rel_bias=True)  # key norm and relative bias travel
    prec = Precision(28, 40, 60)
    sw = from_torch(model)
    buckets = save_bundle(sw, [T, 2 * T], tmp_path / "b", n=8192, precision=prec)
    assert buckets_of(tmp_path / "b") == [T, 2 * T]
    assert sorted(buckets[T].plans) == list(range(1, T + 1))
    assert sorted(buckets[2 * T].plans) == list(range(T + 1, 2 * T + 1))
    rep = json.loads((tmp_path / "b" / "report.json").read_text())["buckets"][str(T)]
    assert rep["key_bytes"] > 0
    for n in (1, 4, T):
        back = load_bundle(tmp_path / "b", T, n)
        shifts = buckets[T].plans[n]
        assert back.compiled.plan == shifts and shifts.holds(n)
        assert circuit_hash(back.compiled.circuit) == buckets[T].hashes[shifts]
        fresh = compile_student(sw, T, back.params.slots, max_level=back.compiled.max_level, shifts=shifts)
        assert circuit_hash(fresh.circuit) == circuit_hash(back.compiled.circuit)
        want, x0, m = sentence(model, n)
        np.testing.assert_allclose(make_executor("plain", back.compiled).run(x0, m).logits, want, rtol=1e-9)
        key = f"{shifts.B},{shifts.m}"
        assert n in rep["plans"][key]["tokens"] and rep["plans"][key]["depth"] == back.depth
        assert set(back.compiled.circuit.rotation_steps()) <= set(rep["rotation_steps"])
    with pytest.raises(ValueError, match="takes 1 to"):
        load_bundle(tmp_path / "b", T, T + 1)
    meta = json.loads((tmp_path / "b" / f"circuit-t{T}.json").read_text())
    meta["sha256"] = {k: "0" * 64 for k in meta["sha256"]}
    (tmp_path / "b" / f"circuit-t{T}.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="differs"):
        load_bundle(tmp_path / "b", T, 4)


def test_changed_weights_are_detected(tmp_path):
    """The hash covers the constants: new weights in the same structure are not the bundled circuit."""
    save_bundle(from_torch(random_student(False)), T, tmp_path / "b", n=8192, precision=Precision(28, 40, 60))
    with np.load(tmp_path / "b" / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["wc"] = arrays["wc"] * 1.5
    np.savez_compressed(tmp_path / "b" / "weights.npz", **arrays)
    with pytest.raises(ValueError, match="differs"):
        load_bundle(tmp_path / "b")
