"""Bundles round-trip: the reloaded circuit is node-for-node the compiled one and computes the same logits."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from he_inhibitor.circuit.bundle import circuit_hash, load_bundle, save_bundle  # noqa: E402
from he_inhibitor.circuit.executors import make_executor  # noqa: E402
from he_inhibitor.circuit.params import Precision  # noqa: E402
from he_inhibitor.circuit.weights import from_torch  # noqa: E402
from test_circuit_compile import T, random_student, sentence  # noqa: E402


def test_bundle_round_trip(tmp_path):
    model = random_student(True)
    prec = Precision(28, 40, 60)
    plan = save_bundle(from_torch(model), T, tmp_path / "b", n=8192, precision=prec)
    back = load_bundle(tmp_path / "b")
    assert circuit_hash(back.compiled.circuit) == circuit_hash(plan.compiled.circuit)
    assert back.params == plan.params
    want, x0, m = sentence(model, 4)
    got = make_executor("plain", back.compiled).run(x0, m).logits
    np.testing.assert_allclose(got, want, rtol=1e-9)
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["depth"] == plan.depth and rep["rotation_steps"] == sorted(plan.compiled.circuit.rotation_steps())
    meta = json.loads((tmp_path / "b" / "circuit.json").read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / "b" / "circuit.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="differs"):
        load_bundle(tmp_path / "b")
