"""Bundles round-trip: each bucket's reloaded circuit is node-for-node the compiled one and computes the same logits."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from he_inhibitor.circuit.bundle import buckets_of, circuit_hash, load_bundle, save_bundle  # noqa: E402
from he_inhibitor.circuit.executors import make_executor  # noqa: E402
from he_inhibitor.circuit.params import Precision  # noqa: E402
from he_inhibitor.circuit.weights import from_torch  # noqa: E402
from test_circuit_compile import T, random_student, sentence  # noqa: E402


def test_bundle_round_trip(tmp_path):
    model = random_student(True, key_norm=0.5, qkv_conv=3, rel_bias=True)  # key norm, conv taps, relative bias travel
    prec = Precision(28, 40, 60)
    plans = save_bundle(from_torch(model), [T, 2 * T], tmp_path / "b", n=8192, precision=prec)
    assert buckets_of(tmp_path / "b") == [T, 2 * T]
    back = load_bundle(tmp_path / "b")  # the smallest bucket
    plan = plans[T]
    assert circuit_hash(back.compiled.circuit) == circuit_hash(plan.compiled.circuit)
    assert back.params == plan.params and back.depth == plan.depth and back.refreshes == plan.refreshes
    want, x0, m = sentence(model, 4)
    got = make_executor("plain", back.compiled).run(x0, m).logits
    np.testing.assert_allclose(got, want, rtol=1e-9)
    rep = json.loads((tmp_path / "b" / "report.json").read_text())["buckets"][str(T)]
    assert rep["depth"] == plan.depth and rep["rotation_steps"] == sorted(plan.compiled.circuit.rotation_steps())
    assert rep["key_bytes"] > 0
    meta = json.loads((tmp_path / "b" / f"circuit-t{T}.json").read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / "b" / f"circuit-t{T}.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="differs"):
        load_bundle(tmp_path / "b")


def test_changed_weights_are_detected(tmp_path):
    """The hash covers the constants: new weights in the same structure are not the bundled circuit."""
    save_bundle(from_torch(random_student(False)), T, tmp_path / "b", n=8192, precision=Precision(28, 40, 60))
    with np.load(tmp_path / "b" / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["wc"] = arrays["wc"] * 1.5
    np.savez_compressed(tmp_path / "b" / "weights.npz", **arrays)
    with pytest.raises(ValueError, match="differs"):
        load_bundle(tmp_path / "b")
