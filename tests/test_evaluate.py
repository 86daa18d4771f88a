"""`he-inhibitor eval`: accuracy of a saved student, and the sentences that leave an interval."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_inhibitor.cli import main
from he_inhibitor.evaluate import by_length, is_teacher
from he_inhibitor.model.student import load_student, save_student
from he_inhibitor.model.toy import toy_student

TEACHER = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-sst2"


def test_eval_counts_sentences_beyond_a_bound(tmp_path, capsys):
    model_dir = toy_student(tmp_path / "toy")
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na good movie\t1\nnot fun\t0\nvery dull plot\t0\n")
    args = ["eval", "--model", str(model_dir), "--data", str(data), "--ranges", "--json"]
    assert main(args) == 0
    wide = json.loads(capsys.readouterr().out)
    assert wide["n"] == 3 and wide["form"] == "poly" and 0 <= wide["accuracy"] <= 1
    # the same weights with every bound at a tenth of the largest input: every sentence leaves
    student = load_student(model_dir)
    for _, m in student.nonlinearities():
        m.bound.fill_(0.1 * float(m.bound) * wide["max_input_ratio"])
    save_student(student, model_dir, half=False)
    assert main(args) == 0
    tight = json.loads(capsys.readouterr().out)
    assert tight["beyond_bound"] == 3 and tight["max_input_ratio"] > 1
    assert (wide["beyond_bound"] > 0) == (wide["max_input_ratio"] > 1)


def test_eval_truncates_a_long_sentence_and_counts_it(tmp_path, capsys):
    """A sentence longer than the student's positions is cut to them and counted; it never stops eval."""
    model_dir = toy_student(tmp_path / "toy")
    max_len = load_student(model_dir).cfg.max_len
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na good movie\t1\n" + "very " * (max_len + 5) + "dull plot\t0\n")
    for extra in ([], ["--ranges"]):
        assert main(["eval", "--model", str(model_dir), "--data", str(data), "--json", *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["n"] == 2 and out["truncated"] == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 80)), min_size=1, max_size=60),
       st.lists(st.integers(1, 90), min_size=1, max_size=5, unique=True))
def test_length_bins_partition_the_sentences(rows, edges):
    correct, lengths = np.array([c for c, _ in rows]), np.array([n for _, n in rows])
    bins = by_length(correct, lengths, sorted(edges))
    assert len(bins) == len(edges) + 1 and sum(b["n"] for b in bins) == len(rows)
    hits = sum(b["accuracy"] * b["n"] for b in bins if b["n"])
    assert hits == pytest.approx(correct.sum())
    assert all((b["accuracy"] is None) == (b["n"] == 0) for b in bins)


def test_eval_by_length_and_bad_edges(tmp_path, capsys):
    model_dir = toy_student(tmp_path / "toy")
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na good movie\t1\nnot fun\t0\nvery dull plot , and far too long\t0\n")
    assert main(["eval", "--model", str(model_dir), "--data", str(data), "--by-length", "4,6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["tokens"] for b in out["by_length"]] == ["0-3", "4-5", ">=6"] and sum(b["n"] for b in out["by_length"]) == 3
    for bad in ("6,4", "a,b", "0,3"):
        with pytest.raises(SystemExit):
            main(["eval", "--model", str(model_dir), "--data", str(data), "--by-length", bad])


@pytest.mark.skipif(not TEACHER.is_dir(), reason="shared teacher absent")
def test_eval_the_teacher_for_reference(tmp_path, capsys):
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na gorgeous , witty , seductive movie .\t1\na dull , lifeless mess .\t0\n")
    assert main(["eval", "--model", str(TEACHER), "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"accuracy": 1.0, "n": 2, "form": "teacher", "truncated": 0}  # none longer than its positions
    with pytest.raises(SystemExit, match="needs a student"):
        main(["eval", "--model", str(TEACHER), "--data", str(data), "--ranges"])


@pytest.mark.parametrize("model_type, teacher", [("bert", True), ("mpnet", True), ("inhibitor", False), (None, False)])
def test_a_teacher_is_told_from_a_student_by_its_config(tmp_path, model_type, teacher):
    """Both teacher bases (MiniLM's BERT, MPNet) are evaluated as teachers; anything else is read as a student."""
    (tmp_path / "config.json").write_text(json.dumps({} if model_type is None else {"model_type": model_type}))
    assert is_teacher(tmp_path) is teacher
    assert is_teacher(tmp_path / "missing") is False
