"""`he-inhibitor bench` on tiny random students (inhibitor vs dot-product), N = 8192, buckets 8 and 16."""

import json

import pytest

from he_inhibitor.cli import main
from he_inhibitor.model.toy import toy_student

KEYS = ("median_seconds", "p95_seconds", "floor_seconds", "eval_key_bytes", "query_bytes", "accuracy",
        "agreement", "depth")


def test_bench_compares_inhibitor_and_dot(tmp_path, capsys):
    inh, dot = toy_student(tmp_path / "inh", "inhibitor"), toy_student(tmp_path / "dot", "dot")
    data = tmp_path / "dev.tsv"
    # 5, 4, 5, 14 and 20 tokens with [CLS]/[SEP]: buckets 8, 8, 8, 16, and 16 truncated
    data.write_text("sentence\tlabel\na good movie\t1\nnot fun\t0\nvery dull plot\t0\n"
                    "a great great great film not awful not bad very very fun\t1\n"
                    "a great great great film not awful not bad very very fun not dull not bad plot film\t1\n")
    out = tmp_path / "bench.json"
    args = ["bench", "--circuit", str(inh), "--compare", str(dot), "--data", str(data), "--buckets", "8", "16",
            "--n", "8192", "--reps", "1", "--log", str(tmp_path / "runs"), "--json", str(out),
            "--lanes", "1"]  # one process: Ray lanes have tests of their own (test_ray_lanes.py)
    assert main(args + ["--encrypted-sentences", "3", "--plot", str(tmp_path / "plots")]) == 0
    res = json.loads(out.read_text())
    for r in (res, res["compare"]):
        assert all(r[k] is not None for k in KEYS)
        assert r["sentences"] == 5 and r["truncated"] == 1 and r["encrypted_sentences"] == 3
        assert {T: b["sentences"] for T, b in r["buckets"].items()} == {"8": 3, "16": 2}
        assert sum(b["encrypted_sentences"] for b in r["buckets"].values()) == 3
        assert r["agreement"] == 1.0 and r["max_error_over_bound"] <= 1.0 and r["levels_as_predicted"] is True
        assert r["totals"]["levels"] == r["buckets"]["8"]["depth"] and r["floor_seconds"] > 0
        assert sum(s["rotations"] for s in r["stages"].values()) == r["totals"]["rotations"] > 0
        # one key set for both buckets (same parameters), holding both circuits' steps (and every plan's
        # on the bundled lanes: one lane needs no more than those)
        assert set(r["rotation_steps"]) >= set(r["buckets"]["8"]["rotation_steps"]) | set(r["buckets"]["16"]["rotation_steps"])
    logged = (tmp_path / "runs" / "inh.jsonl").read_text().splitlines()
    assert len(logged) == 3
    # attention depth 2 + a + r (inhibitor) against 4 + r (dot): equal for the degree-2 |x| here (a = 2)
    assert res["depth"] == res["compare"]["depth"]
    printed = capsys.readouterr().out
    assert "measured / floor" in printed and "layer0.attn" in printed
    assert (tmp_path / "plots" / "latency_per_stage.png").stat().st_size > 0

    # a rerun with more sentences resumes from the logs: the three logged runs are not repeated
    assert main(args + ["--encrypted-sentences", "4"]) == 0
    assert json.loads(out.read_text())["encrypted_sentences"] == 4
    assert (tmp_path / "runs" / "inh.jsonl").read_text().splitlines()[:3] == logged
    assert len((tmp_path / "runs" / "inh.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "plots" / "error_by_bound.png").stat().st_size > 0

    # a resumed run's bound is the current simulator's, not the one its log recorded
    bounds = {r["index"]: r["predicted_error_bound"] for r in json.loads(out.read_text())["runs"]}
    log = tmp_path / "runs" / "inh.jsonl"
    stale = [{**json.loads(line), "predicted_error_bound": 1e9} for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps(r) + "\n" for r in stale))
    assert main(args + ["--encrypted-sentences", "4"]) == 0
    assert {r["index"]: r["predicted_error_bound"] for r in json.loads(out.read_text())["runs"]} == bounds


def test_bench_refuses_a_log_of_another_circuit(tmp_path):
    inh, other = toy_student(tmp_path / "inh", "inhibitor"), toy_student(tmp_path / "other", "inhibitor", seed=1)
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na good movie\t1\nnot fun\t0\n")
    logs = tmp_path / "runs"
    common = ["--data", str(data), "--buckets", "8", "--encrypted-sentences", "1", "--n", "8192", "--reps", "1",
              "--log", str(logs), "--lanes", "1"]
    assert main(["bench", "--circuit", str(inh)] + common) == 0
    (logs / "other.jsonl").write_text((logs / "inh.jsonl").read_text())
    with pytest.raises(SystemExit, match="different circuit"):
        main(["bench", "--circuit", str(other)] + common)
    (logs / "other.jsonl").write_text("{not json\n")
    with pytest.raises(SystemExit, match="not a bench run record"):
        main(["bench", "--circuit", str(other)] + common)
