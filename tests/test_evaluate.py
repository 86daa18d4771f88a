"""`he-inhibitor eval`: accuracy of a saved student, and the sentences that leave an interval."""

import json

import pytest

torch = pytest.importorskip("torch")

from he_inhibitor.cli import main  # noqa: E402
from he_inhibitor.model.student import load_student, save_student  # noqa: E402
from he_inhibitor.model.toy import toy_student  # noqa: E402


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
