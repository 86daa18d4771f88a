"""`he-inhibitor bench` on tiny random students (inhibitor vs dot-product), N = 8192, K = 1."""

import json

import pytest

torch = pytest.importorskip("torch")

from he_inhibitor.cli import main  # noqa: E402
from he_inhibitor.model.toy import toy_student  # noqa: E402

KEYS = ("median_seconds", "p95_seconds", "floor_seconds", "eval_key_bytes", "query_bytes", "accuracy",
        "agreement", "depth")


def test_bench_compares_inhibitor_and_dot(tmp_path, capsys):
    inh, dot = toy_student(tmp_path / "inh", "inhibitor"), toy_student(tmp_path / "dot", "dot")
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na good movie\t1\nnot fun\t0\nvery dull plot\t0\n"
                    "a great great great film not awful not bad very very fun\t1\n")
    out = tmp_path / "bench.json"
    assert main(["bench", "--circuit", str(inh), "--compare", str(dot), "--data", str(data),
                 "--latency-sentences", "1", "--T", "8", "--n", "8192", "--reps", "1",
                 "--json", str(out), "--plot", str(tmp_path / "plots")]) == 0
    res = json.loads(out.read_text())
    for r in (res, res["compare"]):
        assert all(r[k] is not None for k in KEYS)
        assert r["sentences"] == 4 and r["truncated"] == 1 and r["latency_sentences"] == 1
        assert r["agreement"] == 1.0 and r["max_abs_error"] <= r["predicted_error_bound"]
        assert r["totals"]["levels"] == r["depth"] and r["floor_seconds"] > 0
        assert sum(s["rotations"] for s in r["stages"].values()) == r["totals"]["rotations"] > 0
    # attention depth 2 + a + r (inhibitor) against 4 + r (dot): equal for the degree-2 |x| here (a = 2)
    assert res["depth"] == res["compare"]["depth"]
    printed = capsys.readouterr().out
    assert "measured / floor" in printed and "layer0.attn" in printed
    assert (tmp_path / "plots" / "latency_per_stage.png").stat().st_size > 0
