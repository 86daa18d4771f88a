"""SST-2 loading: the local TSVs are read exactly, and malformed files are refused loudly.

A silently skipped or mislabelled row would bias every accuracy in the
project, so each kind of damage must raise an error naming the file and line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from he_inhibitor import data
from he_inhibitor.data import default_data_dir, load_sst2, load_sst2_tsv


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_unquoted_fields(tmp_path: Path) -> None:
    # Bare quotes must stay literal (QUOTE_NONE); a blank trailing line is ignored.
    f = write(tmp_path / "x.tsv", 'sentence\tlabel\n"a" quoted start \t1\nit \'s bad\t0\n\n')
    assert load_sst2_tsv(f) == (['"a" quoted start ', "it 's bad"], [1, 0])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "header"),
        ("text\tlabel\nfine\t1\n", 1, "header"),
        ("fine\t1\n", 1, "header"),
        ("sentence\tlabel\nfine\t1\nbad\t2\n", 3, "label must be 0 or 1"),
        ("sentence\tlabel\nbad\tpositive\n", 2, "label must be 0 or 1"),
        ("sentence\tlabel\nno label here\n", 2, "expected 2 tab-separated columns"),
        ("sentence\tlabel\ntoo\tmany\t1\n", 2, "expected 2 tab-separated columns"),
    ],
)
def test_malformed_tsv_refused(tmp_path: Path, text: str, line: int, message: str) -> None:
    f = write(tmp_path / "bad.tsv", text)
    with pytest.raises(ValueError, match=message) as err:
        load_sst2_tsv(f)
    assert f"{f}, line {line}:" in str(err.value)


def test_load_sst2_reads_the_split_from_data_dir(tmp_path: Path) -> None:
    write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\nbad\t0\n")
    assert load_sst2(tmp_path, "train") == (["good"], [1])
    assert load_sst2(tmp_path, "dev") == (["bad"], [0])
    with pytest.raises(ValueError, match="unknown SST-2 split"):
        load_sst2(tmp_path, "test")


def test_env_var_overrides_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    write(tmp_path / "dev.tsv", "sentence\tlabel\nok\t1\n")
    assert default_data_dir() == tmp_path
    assert load_sst2(split="dev") == (["ok"], [1])


def test_fallback_without_datasets_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "default_data_dir", lambda: None)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ModuleNotFoundError, match="--data-dir"):
        load_sst2(split="dev")


def test_data_module_does_not_import_torch() -> None:
    # The client and `he-inhibitor eval` read TSVs without the training stack.
    code = "import sys, he_inhibitor.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_shared_sst2_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    root = default_data_dir()
    if root is None:
        pytest.skip("../shared/data/sst2 not found beside the repository")
    train_x, train_y = load_sst2(root, "train")
    dev_x, dev_y = load_sst2(root, "dev")
    # GLUE SST-2: 67,349 train and 872 validation rows; 444 positive in dev.
    assert (len(train_x), len(train_y), len(dev_x), sum(dev_y)) == (67349, 67349, 872, 444)
    assert set(train_y) == {0, 1}
