"""compile / predict / simulate on a tiny saved student: bundle contents, buckets, the client
without torch, encrypted error within the simulator's bound, loud range failures, weak
parameters refused."""

import json
import subprocess
from dataclasses import replace
import sys

import numpy as np
import pytest

import torch

from he_inhibitor.circuit.bundle import load_bundle, load_weights, save_bundle
from he_inhibitor.circuit.predict import predict
from he_inhibitor.ckks import InsecureParametersError
from he_inhibitor.cli import main
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig, save_student
from he_inhibitor.vocab import SPECIALS, make_tokenizer

WORDS = "the movie was good bad great awful not very fun dull film a an and it".split()
SHORT, LONG = "a great film", "the movie was not very good and it was a dull film"  # 5 and 14 tokens


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A one-layer student saved as the lead ships it, compiled for buckets 8 and 16 at N = 8192."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    cfg = StudentConfig(vocab_size=len(SPECIALS) + len(WORDS), max_len=16, d_model=16, n_heads=4, d_ff=32,
                        n_layers=1, dropout=0.0, abs_poly=PolySpec(6), relu_poly=PolySpec(6))
    save_student(Student(cfg).eval(), d / "student")
    make_tokenizer(list(SPECIALS) + WORDS).save(str(d / "student" / "tokenizer.json"))
    assert main(["compile", "--model", str(d / "student"), "--out", str(d / "b"), "--buckets", "8", "16",
                 "--n", "8192"]) == 0
    return d / "b"


def test_bundle_holds_what_the_client_needs(bundle):
    rep = json.loads((bundle / "report.json").read_text())
    assert set(rep["buckets"]) == {"8", "16"}
    for T, r in rep["buckets"].items():
        assert r["key_bytes"] > 0
        tokens = sorted(t for p in r["plans"].values() for t in p["tokens"])
        assert tokens == list(range(1, 9) if T == "8" else range(9, 17))  # every length has its plan
        for key, p in r["plans"].items():
            plan = load_bundle(bundle, int(T), p["tokens"][0])
            assert p["depth"] == plan.depth and set(p["rotation_steps"]) <= set(r["rotation_steps"])
            assert f"{plan.compiled.plan.B},{plan.compiled.plan.m}" == key
    sig = json.loads((bundle / "client" / "signature.json").read_text())
    assert sig["labels"] == ["negative", "positive"] and sig["max_len"] == 16
    from safetensors.numpy import load_file

    tables = load_file(str(bundle / "client" / "model.safetensors"))
    assert set(tables) == {"word.weight", "pos.weight"} and tables["word.weight"].dtype == np.float16


def test_client_side_does_not_import_torch(bundle):
    code = ("import sys; from he_inhibitor.circuit.predict import predict; "
            f"r = predict({str(bundle)!r}, {SHORT!r}, 'plain'); sys.exit(('torch' in sys.modules) or r['T'] != 8)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_predict_modes_and_buckets(bundle, capsys):
    plain = predict(bundle, SHORT, "plain")
    sim = predict(bundle, SHORT, "simulate")
    assert plain["T"] == 8 and predict(bundle, LONG, "plain")["T"] == 16
    assert sim["logits"] == plain["logits"] == plain["plain_logits"] and sim["predicted_error_bound"] > 0
    assert main(["predict", "--circuit", str(bundle), "--mode", "encrypted", "--json", LONG]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"label", "logits", "plain_logits", "max_abs_error", "predicted_error_bound", "depth", "seconds"} <= set(r)
    assert r["lanes"] == 2 and r["ray_workers"] == 1  # lane 1 on a Ray actor (embedded Ray)
    assert r["levels_used"] == r["depth"]  # SEAL consumed what the simulator predicted
    assert 0 < r["max_abs_error"] <= r["predicted_error_bound"]
    assert r["label"] == ["negative", "positive"][int(np.argmax(r["plain_logits"]))]


def test_simulate_reports_ranges_and_fails_loudly(bundle, tmp_path, capsys):
    data = tmp_path / "dev.tsv"
    data.write_text(f"sentence\tlabel\n{SHORT}\t1\n{LONG}\t0\n")
    assert main(["simulate", "--circuit", str(bundle), "--data", str(data), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["sentences"] == 2 and all(p["inside"] for p in rep["polynomials"].values())
    assert all(p["ratio"] > 0 for p in rep["polynomials"].values())
    # the same student compiled with the FFN ReLU's bound shrunk: inputs far outside [-1, 1]
    sw = load_weights(bundle)
    l0 = sw.layers[0]
    tight = tmp_path / "tight"
    save_bundle(replace(sw, layers=(replace(l0, ffn_relu=replace(l0.ffn_relu, bound=1e-3)),) + sw.layers[1:]),
                [8, 16], tight, n=8192)
    (tight / "client").symlink_to(bundle / "client")
    assert main(["simulate", "--circuit", str(tight), "--data", str(data), "--limit", "1"]) == 1
    out = capsys.readouterr().out
    assert "OUT OF RANGE: layer0.ffn relu" in out and "sentence 0" in out


def test_weak_parameters_in_a_bundle_are_refused(bundle, tmp_path):
    for f in bundle.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    meta = json.loads((tmp_path / "circuit-t8.json").read_text())
    meta["coeff_bits"] = [60] * 4  # 240 bits > 218 at N = 8192
    (tmp_path / "circuit-t8.json").write_text(json.dumps(meta))
    with pytest.raises(InsecureParametersError):
        load_bundle(tmp_path, 8)


def test_predict_over_a_data_file(bundle, tmp_path, capsys):
    data = tmp_path / "dev.tsv"
    data.write_text(f"sentence\tlabel\n{SHORT}\t1\n{LONG}\t0\n{SHORT} and it was fun\t1\n")
    assert main(["predict", "--circuit", str(bundle), "--data", str(data), "--limit", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sentences"] == 2 and summary["agree_with_plain"] == 2 and summary["errors_within_bound"] == 2


@pytest.mark.parametrize("content", [None, "a\tb\n", "sentence\tlabel\nfine\tnot-a-label\n"])
def test_predict_refuses_a_bad_data_file_by_name(tmp_path, content):
    data = tmp_path / "dev.tsv"
    if content is not None:
        data.write_text(content)
    with pytest.raises(SystemExit, match=f"error: --data {data}"):
        main(["predict", "--mode", "plain", "--data", str(data)])


def test_a_bundle_is_benched_with_its_own_client(bundle):
    """The embedder that goes with a bundle's circuits is its own client/ (compile writes it); the shipped
    client is only the default for a bundle that has none."""
    from he_inhibitor.bench.target import load_target
    from he_inhibitor.embed import Embedder

    target = load_target(bundle)
    own = Embedder.load(bundle / "client")
    np.testing.assert_array_equal(target.embedder.word, own.word)
    np.testing.assert_array_equal(target.embedder.pos, own.pos)
